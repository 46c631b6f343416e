// Package learning keeps the learning records of live classes — quiz
// questions and answers, attendance (a classroom joining and leaving, the
// assistant teacher's marks) — in the edge's bbolt store, per session, and
// hands each one to the sync outbox in the same transaction, so a record and
// its way to the city commit or vanish together.
//
// The outbox is reached through one function value (Appender); today that is
// sync/outbox.AppendTx, and swapping it for anything else is one line where
// the Store is made.
package learning

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/sync/wire"
)

// Bucket holds the records, keyed by session id, a 0 byte, then the outbox
// sequence (8 bytes big-endian): a session's records are one prefix scan,
// in the edge's arrival order.
var Bucket = []byte("learning_records")

// Record kinds. The outbox record of the same kind carries the Record as
// its payload.
const (
	KindQuizQuestion    = "quiz.question"
	KindQuizAnswer      = "quiz.answer"
	KindAttendanceJoin  = "attendance.join"
	KindAttendanceLeave = "attendance.leave"
	KindAttendanceMark  = "attendance.mark"
	KindSessionLog      = "session.log" // hands, stage, mute, end: what happened in the class
)

// MaxDataBytes bounds one record's data: a quiz question (at most 3,000
// characters of text, ~20 KB as JSON at worst) fits, and the whole record
// stays under the sync wire's 64 KiB payload limit.
const MaxDataBytes = 48 << 10

// Record is one learning record.
type Record struct {
	Kind      string `json:"kind"`
	Session   string `json:"session_id"`
	Classroom string `json:"classroom_id,omitempty"`
	// ClassroomName is the classroom's display name when the record was
	// made: the city sees the edge's classroom ids only through records,
	// and its exports show people names, not ids.
	ClassroomName string          `json:"classroom_name,omitempty"`
	Student       string          `json:"student_id,omitempty"`
	At            time.Time       `json:"at"`
	Data          json.RawMessage `json:"data,omitempty"`
	// Seq and ID are the outbox's: the per-edge sequence and stable id the
	// city stores the record under. Set by Add.
	Seq uint64 `json:"seq"`
	ID  string `json:"id"`
}

// Appender puts a record on its way to the city inside the caller's write
// transaction: sync/outbox.AppendTx.
type Appender func(tx *bolt.Tx, kind string, payload []byte, now time.Time) (wire.Record, error)

// Store adds and lists learning records.
type Store struct {
	db     *bolt.DB
	append Appender
	now    func() time.Time
	notify func()
	update Updater
	names  func(classroomID string) string
}

// SetClassroomNames gives the store the classroom names it writes into
// records (ClassroomName); call it before the store is used.
func (s *Store) SetClassroomNames(names func(classroomID string) string) { s.names = names }

// Updater runs fn in a write transaction and returns once it is committed
// (durable). sync/outbox's Outbox.Update is one that shares a commit (one
// fsync) among the calls waiting at that moment; fn may then run more
// than once (a group that failed is retried without the failing call).
type Updater func(ctx context.Context, fn func(*bolt.Tx) error) error

// New returns a store on db whose records go out through app. notify (may be
// nil) runs after each commit, to wake the uplink.
func New(db *bolt.DB, app Appender, notify func()) *Store {
	return &Store{db: db, append: app, now: time.Now, notify: notify,
		update: func(_ context.Context, fn func(*bolt.Tx) error) error { return db.Update(fn) }}
}

// GroupCommit makes Add commit through u: forty classrooms joining in the
// same second then share a few fsyncs instead of queueing for one each
// (every join is acknowledged only once durable).
func (s *Store) GroupCommit(u Updater) *Store {
	s.update = u
	return s
}

// Migrate creates the bucket (an edge store migration).
func Migrate(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists(Bucket); err != nil {
		return fmt.Errorf("create bucket %s: %w", Bucket, err)
	}
	return nil
}

// ErrInvalid wraps every refusal of a malformed record.
var ErrInvalid = errors.New("invalid learning record")

// Add stores r and appends it to the outbox in one transaction. It returns
// r with At, Seq and ID set once durable.
func (s *Store) Add(ctx context.Context, r Record) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	if r.Kind == "" || r.Session == "" || strings.ContainsRune(r.Session, 0) || len(r.Session) > 64 {
		return Record{}, fmt.Errorf("%w: kind and a session id of at most 64 bytes are required", ErrInvalid)
	}
	if len(r.Data) > MaxDataBytes {
		return Record{}, fmt.Errorf("%w: data of %d bytes, more than %d", ErrInvalid, len(r.Data), MaxDataBytes)
	}
	if r.At.IsZero() {
		r.At = s.now().UTC()
	}
	if r.ClassroomName == "" && r.Classroom != "" && s.names != nil {
		r.ClassroomName = s.names(r.Classroom)
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(Bucket)
		if b == nil {
			return fmt.Errorf("bucket %s missing: the store was not migrated", Bucket)
		}
		r.Seq, r.ID = 0, ""
		payload, err := json.Marshal(r)
		if err != nil {
			return err
		}
		out, err := s.append(tx, r.Kind, payload, r.At)
		if err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		r.Seq, r.ID = out.Seq, out.ID
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return b.Put(key(r.Session, r.Seq), v)
	})
	if err != nil {
		return Record{}, fmt.Errorf("store learning record %s: %w", r.Kind, err)
	}
	if s.notify != nil {
		s.notify()
	}
	return r, nil
}

func key(session string, seq uint64) []byte {
	k := make([]byte, 0, len(session)+9)
	k = append(k, session...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

// Session returns a session's records in arrival order, those whose kind
// starts with kindPrefix ("" for all), at most limit (0: no limit).
func (s *Store) Session(id, kindPrefix string, limit int) ([]Record, error) {
	out := []Record{}
	prefix := append([]byte(id), 0)
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(Bucket)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(prefix); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("record %x: %w", k, err)
			}
			if !strings.HasPrefix(r.Kind, kindPrefix) {
				continue
			}
			out = append(out, r)
			if limit > 0 && len(out) >= limit {
				return nil
			}
		}
		return nil
	})
	return out, err
}
