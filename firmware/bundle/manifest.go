package bundle

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"
)

// Limits on what a bundle may describe. They bound memory and disk a
// hostile or broken bundle can make a reader spend before it is refused.
const (
	MaxManifestBytes = 1 << 20
	MaxFiles         = 1024
	MaxFileBytes     = 1 << 30 // 1 GiB per file
	MaxTotalBytes    = 4 << 30 // 4 GiB per bundle
	MaxPathBytes     = 255
	maxNameBytes     = 64
)

// ManifestFormat is the manifest layout version this package reads and writes.
const ManifestFormat = 1

// Manifest says what a bundle is and what it contains. Its canonical
// encoding is encoding/json's Marshal of this struct (field order fixed by
// the struct, no insignificant whitespace); Decode refuses any other
// spelling so that one manifest has exactly one signed byte string.
type Manifest struct {
	Format  int    `json:"format"`
	Product string `json:"product"`
	// Target is the hardware/OS target the bundle is built for, e.g. "linux-amd64".
	Target  string `json:"target"`
	Version string `json:"version"`
	// MinVersion is the oldest installed version this bundle may replace
	// (e.g. because its store migrations need an intermediate release).
	MinVersion string `json:"min_version,omitempty"`
	// AllowRollback is the release key's signed permission to install this
	// bundle below the anti-rollback floor, at or below the running version
	// or after it failed on a device (an emergency revert). It holds only on
	// the edges RollbackEdges names and until RollbackExpires (RFC 3339), so
	// a rollback bundle cannot be replayed to other edges or later.
	AllowRollback   bool     `json:"allow_rollback,omitempty"`
	RollbackEdges   []string `json:"rollback_edges,omitempty"`
	RollbackExpires string   `json:"rollback_expires,omitempty"`
	// Entry is the executable (one of Files) a supervisor starts.
	Entry   string `json:"entry"`
	Created string `json:"created"`
	Files   []File `json:"files"`
}

// File is one file of a bundle.
type File struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	Mode   uint32 `json:"mode"` // 0o644 or 0o755
	SHA256 string `json:"sha256"`
}

