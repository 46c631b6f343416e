package bundle

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/campusedge/campusedge/edge/fsutil"
)

// Magic starts every bundle file (format 1).
const Magic = "CEFWBND1"

const sigBlockSize = KeyIDSize + ed25519.SignatureSize

// signContext separates bundle signatures from anything else a release key
// might ever sign.
const signContext = "campusedge firmware manifest v1\x00"

// SignedMessage is what a release key signs: a context string and the
// canonical manifest bytes.
func SignedMessage(manifest []byte) []byte {
	return append([]byte(signContext), manifest...)
}

// Build describes a bundle to make from a directory.
type Build struct {
	Dir           string
	Product       string
	Target        string
	Version       string
	MinVersion    string
	AllowRollback bool
	// RollbackEdges and RollbackExpires bound AllowRollback: the edges it
	// is for and until when (both required with it).
	RollbackEdges   []string
	RollbackExpires time.Time
	Entry           string
	Created         time.Time
}

// MaxRollbackEdges bounds the edges one rollback bundle names.
const MaxRollbackEdges = 1000

// Create makes a signed bundle at out from every regular file under
// b.Dir. It writes a temporary file and renames it, so out is either the
// old file or a complete new bundle. A file that changes while the bundle is
// built is an error, not a bundle with a wrong hash.
func Create(b Build, key ed25519.PrivateKey, out string) (Manifest, error) {
	m, err := scan(b)
	if err != nil {
		return Manifest{}, err
	}
	mb, err := m.Encode()
	if err != nil {
		return Manifest{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".bundle-*")
	if err != nil {
		return Manifest{}, fmt.Errorf("create bundle: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := writeBundle(tmp, b.Dir, m, mb, key); err != nil {
		tmp.Close()
		return Manifest{}, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return Manifest{}, fmt.Errorf("create bundle: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Manifest{}, fmt.Errorf("create bundle: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return Manifest{}, fmt.Errorf("create bundle: %w", err)
	}
	if err := fsutil.RenameDurable(tmp.Name(), out); err != nil {
		return Manifest{}, fmt.Errorf("create bundle: %w", err)
	}
	return m, nil
}

func scan(b Build) (Manifest, error) {
	created := b.Created
	if created.IsZero() {
		created = time.Now()
	}
	m := Manifest{Format: ManifestFormat, Product: b.Product, Target: b.Target, Version: b.Version,
		MinVersion: b.MinVersion, AllowRollback: b.AllowRollback, RollbackEdges: b.RollbackEdges, Entry: b.Entry,
		Created: created.UTC().Truncate(time.Second).Format(time.RFC3339)}
	if !b.RollbackExpires.IsZero() {
		m.RollbackExpires = b.RollbackExpires.UTC().Truncate(time.Second).Format(time.RFC3339)
	}
	err := filepath.WalkDir(b.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(b.Dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file (symlinks and devices cannot go in a bundle)", rel)
		}
		if !ValidPath(rel) {
			return fmt.Errorf("%q cannot go in a bundle: use a-z A-Z 0-9 . _ - / and no hidden names", rel)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		mode := uint32(0o644)
		if fi.Mode()&0o111 != 0 {
			mode = 0o755
		}
		sum, n, err := hashFile(p)
		if err != nil {
			return err
		}
		m.Files = append(m.Files, File{Path: rel, Size: n, Mode: mode, SHA256: sum})
		return nil
	})
	if err != nil {
		return Manifest{}, fmt.Errorf("read %s: %w", b.Dir, err)
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	return m, nil
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func writeBundle(w io.Writer, dir string, m Manifest, mb []byte, key ed25519.PrivateKey) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(mb)))
	bw.WriteString(Magic)
	bw.Write(hdr[:])
	bw.Write(mb)
	if key == nil {
		bw.Write([]byte{0, 0}) // unsigned: only useful to test that readers refuse it
	} else {
		bw.Write([]byte{0, sigBlockSize})
		id := IDOf(key.Public().(ed25519.PublicKey))
		bw.Write(id[:])
		bw.Write(ed25519.Sign(key, SignedMessage(mb)))
	}
	for _, f := range m.Files {
		if err := copyChecked(bw, filepath.Join(dir, filepath.FromSlash(f.Path)), f); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return nil
}

func copyChecked(w io.Writer, p string, f File) error {
	in, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("read %s: %w", f.Path, err)
	}
	defer in.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(in, f.Size+1))
	if err != nil {
		return fmt.Errorf("copy %s: %w", f.Path, err)
	}
	if n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
		return fmt.Errorf("%s changed while the bundle was being built; build again", f.Path)
	}
	return nil
}

