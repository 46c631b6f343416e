// Package wire is the sync protocol between a school edge and cityhub: the
// record and batch formats, their size limits, the gzip batch codec and the
// signed-request scheme. Both sides import it, so the limits and the bytes
// that are signed can never drift apart.
package wire

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Limits. A batch is bounded before and after decompression, so a hostile
// or broken peer cannot make the other side allocate without bound.
const (
	MaxKindLen       = 64
	MaxIDLen         = 64
	MaxPayloadBytes  = 64 << 10 // one record's JSON payload
	MaxBatchRecords  = 5000     // records per batch
	MaxBatchRawBytes = 4 << 20  // decompressed batch JSON
	MaxBatchBytes    = 2 << 20  // compressed batch on the wire
	MaxSchoolLen     = 32
	// MaxAhead is how far beyond its acknowledged sequence the hub accepts
	// a batch: an edge may have a few batches in flight at once, and they
	// can arrive out of order. Further ahead is a real gap (data lost).
	MaxAhead = 4 * MaxBatchRecords
)

// Record is one outbox entry as it travels: Seq is the edge's sequence
// number (1, 2, 3 … with no gaps), ID a stable random id, At the edge's wall
// clock in Unix milliseconds (informative only: merges never rely on it).
type Record struct {
	Seq     uint64          `json:"seq"`
	ID      string          `json:"id"`
	Kind    string          `json:"kind"`
	At      int64           `json:"at"`
	School  string          `json:"school,omitempty"`
	Payload json.RawMessage `json:"payload"`
}

// Batch is what the edge posts: records with consecutive Seq, in order.
type Batch struct {
	Edge    string   `json:"edge"`
	School  string   `json:"school"`
	Records []Record `json:"records"`
}

// Ack is the hub's answer: the highest sequence number it holds with no gap
// below it for this edge. The edge drops everything up to Acked.
type Ack struct {
	Acked    uint64 `json:"acked"`
	Accepted int    `json:"accepted"` // records new to the hub in this batch
	Dups     int    `json:"duplicates"`
	// Edge and Nonce repeat the signed request the ack answers: the edge
	// drops records only on an answer bound to the batch it sent (a replayed
	// or misrouted answer acknowledges nothing).
	Edge  string `json:"edge"`
	Nonce string `json:"nonce"`
}

// ValidKind reports whether k is a usable record kind: 1-64 of [a-z0-9._-].
func ValidKind(k string) bool { return validToken(k, MaxKindLen, true) }

// ValidSchool reports whether s is a usable school code (as edged -school).
func ValidSchool(s string) bool { return validToken(s, MaxSchoolLen, false) }

func validToken(s string, max int, lower bool) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		case !lower && c >= 'A' && c <= 'Z':
		default:
			return false
		}
	}
	return true
}

// Validate checks one record in isolation.
func (r *Record) Validate() error {
	switch {
	case r.Seq == 0:
		return errors.New("seq must be at least 1")
	case r.ID == "" || len(r.ID) > MaxIDLen || strings.ContainsAny(r.ID, "\x00\r\n\t,\""):
		return fmt.Errorf("record %d: id must be 1-%d printable characters", r.Seq, MaxIDLen)
	case !ValidKind(r.Kind):
		return fmt.Errorf("record %d: kind %q must be 1-%d of a-z 0-9 . _ -", r.Seq, r.Kind, MaxKindLen)
	case r.School != "" && !ValidSchool(r.School):
		return fmt.Errorf("record %d: school %q is not a school code", r.Seq, r.School)
	case len(r.Payload) == 0 || len(r.Payload) > MaxPayloadBytes:
		return fmt.Errorf("record %d: payload must be 1-%d bytes of JSON", r.Seq, MaxPayloadBytes)
	case !json.Valid(r.Payload):
		return fmt.Errorf("record %d: payload is not valid JSON", r.Seq)
	}
	return nil
}

// Validate checks a whole batch: header, every record, strictly increasing
// consecutive sequence numbers, unique ids.
func (b *Batch) Validate() error {
	if b.Edge == "" || len(b.Edge) > MaxIDLen {
		return errors.New("batch has no edge id")
	}
	if !ValidSchool(b.School) {
		return fmt.Errorf("batch school %q is not a school code", b.School)
	}
	if len(b.Records) == 0 || len(b.Records) > MaxBatchRecords {
		return fmt.Errorf("batch must hold 1-%d records, has %d", MaxBatchRecords, len(b.Records))
	}
	ids := make(map[string]struct{}, len(b.Records))
	var prev uint64
	for i := range b.Records {
		r := &b.Records[i]
		if err := r.Validate(); err != nil {
			return err
		}
		if i > 0 && r.Seq != prev+1 {
			return fmt.Errorf("record seq %d after %d: a batch must hold consecutive sequence numbers", r.Seq, prev)
		}
		prev = r.Seq
		if _, dup := ids[r.ID]; dup {
			return fmt.Errorf("record id %q appears twice in the batch", r.ID)
		}
		ids[r.ID] = struct{}{}
	}
	return nil
}

// EncodeBatch validates b and returns it as gzip-compressed JSON.
func EncodeBatch(b *Batch) ([]byte, error) {
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("encode batch: %w", err)
	}
	raw, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("encode batch: %w", err)
	}
	if len(raw) > MaxBatchRawBytes {
		return nil, fmt.Errorf("encode batch: %d bytes of JSON exceeds %d", len(raw), MaxBatchRawBytes)
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if _, err := zw.Write(raw); err != nil {
		return nil, fmt.Errorf("compress batch: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress batch: %w", err)
	}
	return buf.Bytes(), nil
}

// ErrTooLarge means a batch is over a size limit.
var ErrTooLarge = errors.New("batch too large")

// DecodeBatch decodes and validates a gzip-compressed batch, refusing more
// than MaxBatchBytes compressed or MaxBatchRawBytes decompressed.
func DecodeBatch(data []byte) (*Batch, error) {
	if len(data) > MaxBatchBytes {
		return nil, fmt.Errorf("%w: %d compressed bytes, limit %d", ErrTooLarge, len(data), MaxBatchBytes)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("batch is not gzip: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, MaxBatchRawBytes+1))
	if err != nil {
		return nil, fmt.Errorf("batch does not decompress: %w", err)
	}
	if len(raw) > MaxBatchRawBytes {
		return nil, fmt.Errorf("%w: more than %d bytes decompressed", ErrTooLarge, MaxBatchRawBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var b Batch
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("batch is not valid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("batch has data after the JSON object")
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return &b, nil
}