// TotalSize is the sum of the files' sizes.
func (m Manifest) TotalSize() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Encode returns the canonical bytes of m after validating it.
func (m Manifest) Encode() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// DecodeManifest parses canonical manifest bytes strictly: unknown fields,
// a non-canonical spelling, trailing data and invalid values are errors.
func DecodeManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) == 0 || len(b) > MaxManifestBytes {
		return m, fmt.Errorf("%w: manifest is %d bytes (1-%d allowed)", ErrMalformed, len(b), MaxManifestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("%w: manifest is not valid JSON for format %d: %v", ErrMalformed, ManifestFormat, err)
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	again, err := json.Marshal(m)
	if err != nil || !bytes.Equal(again, b) {
		return Manifest{}, fmt.Errorf("%w: manifest is not in canonical form (rebuild it with edgefw build)", ErrMalformed)
	}
	return m, nil
}

// Validate checks every field and the file list.
func (m Manifest) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: manifest: %s", ErrMalformed, fmt.Sprintf(format, a...))
	}
	if m.Format != ManifestFormat {
		return bad("format %d is not supported (this build reads format %d)", m.Format, ManifestFormat)
	}
	if !validName(m.Product) {
		return bad("product %q must be 1-%d characters of a-z 0-9 . _ -", m.Product, maxNameBytes)
	}
	if !validName(m.Target) {
		return bad("target %q must be 1-%d characters of a-z 0-9 . _ -", m.Target, maxNameBytes)
	}
	v, err := ParseVersion(m.Version)
	if err != nil {
		return bad("%v", err)
	}
	if m.MinVersion != "" {
		mv, err := ParseVersion(m.MinVersion)
		if err != nil {
			return bad("min_version: %v", err)
		}
		if mv.Compare(v) > 0 {
			return bad("min_version %s is newer than version %s", m.MinVersion, m.Version)
		}
	}
	if _, err := time.Parse(time.RFC3339, m.Created); err != nil {
		return bad("created %q is not an RFC 3339 time", m.Created)
	}
	if m.AllowRollback || len(m.RollbackEdges) > 0 || m.RollbackExpires != "" {
		if !m.AllowRollback || len(m.RollbackEdges) == 0 || len(m.RollbackEdges) > MaxRollbackEdges {
			return bad("a rollback permission names 1-%d edges (rollback_edges) and expires (rollback_expires)", MaxRollbackEdges)
		}
		for _, e := range m.RollbackEdges {
			if e == "" || len(e) > 128 {
				return bad("rollback edge id %q must be 1-128 characters", e)
			}
		}
		if _, err := time.Parse(time.RFC3339, m.RollbackExpires); err != nil {
			return bad("rollback_expires %q is not an RFC 3339 time", m.RollbackExpires)
		}
	}
	if len(m.Files) == 0 || len(m.Files) > MaxFiles {
		return bad("has %d files (1-%d allowed)", len(m.Files), MaxFiles)
	}
	seen := make(map[string]bool, len(m.Files))
	var total int64
	entryOK := false
	for _, f := range m.Files {
		if !ValidPath(f.Path) {
			return bad("file path %q is not a clean relative path of a-z A-Z 0-9 . _ - /", f.Path)
		}
		if seen[f.Path] {
			return bad("file %q is listed twice", f.Path)
		}
		seen[f.Path] = true
		if f.Size < 0 || f.Size > MaxFileBytes {
			return bad("file %q has size %d (0-%d allowed)", f.Path, f.Size, int64(MaxFileBytes))
		}
		total += f.Size
		if total > MaxTotalBytes {
			return bad("files add up to more than %d bytes", int64(MaxTotalBytes))
		}
		if f.Mode != 0o644 && f.Mode != 0o755 {
			return bad("file %q has mode %o (0644 or 0755 allowed)", f.Path, f.Mode)
		}
		if len(f.SHA256) != 64 || strings.ToLower(f.SHA256) != f.SHA256 {
			return bad("file %q: sha256 must be 64 lower-case hex digits", f.Path)
		}
		if _, err := hex.DecodeString(f.SHA256); err != nil {
			return bad("file %q: sha256 is not hex", f.Path)
		}
		if f.Path == m.Entry {
			if f.Mode != 0o755 {
				return bad("entry %q must have mode 0755", f.Path)
			}
			entryOK = true
		}
	}
	// A path may not be both a file and a directory of another file.
	for p := range seen {
		for d := p; ; {
			i := strings.LastIndexByte(d, '/')
			if i < 0 {
				break
			}
			d = d[:i]
			if seen[d] {
				return bad("%q is both a file and the directory of %q", d, p)
			}
		}
	}
	if !entryOK {
		return bad("entry %q is not one of the files", m.Entry)
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > maxNameBytes {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidPath reports whether p is a path a bundle may carry: relative,
// clean, no "." or ".." parts, no hidden names, a conservative alphabet.
func ValidPath(p string) bool {
	if p == "" || len(p) > MaxPathBytes || !fs.ValidPath(p) || p == "." {
		return false
	}
	for _, part := range strings.Split(p, "/") {
		if part == "" || part[0] == '.' {
			return false
		}
	}
	for _, c := range []byte(p) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/') {
			return false
		}
	}
	return true
}

// Errors a reader returns, for errors.Is; messages wrap them with details.
var (
	ErrMalformed    = errors.New("malformed bundle")
	ErrUnsigned     = errors.New("bundle is not signed")
	ErrUntrusted    = errors.New("bundle is not signed by a trusted release key")
	ErrBadSignature = errors.New("bundle signature does not match its manifest")
	ErrTampered     = errors.New("bundle file does not match its signed manifest")
	ErrTruncated    = errors.New("bundle is truncated")
	ErrWrongProduct = errors.New("bundle is for another product")
	ErrWrongTarget  = errors.New("bundle is for another target")
	ErrRollback     = errors.New("bundle is older than the anti-rollback floor")
	ErrNeedsNewer   = errors.New("installed version is too old for this bundle")
	ErrNotNewer     = errors.New("bundle is not newer than the running version")
	ErrFailedHere   = errors.New("bundle's version already failed on this device")
)