// Policy is what a device accepts. Zero fields are not checked.
type Policy struct {
	Product string
	Target  string
	// Installed is the version running now: the bundle must be newer, and
	// its MinVersion must not be.
	Installed string
	// Floor is the anti-rollback floor: the highest version ever committed
	// on this device. An older bundle is refused.
	Floor string
	// Failed are versions that failed their health check here: refused.
	Failed []string
	// Edge is this device's id and Now the time: a signed rollback
	// (AllowRollback) that names Edge and has not expired at Now lifts the
	// three refusals above, and nothing else does.
	Edge string
	Now  time.Time
}

// rollbackFor reports whether m is a signed rollback for p's device now.
func (p Policy) rollbackFor(m Manifest) bool {
	if !m.AllowRollback || p.Edge == "" {
		return false
	}
	exp, err := time.Parse(time.RFC3339, m.RollbackExpires)
	now := p.Now
	if now.IsZero() {
		now = time.Now()
	}
	if err != nil || !now.Before(exp) {
		return false
	}
	for _, e := range m.RollbackEdges {
		if e == p.Edge {
			return true
		}
	}
	return false
}

// Check applies p to a manifest whose signature was already verified.
func (p Policy) Check(m Manifest) error {
	if p.Product != "" && m.Product != p.Product {
		return fmt.Errorf("%w: it is for %q, this device runs %q", ErrWrongProduct, m.Product, p.Product)
	}
	if p.Target != "" && m.Target != p.Target {
		return fmt.Errorf("%w: it is for target %q, this device is %q", ErrWrongTarget, m.Target, p.Target)
	}
	if p.Installed != "" && m.MinVersion != "" {
		c, err := CompareStrings(p.Installed, m.MinVersion)
		if err != nil {
			return fmt.Errorf("installed version: %w", err)
		}
		if c < 0 {
			return fmt.Errorf("%w: %s replaces only %s or newer and %s is installed; install an intermediate release first", ErrNeedsNewer, m.Version, m.MinVersion, p.Installed)
		}
	}
	if p.rollbackFor(m) {
		return nil
	}
	hint := "; a downgrade needs a bundle built with -allow-rollback naming this device (-rollback-edges) that has not expired"
	for _, f := range p.Failed {
		if f == m.Version {
			return fmt.Errorf("%w: %s failed its health check here before%s", ErrFailedHere, m.Version, hint)
		}
	}
	if p.Floor != "" {
		c, err := CompareStrings(m.Version, p.Floor)
		if err != nil {
			return fmt.Errorf("anti-rollback floor: %w", err)
		}
		if c < 0 {
			return fmt.Errorf("%w: %s is older than %s, the newest version this device has run%s", ErrRollback, m.Version, p.Floor, hint)
		}
	}
	if p.Installed != "" {
		c, err := CompareStrings(m.Version, p.Installed)
		if err != nil {
			return fmt.Errorf("installed version: %w", err)
		}
		if c <= 0 {
			return fmt.Errorf("%w: %s is not newer than %s, which runs now%s", ErrNotNewer, m.Version, p.Installed, hint)
		}
	}
	return nil
}

// Reader streams a bundle whose header (magic, manifest, signature) has
// been verified. Files are read in order with Next; each file's hash is
// checked when its last byte has been read.
type Reader struct {
	m        Manifest
	raw      []byte
	sig      []byte
	keyID    KeyID
	r        io.Reader
	next     int
	cur      *fileReader
	finished bool
}

// Open reads and verifies the header of a bundle from r: magic, manifest
// (strictly decoded), signature by a key in keys, and policy. Nothing is
// trusted before the signature is checked except the bounded lengths.
func Open(r io.Reader, keys *Keyring, policy Policy) (*Reader, error) {
	var hdr [len(Magic) + 4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, readErr(err, "header")
	}
	if string(hdr[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("%w: not a CampusEdge firmware bundle (bad magic)", ErrMalformed)
	}
	n := binary.BigEndian.Uint32(hdr[len(Magic):])
	if n == 0 || n > MaxManifestBytes {
		return nil, fmt.Errorf("%w: manifest length %d (1-%d allowed)", ErrMalformed, n, MaxManifestBytes)
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, readErr(err, "manifest")
	}
	var sl [2]byte
	if _, err := io.ReadFull(r, sl[:]); err != nil {
		return nil, readErr(err, "signature length")
	}
	switch binary.BigEndian.Uint16(sl[:]) {
	case 0:
		return nil, fmt.Errorf("%w: the manifest carries no signature; sign it with edgefw build -key", ErrUnsigned)
	case sigBlockSize:
	default:
		return nil, fmt.Errorf("%w: signature block is %d bytes, want %d", ErrMalformed, binary.BigEndian.Uint16(sl[:]), sigBlockSize)
	}
	var sb [sigBlockSize]byte
	if _, err := io.ReadFull(r, sb[:]); err != nil {
		return nil, readErr(err, "signature")
	}
	var id KeyID
	copy(id[:], sb[:KeyIDSize])
	pub, ok := keys.lookup(id)
	if !ok {
		return nil, fmt.Errorf("%w: signed by key %s; trusted keys are %v", ErrUntrusted, id, keys.IDs())
	}
	if !ed25519.Verify(pub, SignedMessage(raw), sb[KeyIDSize:]) {
		return nil, fmt.Errorf("%w (key %s): the manifest was altered or signed by another key", ErrBadSignature, id)
	}
	m, err := DecodeManifest(raw)
	if err != nil {
		return nil, err
	}
	if err := policy.Check(m); err != nil {
		return nil, err
	}
	return &Reader{m: m, raw: raw, sig: bytes.Clone(sb[KeyIDSize:]), keyID: id, r: r}, nil
}

func readErr(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: it ends inside the %s (download it again)", ErrTruncated, what)
	}
	return fmt.Errorf("read bundle %s: %w", what, err)
}

