// Package livestate keeps the live state of classes — sessions and their
// role grants, the control state (stage, hands, mutes), open quizzes and
// the answers so far, who is present — in the edge's bbolt store, so that
// an edge that restarts (a crash, a power blip, an update that overran)
// resumes its lessons instead of ending them.
//
// It is a small keyed document store: every value is one JSON document
// under (session, kind, name). Owners of the state (classroom/session,
// classroom) define the documents; this package only writes them with the
// store's discipline — each Put is one committed, fsynced bbolt transaction
// before it returns, so a change is acknowledged only once it would
// survive a power cut — and reads them back at start.
package livestate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Bucket holds the documents, keyed session id, 0, kind, 0, name: one
// session's documents are one prefix scan, and deleting a session is one
// prefix delete.
var Bucket = []byte("live_state")

// MaxDocBytes bounds one document: the largest is a quiz question
// (~20 KB as JSON at worst) or a session with its grants (a session of 100
// classrooms has ~200 grants of ~120 bytes).
const MaxDocBytes = 64 << 10

// ErrInvalid wraps a refused key or document.
var ErrInvalid = errors.New("invalid live-state document")

// Store reads and writes live-state documents in a bbolt database.
type Store struct {
	db *bolt.DB
}

// New returns a store on db. The bucket is made by Migrate (an edge store
// migration); New makes it too when missing, for stores opened without the
// appliance's migrations (tests, tools).
func New(db *bolt.DB) (*Store, error) {
	if err := db.Update(Migrate); err != nil {
		return nil, err
	}
	return &Store{db: db}, nil
}

// Migrate creates the bucket.
func Migrate(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists(Bucket); err != nil {
		return fmt.Errorf("create bucket %s: %w", Bucket, err)
	}
	return nil
}

func key(sessionID, kind, name string) ([]byte, error) {
	if sessionID == "" || kind == "" || strings.ContainsRune(sessionID+kind+name, 0) || len(sessionID)+len(kind)+len(name) > 512 {
		return nil, fmt.Errorf("%w: key %q/%q/%q (non-empty session and kind, no NUL, at most 512 bytes)", ErrInvalid, sessionID, kind, name)
	}
	return []byte(sessionID + "\x00" + kind + "\x00" + name), nil
}

// Put stores v as the document (sessionID, kind, name), replacing any, and
// returns once it is durable.
func (s *Store) Put(sessionID, kind, name string, v any) error {
	k, err := key(sessionID, kind, name)
	if err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("live state %s/%s: %w", kind, name, err)
	}
	if len(b) > MaxDocBytes {
		return fmt.Errorf("%w: %s/%s is %d bytes, more than %d", ErrInvalid, kind, name, len(b), MaxDocBytes)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(Bucket)
		if bk == nil {
			return fmt.Errorf("bucket %s missing: the store was not migrated", Bucket)
		}
		return bk.Put(k, b)
	})
}

// Delete removes one document (no error if absent).
func (s *Store) Delete(sessionID, kind, name string) error {
	k, err := key(sessionID, kind, name)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(Bucket)
		if bk == nil {
			return nil
		}
		return bk.Delete(k)
	})
}

// DeleteSession removes every document of a session.
func (s *Store) DeleteSession(sessionID string) error {
	if sessionID == "" || strings.ContainsRune(sessionID, 0) {
		return fmt.Errorf("%w: session id %q", ErrInvalid, sessionID)
	}
	prefix := []byte(sessionID + "\x00")
	return s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(Bucket)
		if bk == nil {
			return nil
		}
		c := bk.Cursor()
		var keys [][]byte
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Docs are one session's documents: kind → name → JSON.
type Docs map[string]map[string]json.RawMessage

// Load returns every stored document, by session. A key of the wrong shape
// (written by a newer edge, or damaged) is skipped, not fatal: the rest of
// the lessons still resume.
func (s *Store) Load() (map[string]Docs, error) {
	out := map[string]Docs{}
	err := s.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(Bucket)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			parts := strings.SplitN(string(k), "\x00", 3)
			if len(parts) != 3 || !json.Valid(v) {
				return nil
			}
			d := out[parts[0]]
			if d == nil {
				d = Docs{}
				out[parts[0]] = d
			}
			if d[parts[1]] == nil {
				d[parts[1]] = map[string]json.RawMessage{}
			}
			d[parts[1]][parts[2]] = json.RawMessage(bytes.Clone(v))
			return nil
		})
	})
	return out, err
}
