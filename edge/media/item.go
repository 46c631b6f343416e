// Package media is what a micro-lesson is to both ends of the catalogue:
// the item record the hub serves and the edge keeps, the rules both enforce
// on it, the strict decoder the edge runs on the hub's pages, the blob
// layout (content-addressed by SHA-256) and how an item's bytes are served
// to browsers. The hub's store and handlers (sync/catalog) and the edge's
// cache (edge/cache) both build on it, so the two sides cannot drift apart.
package media

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
)

// Item is one catalogue entry as the hub serves it.
type Item struct {
	ID      string `json:"id"`
	Title   string `json:"title"`
	Subject string `json:"subject,omitempty"`
	Grade   string `json:"grade,omitempty"`
	// DurationSeconds is 0 when unknown.
	DurationSeconds int    `json:"duration_seconds,omitempty"`
	MIME            string `json:"mime"`
	Size            int64  `json:"size"`
	// SHA256 is the lowercase hex SHA-256 of the content; it is the blob's
	// address and, quoted, its strong ETag.
	SHA256 string `json:"sha256"`
	// Seq is the hub change sequence at which this version was recorded.
	Seq uint64 `json:"seq"`
}

// Changes is the body of GET /api/v1/catalog: the items changed after the
// request's cursor, oldest change first, and the cursor to ask with next.
type Changes struct {
	Items []Item `json:"items"`
	Next  string `json:"next"`
	// More is true when the page was cut at the limit.
	More bool `json:"more"`
}

// Limits that both the hub and the edge enforce.
const (
	MaxIDLen       = 64
	MaxTitleLen    = 512
	MaxFieldLen    = 128
	MaxPageItems   = 1000
	MaxChangeBytes = 4 << 20 // a full page of items is far below this
	// MaxItemSize bounds one resource (a long lesson video is a few GB).
	MaxItemSize = 64 << 30
)

// ErrInvalid marks input that breaks the rules above.
var ErrInvalid = errors.New("invalid")

// ValidID reports whether id is a catalogue id: 1-64 characters of
// [a-z0-9._-], starting with a letter or digit. That excludes "/", "\",
// NUL, "..", absolute paths and anything else that could escape a directory
// when an id is used in a file name.
func ValidID(id string) bool {
	if id == "" || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return !strings.Contains(id, "..")
}

// ValidSHA256 reports whether s is 64 lowercase hex digits.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Validate checks an item received from (or about to be served by) a hub.
func (it Item) Validate() error {
	switch {
	case !ValidID(it.ID):
		return fmt.Errorf("%w: item id %q (want 1-64 of [a-z0-9._-])", ErrInvalid, it.ID)
	case !ValidSHA256(it.SHA256):
		return fmt.Errorf("%w: item %s: sha256 %q is not 64 lowercase hex digits", ErrInvalid, it.ID, it.SHA256)
	case it.Size < 0 || it.Size > MaxItemSize:
		return fmt.Errorf("%w: item %s: size %d out of range", ErrInvalid, it.ID, it.Size)
	case len(it.Title) > MaxTitleLen:
		return fmt.Errorf("%w: item %s: title longer than %d bytes", ErrInvalid, it.ID, MaxTitleLen)
	case len(it.Subject) > MaxFieldLen || len(it.Grade) > MaxFieldLen || len(it.MIME) > MaxFieldLen:
		return fmt.Errorf("%w: item %s: subject, grade or mime longer than %d bytes", ErrInvalid, it.ID, MaxFieldLen)
	case it.MIME == "" || strings.ContainsAny(it.MIME, "\r\n\x00"):
		return fmt.Errorf("%w: item %s: bad mime type %q", ErrInvalid, it.ID, it.MIME)
	case it.DurationSeconds < 0:
		return fmt.Errorf("%w: item %s: negative duration", ErrInvalid, it.ID)
	}
	return nil
}

// ParseCursor parses a cursor; "" is the start.
func ParseCursor(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: cursor %q is not a sequence number", ErrInvalid, s)
	}
	return n, nil
}

// DecodeChanges strictly decodes a hub's catalogue page read from r: at most
// MaxChangeBytes, no unknown fields, at most MaxPageItems items, every item
// valid, no trailing data, and a Next cursor not behind since. It is what the
// edge runs on bytes from the WAN.
func DecodeChanges(r io.Reader, since uint64) (Changes, error) {
	var c Changes
	lr := &io.LimitedReader{R: r, N: MaxChangeBytes + 1}
	dec := json.NewDecoder(lr)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		if lr.N <= 0 {
			return Changes{}, fmt.Errorf("%w: catalogue page larger than %d bytes", ErrInvalid, MaxChangeBytes)
		}
		return Changes{}, fmt.Errorf("%w: catalogue page: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Changes{}, fmt.Errorf("%w: catalogue page has data after the JSON object", ErrInvalid)
	}
	if len(c.Items) > MaxPageItems {
		return Changes{}, fmt.Errorf("%w: catalogue page has %d items (max %d)", ErrInvalid, len(c.Items), MaxPageItems)
	}
	next, err := ParseCursor(c.Next)
	if err != nil {
		return Changes{}, err
	}
	if next < since {
		return Changes{}, fmt.Errorf("%w: hub cursor went backwards (%d < %d)", ErrInvalid, next, since)
	}
	for _, it := range c.Items {
		if err := it.Validate(); err != nil {
			return Changes{}, err
		}
		if it.Seq <= since || it.Seq > next {
			return Changes{}, fmt.Errorf("%w: item %s has seq %d outside (%d, %d]", ErrInvalid, it.ID, it.Seq, since, next)
		}
	}
	return c, nil
}

// BlobPath is where the blob with hex SHA-256 sum lives under root:
// root/sha256/ab/abcdef…. sum must be valid (ValidSHA256).
func BlobPath(root, sum string) string {
	return filepath.Join(root, "sha256", sum[:2], sum)
}

// ETag is the strong entity tag of content with hex SHA-256 sum.
func ETag(sum string) string { return `"` + sum + `"` }