// Manifest is the verified manifest.
func (b *Reader) Manifest() Manifest { return b.m }

// RawManifest is the signed manifest bytes; keep them with Signature and
// KeyID to re-verify an installed slot later.
func (b *Reader) RawManifest() []byte { return bytes.Clone(b.raw) }

// Signature is the manifest's ed25519 signature.
func (b *Reader) Signature() []byte { return bytes.Clone(b.sig) }

// KeyID names the release key that signed the bundle.
func (b *Reader) KeyID() KeyID { return b.keyID }

// Next returns the next file and a reader of exactly its bytes. The reader
// returns an error wrapping ErrTampered at its end if the bytes do not hash
// to the manifest's value, and ErrTruncated if the bundle ends early. Next
// drains what the caller left unread of the previous file (and checks it).
// After the last file it checks that nothing follows and returns io.EOF.
func (b *Reader) Next() (File, io.Reader, error) {
	if b.cur != nil {
		if _, err := io.Copy(io.Discard, b.cur); err != nil {
			return File{}, nil, err
		}
		b.cur = nil
	}
	if b.next == len(b.m.Files) {
		if !b.finished {
			var one [1]byte
			if n, _ := io.ReadFull(b.r, one[:]); n > 0 {
				return File{}, nil, fmt.Errorf("%w: data after the last file", ErrMalformed)
			}
			b.finished = true
		}
		return File{}, nil, io.EOF
	}
	f := b.m.Files[b.next]
	b.next++
	b.cur = &fileReader{f: f, r: io.LimitReader(b.r, f.Size), left: f.Size, h: sha256.New()}
	return f, b.cur, nil
}

// Verify reads every remaining file and checks it, keeping nothing.
func (b *Reader) Verify() error {
	for {
		_, _, err := b.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

type fileReader struct {
	f    File
	r    io.Reader
	left int64
	h    hash.Hash
	err  error
}

func (fr *fileReader) Read(p []byte) (int, error) {
	if fr.err != nil {
		return 0, fr.err
	}
	n, err := fr.r.Read(p)
	fr.h.Write(p[:n])
	fr.left -= int64(n)
	if err == io.EOF || (err == nil && fr.left == 0) {
		switch {
		case fr.left > 0:
			fr.err = fmt.Errorf("%w: it ends inside %s (%d bytes missing; download it again)", ErrTruncated, fr.f.Path, fr.left)
		case hex.EncodeToString(fr.h.Sum(nil)) != fr.f.SHA256:
			fr.err = fmt.Errorf("%w: %s has SHA-256 %x, the manifest says %s", ErrTampered, fr.f.Path, fr.h.Sum(nil), fr.f.SHA256)
		default:
			fr.err = io.EOF
		}
		if fr.err != io.EOF {
			return n, fr.err
		}
		return n, nil
	}
	if err != nil {
		fr.err = fmt.Errorf("read %s: %w", fr.f.Path, err)
		return n, fr.err
	}
	return n, nil
}

// VerifyManifest checks a stored signed manifest again (e.g. an installed
// slot at every start) and returns it decoded.
func VerifyManifest(raw, sig []byte, keys *Keyring) (Manifest, KeyID, error) {
	for _, pub := range keys.keys {
		if ed25519.Verify(pub, SignedMessage(raw), sig) {
			m, err := DecodeManifest(raw)
			return m, IDOf(pub), err
		}
	}
	return Manifest{}, KeyID{}, fmt.Errorf("%w: no trusted key verifies the stored manifest", ErrUntrusted)
}
