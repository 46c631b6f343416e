// Package hub is cityhub's side of sync: the HTTP endpoints edges call
// (enrolment, signed batch upload, downlink changes), the rules they apply
// (who may write what for which school, each (edge, seq) once), and the
// storage interface with its two backends, embedded bbolt and PostgreSQL.
// The server is stateless apart from the Store, so several cityhub replicas
// can share one PostgreSQL database.
package hub

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/campusedge/campusedge/sync/wire"
)

// Errors a Store returns; the server maps them to API errors.
var (
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrTokenInvalid = errors.New("enrolment token unknown, used or expired")
	ErrReplay       = errors.New("nonce already used")
	ErrSeqConflict  = errors.New("sequence number already holds a different record")
	// ErrNameRefused is wrapped by an Issuer refusing a name by city policy.
	ErrNameRefused = errors.New("name not allowed by the city CA")
)

// GapError means a batch starts further beyond the hub's contiguous
// sequence than any batch in flight could.
type GapError struct{ Acked, First uint64 }

func (e *GapError) Error() string {
	return "batch starts at seq " + u64s(e.First) + " but the hub holds only up to " + u64s(e.Acked)
}

// School is a school the city knows.
type School struct {
	Code    string    `json:"code"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// Edge is an enrolled edge.
type Edge struct {
	ID        string    `json:"id"`
	School    string    `json:"school"`
	PublicKey []byte    `json:"public_key"`
	Enrolled  time.Time `json:"enrolled"`
	Revoked   bool      `json:"revoked"`
	Acked     uint64    `json:"acked"`
	// Seen is when the edge last made a signed call (kept to a minute's
	// precision: see Server.signed), Version what it said it runs, and
	// CertNotAfter the expiry of the last certificate the city CA signed
	// for it; all zero until known.
	Seen         time.Time `json:"seen"`
	Version      string    `json:"version,omitempty"`
	CertNotAfter time.Time `json:"cert_not_after"`
	// Backlog is the edge's outbox backlog as it last reported it
	// (wire.HeaderBacklog) at BacklogAt; BacklogAt is zero for an edge
	// that never reported one (older versions).
	Backlog       uint64    `json:"backlog"`
	BacklogOldest int64     `json:"backlog_oldest_seconds"`
	BacklogAt     time.Time `json:"backlog_at"`
}

// EdgeNote is what the hub learnt about an edge; zero fields leave the
// stored value as it is.
type EdgeNote struct {
	Seen         time.Time
	Version      string
	CertNotAfter time.Time
	// Backlog, when set, replaces the stored backlog, reported at Seen.
	Backlog *wire.Backlog
}

// EnrolToken is an enrolment token as the city lists it: never the
// secret, only an ID derived from its hash.
type EnrolToken struct {
	ID      string    `json:"id"` // first 16 hex digits of the hash
	School  string    `json:"school"`
	Expires time.Time `json:"expires"`
	UsedBy  string    `json:"used_by,omitempty"`
}

// Staff roles.
const (
	RoleCityAdmin     = "city_admin"     // everything
	RoleSchoolAdmin   = "school_admin"   // its school's edges, tokens and imports
	RoleContentEditor = "content_editor" // the catalogue
)

// ValidRole reports whether r is one of the staff roles.
func ValidRole(r string) bool {
	return r == RoleCityAdmin || r == RoleSchoolAdmin || r == RoleContentEditor
}

// Account is a city staff account. Hash is the encoded argon2id hash of
// the password (never the password).
type Account struct {
	User     string    `json:"user"`
	Role     string    `json:"role"`
	School   string    `json:"school,omitempty"` // school admins only
	Hash     string    `json:"hash,omitempty"`
	Created  time.Time `json:"created"`
	Disabled bool      `json:"disabled"`
}

// Session is a signed-in staff member (cookie) or a CLI's API key
// (Kind "api"), found by the SHA-256 of its secret; it lives in the Store
// so that every replica knows it.
type Session struct {
	Hash    []byte    `json:"-"`
	User    string    `json:"user"`
	Kind    string    `json:"kind"` // "cookie" or "api"
	Expires time.Time `json:"expires"`
}

// StoredRecord is a record as the hub holds it.
type StoredRecord struct {
	Edge     string    `json:"edge"`
	School   string    `json:"school"`
	Received time.Time `json:"received"`
	wire.Record
}

// IngestResult is what one Ingest did.
type IngestResult struct {
	Acked    uint64
	Accepted int
	Dups     int
}

// Change is one downlink document version for a school: a whole roster or
// timetable, replacing the previous one of its kind.
type Change struct {
	Seq     uint64          `json:"seq"`
	Kind    string          `json:"kind"`
	Created time.Time       `json:"created"`
	Data    json.RawMessage `json:"data"`
}

// Store is everything the hub keeps. Implementations must make Enrol,
// UseNonce and Ingest safe under concurrent callers in several processes
// (PostgreSQL) or one process (bbolt).
type Store interface {
	CreateSchool(ctx context.Context, s School) error
	School(ctx context.Context, code string) (School, error)
	Schools(ctx context.Context) ([]School, error)
	CreateEnrolToken(ctx context.Context, school string, tokenHash []byte, expires time.Time) error
	// Enrol consumes the token and records the edge under the token's school.
	// Enrolling the same key again with a fresh token of the same school is
	// allowed (a re-installed edge); a different school is refused.
	Enrol(ctx context.Context, tokenHash []byte, e Edge, now time.Time) (Edge, error)
	Edge(ctx context.Context, id string) (Edge, error)
	Edges(ctx context.Context, school string) ([]Edge, error)
	RevokeEdge(ctx context.Context, id string) error
	// UseNonce records (edge, nonce) until expires; ErrReplay if it is known.
	UseNonce(ctx context.Context, edge, nonce string, expires, now time.Time) error
	// Ingest stores each record of a consecutive run once and returns the
	// highest sequence held with no gap below. A run may start up to
	// wire.MaxAhead beyond that (batches in flight arrive out of order; it
	// is kept and counted once the gap fills); further is *GapError.
	Ingest(ctx context.Context, edge, school string, recs []wire.Record, received time.Time) (IngestResult, error)
	// Records calls fn for the school's records, by edge then seq.
	Records(ctx context.Context, school string, fn func(StoredRecord) error) error
	PutChange(ctx context.Context, school, kind string, data []byte, now time.Time) (uint64, error)
	Changes(ctx context.Context, school string, since uint64, limit int) ([]Change, error)

	// NoteEdge records what the hub learnt about an enrolled edge.
	NoteEdge(ctx context.Context, id string, n EdgeNote) error
	// EnrolTokens lists the school's tokens ("" for all), newest expiry first.
	EnrolTokens(ctx context.Context, school string) ([]EnrolToken, error)
	// RevokeEnrolToken makes an unused token unusable; ErrNotFound if no
	// token has that ID.
	RevokeEnrolToken(ctx context.Context, id string) error

	// PutAccount creates or replaces a staff account.
	PutAccount(ctx context.Context, a Account) error
	Account(ctx context.Context, user string) (Account, error)
	Accounts(ctx context.Context) ([]Account, error)
	CreateSession(ctx context.Context, s Session) error
	// Session is the live session with that hash; ErrNotFound if none or
	// expired.
	Session(ctx context.Context, hash []byte, now time.Time) (Session, error)
	DeleteSession(ctx context.Context, hash []byte) error

	// AddSyncCounts adds records and errors to the slot's point.
	AddSyncCounts(ctx context.Context, slot time.Time, records, errors uint64) error
	// SampleSync sets the slot's gauges (Online, Edges, Backlog) and drops
	// the points of slots before prune.
	SampleSync(ctx context.Context, slot time.Time, online, edges int, backlog uint64, prune time.Time) error
	// SyncPoints lists the points from since on, oldest first.
	SyncPoints(ctx context.Context, since time.Time) ([]SyncPoint, error)
	Close() error
}

// TokenID is the listed ID of a token hash.
func TokenID(hash []byte) string {
	const hexd = "0123456789abcdef"
	out := make([]byte, 0, 16)
	for _, b := range hash[:min(8, len(hash))] {
		out = append(out, hexd[b>>4], hexd[b&15])
	}
	return string(out)
}

func u64s(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}
