package hub

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bAccounts = []byte("accounts") // user -> Account
	bSessions = []byte("sessions") // hex(sha256) -> Session
)

// revokedBy marks a revoked token in its UsedBy field.
const revokedBy = "(revoked)"

// NoteEdge implements Store.
func (s *BoltStore) NoteEdge(_ context.Context, id string, n EdgeNote) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		var e Edge
		if err := getJSON(tx.Bucket(bEdges), []byte(id), &e); err != nil {
			return fmt.Errorf("edge %s: %w", id, err)
		}
		applyNote(&e, n)
		return putJSON(tx.Bucket(bEdges), []byte(id), e)
	})
}

func applyNote(e *Edge, n EdgeNote) {
	if !n.Seen.IsZero() {
		e.Seen = n.Seen.UTC()
	}
	if n.Version != "" {
		e.Version = n.Version
	}
	if !n.CertNotAfter.IsZero() {
		e.CertNotAfter = n.CertNotAfter.UTC()
	}
	if n.Backlog != nil && !n.Seen.IsZero() {
		e.Backlog, e.BacklogOldest, e.BacklogAt = n.Backlog.Records, int64(n.Backlog.Oldest/time.Second), n.Seen.UTC()
	}
}

// EnrolTokens implements Store.
func (s *BoltStore) EnrolTokens(_ context.Context, school string) ([]EnrolToken, error) {
	var out []EnrolToken
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bTokens).ForEach(func(k, v []byte) error {
			var t boltToken
			if err := json.Unmarshal(v, &t); err != nil {
				return err
			}
			if school == "" || t.School == school {
				out = append(out, EnrolToken{ID: string(k[:min(16, len(k))]), School: t.School, Expires: t.Expires, UsedBy: t.UsedBy})
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Expires.After(out[j].Expires) })
	return out, err
}

// RevokeEnrolToken implements Store.
func (s *BoltStore) RevokeEnrolToken(_ context.Context, id string) error {
	if _, err := hex.DecodeString(id); err != nil || len(id) != 16 {
		return fmt.Errorf("token %q: %w", id, ErrNotFound)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bTokens)
		c := b.Cursor()
		k, v := c.Seek([]byte(id))
		if k == nil || !bytes.HasPrefix(k, []byte(id)) {
			return fmt.Errorf("token %s: %w", id, ErrNotFound)
		}
		var t boltToken
		if err := json.Unmarshal(v, &t); err != nil {
			return err
		}
		if t.UsedBy == "" {
			t.UsedBy = revokedBy
		}
		return putJSON(b, bytes.Clone(k), t)
	})
}

// PutAccount implements Store.
func (s *BoltStore) PutAccount(_ context.Context, a Account) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bAccounts), []byte(a.User), a) })
}

// Account implements Store.
func (s *BoltStore) Account(_ context.Context, user string) (Account, error) {
	var a Account
	err := s.db.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bAccounts), []byte(user), &a) })
	return a, err
}

// Accounts implements Store.
func (s *BoltStore) Accounts(_ context.Context) ([]Account, error) {
	var out []Account
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bAccounts).ForEach(func(_, v []byte) error {
			var a Account
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	return out, err
}

// CreateSession implements Store; expired sessions are dropped on the way.
func (s *BoltStore) CreateSession(_ context.Context, se Session) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bSessions)
		var stale [][]byte
		now := time.Now()
		_ = b.ForEach(func(k, v []byte) error {
			var o Session
			if json.Unmarshal(v, &o) == nil && o.Expires.Before(now) {
				stale = append(stale, bytes.Clone(k))
			}
			return nil
		})
		for _, k := range stale {
			_ = b.Delete(k)
		}
		return putJSON(b, []byte(hex.EncodeToString(se.Hash)), se)
	})
}

// Session implements Store.
func (s *BoltStore) Session(_ context.Context, hash []byte, now time.Time) (Session, error) {
	var se Session
	err := s.db.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bSessions), []byte(hex.EncodeToString(hash)), &se) })
	if err == nil && !now.Before(se.Expires) {
		err = ErrNotFound
	}
	se.Hash = hash
	return se, err
}

// DeleteSession implements Store.
func (s *BoltStore) DeleteSession(_ context.Context, hash []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bSessions).Delete([]byte(hex.EncodeToString(hash))) })
}
