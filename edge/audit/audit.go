// Package audit is the edge's audit log: who did what to whom and when —
// sign-ins, role changes, unpairing, sessions started and ended, roster
// marks changed after a class. Each entry is stored in the edge's bbolt
// file and, in the same transaction, handed to the sync outbox (as an
// "audit" record) so the city keeps it too; the console shows the newest.
package audit

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/httpapi"
)

// Bucket holds entries keyed by an 8-byte big-endian sequence.
var Bucket = []byte("audit")

// RecordKind is the outbox record kind of an entry.
const RecordKind = "audit"

// MaxEntries bounds the log kept on the edge (the city keeps all): a
// school's year of sign-ins fits; beyond it the oldest go.
const MaxEntries = 200_000

// Migrate creates the bucket.
func Migrate(tx *bolt.Tx) error {
	_, err := tx.CreateBucketIfNotExists(Bucket)
	return err
}

// Entry is one thing that happened.
type Entry struct {
	Seq    uint64    `json:"seq"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`  // who: a staff id, "admin token", "terminal …", "city"
	Action string    `json:"action"` // what: signin, staff.roles, terminal.unpair, session.start, …
	Target string    `json:"target,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// Appender hands an entry's JSON to the sync outbox inside tx
// (sync/outbox.AppendTx through an adapter); nil: stored only here.
type Appender func(tx *bolt.Tx, kind string, payload []byte, now time.Time) error

// Log is the audit log.
type Log struct {
	db     *bolt.DB
	append Appender
	notify func()
	log    *slog.Logger
	now    func() time.Time
}

// New returns the log on db; notify (may be nil) wakes the uplink.
func New(db *bolt.DB, app Appender, notify func(), log *slog.Logger) *Log {
	if log == nil {
		log = slog.Default()
	}
	return &Log{db: db, append: app, notify: notify, log: log, now: time.Now}
}

// Record stores an entry. A failure is logged, never returned: the action
// it describes has happened already.
func (l *Log) Record(actor, action, target, detail string) {
	if l == nil {
		return
	}
	e := Entry{At: l.now().UTC(), Actor: clip(actor), Action: clip(action), Target: clip(target), Detail: clip(detail)}
	err := l.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(Bucket)
		if b == nil {
			return errors.New("audit bucket missing (store not migrated)")
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		e.Seq = seq
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := b.Put(key(seq), v); err != nil {
			return err
		}
		if seq > MaxEntries {
			_ = b.Delete(key(seq - MaxEntries))
		}
		if l.append != nil {
			return l.append(tx, RecordKind, v, e.At)
		}
		return nil
	})
	if err != nil {
		l.log.Error("audit entry not stored", "action", action, "actor", actor, "err", err)
		return
	}
	l.log.Info("audit", "actor", e.Actor, "action", e.Action, "target", e.Target, "detail", e.Detail)
	if l.notify != nil {
		l.notify()
	}
}

func clip(s string) string {
	if len(s) > 256 {
		return s[:256]
	}
	return s
}

func key(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

// Newest returns up to limit entries, newest first, before seq (0: from
// the newest).
func (l *Log) Newest(limit int, before uint64) ([]Entry, error) {
	out := []Entry{}
	err := l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(Bucket)
		if b == nil {
			return errors.New("audit bucket missing (store not migrated)")
		}
		c := b.Cursor()
		var k, v []byte
		if before > 0 {
			c.Seek(key(before))
			k, v = c.Prev()
		} else {
			k, v = c.Last()
		}
		for ; k != nil && len(out) < limit; k, v = c.Prev() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("audit entry %x: %w", k, err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Register adds GET /api/v1/audit[?limit=N][&before=SEQ] (admin).
func (l *Log) Register(srv *api.Server) {
	srv.HandleFunc("GET /api/v1/audit", srv.Admin(func(w http.ResponseWriter, r *http.Request) {
		limit, before := 100, uint64(0)
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				httpapi.WriteError(w, http.StatusBadRequest, "invalid", "limit must be 1..1000")
				return
			}
			limit = n
		}
		if v := r.URL.Query().Get("before"); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				httpapi.WriteError(w, http.StatusBadRequest, "invalid", "before must be an entry's seq")
				return
			}
			before = n
		}
		es, err := l.Newest(limit, before)
		if err != nil {
			httpapi.WriteError(w, http.StatusInternalServerError, "store", err.Error())
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"entries": es})
	}))
}
