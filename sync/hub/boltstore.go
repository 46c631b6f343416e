package hub

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/store"
	"github.com/campusedge/campusedge/sync/wire"
)

// BoltFileName is the sync store inside cityhub's data dir (the catalogue
// keeps its own hub.db).
const BoltFileName = "sync.db"

var (
	bSchools = []byte("schools")  // code -> School
	bTokens  = []byte("tokens")   // hex(sha256) -> boltToken
	bEdges   = []byte("edges")    // id -> Edge (Acked is the contiguous high-water mark)
	bNonces  = []byte("nonces")   // edge \x00 nonce -> expiry unix ms
	bRecords = []byte("records")  // school \x00 edge \x00 seq(8) -> StoredRecord
	bChanges = []byte("changes")  // school \x00 seq(8) -> Change
	bMeta    = []byte("hub_meta") // "change_seq:" school -> last seq
)

type boltToken struct {
	School  string    `json:"school"`
	Expires time.Time `json:"expires"`
	UsedBy  string    `json:"used_by,omitempty"`
}

// BoltStore is the embedded single-process backend.
type BoltStore struct {
	db     *bolt.DB
	nonceN int // calls since the last prune (guarded by bbolt's writer lock)
}

// lockWait is how long OpenBolt waits for another process to let go of
// the file before saying who probably holds it.
const lockWait = 1500 * time.Millisecond

// OpenBolt opens (creating) DIR/sync.db.
func OpenBolt(dir string) (*BoltStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, BoltFileName)
	db, err := store.OpenBolt(path, lockWait, "is a cityhub running on this -data dir? stop it first (or use a PostgreSQL -db, which allows commands beside a running hub)")
	if err != nil {
		return nil, err
	}
	if err := store.CreateBuckets(db, bSchools, bTokens, bEdges, bNonces, bRecords, bChanges, bMeta, bAccounts, bSessions, bHealth); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// Close closes the file.
func (s *BoltStore) Close() error { return s.db.Close() }

func getJSON(b *bolt.Bucket, k []byte, v any) error {
	raw := b.Get(k)
	if raw == nil {
		return ErrNotFound
	}
	return json.Unmarshal(raw, v)
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}

// CreateSchool implements Store.
func (s *BoltStore) CreateSchool(_ context.Context, sc School) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bSchools)
		if b.Get([]byte(sc.Code)) != nil {
			return fmt.Errorf("school %s: %w", sc.Code, ErrExists)
		}
		return putJSON(b, []byte(sc.Code), sc)
	})
}

// School implements Store.
func (s *BoltStore) School(_ context.Context, code string) (School, error) {
	var sc School
	err := s.db.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bSchools), []byte(code), &sc) })
	return sc, err
}

// Schools implements Store.
func (s *BoltStore) Schools(_ context.Context) ([]School, error) {
	var out []School
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bSchools).ForEach(func(_, v []byte) error {
			var sc School
			if err := json.Unmarshal(v, &sc); err != nil {
				return err
			}
			out = append(out, sc)
			return nil
		})
	})
	return out, err
}

// CreateEnrolToken implements Store.
func (s *BoltStore) CreateEnrolToken(_ context.Context, school string, hash []byte, expires time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bSchools).Get([]byte(school)) == nil {
			return fmt.Errorf("school %s: %w", school, ErrNotFound)
		}
		return putJSON(tx.Bucket(bTokens), []byte(hex.EncodeToString(hash)), boltToken{School: school, Expires: expires})
	})
}

// Enrol implements Store.
func (s *BoltStore) Enrol(_ context.Context, hash []byte, e Edge, now time.Time) (Edge, error) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		var tok boltToken
		k := []byte(hex.EncodeToString(hash))
		if err := getJSON(tx.Bucket(bTokens), k, &tok); err != nil || tok.UsedBy != "" || !now.Before(tok.Expires) {
			return ErrTokenInvalid
		}
		var old Edge
		switch err := getJSON(tx.Bucket(bEdges), []byte(e.ID), &old); {
		case err == nil:
			if old.School != tok.School || subtle.ConstantTimeCompare(old.PublicKey, e.PublicKey) != 1 {
				return fmt.Errorf("edge %s is enrolled for another school or with another key; revoke it first: %w", e.ID, ErrExists)
			}
			e.Acked = old.Acked
		case !errors.Is(err, ErrNotFound):
			return err
		}
		e.School, e.Enrolled, e.Revoked = tok.School, now, false
		tok.UsedBy = e.ID
		if err := putJSON(tx.Bucket(bTokens), k, tok); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bEdges), []byte(e.ID), e)
	})
	return e, err
}

// Edge implements Store.
func (s *BoltStore) Edge(_ context.Context, id string) (Edge, error) {
	var e Edge
	err := s.db.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bEdges), []byte(id), &e) })
	return e, err
}

// Edges implements Store.
func (s *BoltStore) Edges(_ context.Context, school string) ([]Edge, error) {
	var out []Edge
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bEdges).ForEach(func(_, v []byte) error {
			var e Edge
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if school == "" || e.School == school {
				out = append(out, e)
			}
			return nil
		})
	})
	return out, err
}

// RevokeEdge implements Store.
func (s *BoltStore) RevokeEdge(_ context.Context, id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		var e Edge
		if err := getJSON(tx.Bucket(bEdges), []byte(id), &e); err != nil {
			return fmt.Errorf("edge %s: %w", id, err)
		}
		e.Revoked = true
		return putJSON(tx.Bucket(bEdges), []byte(id), e)
	})
}

// UseNonce implements Store.
func (s *BoltStore) UseNonce(_ context.Context, edge, nonce string, expires, now time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bNonces)
		k := []byte(edge + "\x00" + nonce)
		if v := b.Get(k); v != nil && int64(binary.BigEndian.Uint64(v)) > now.UnixMilli() {
			return ErrReplay
		}
		s.nonceN++
		if s.nonceN >= 1000 { // prune expired nonces now and then
			s.nonceN = 0
			c := b.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if int64(binary.BigEndian.Uint64(v)) <= now.UnixMilli() {
					if err := c.Delete(); err != nil {
						return err
					}
				}
			}
		}
		return b.Put(k, be64(uint64(expires.UnixMilli())))
	})
}

func recKey(school, edge string, seq uint64) []byte {
	k := make([]byte, 0, len(school)+len(edge)+10)
	k = append(k, school...)
	k = append(k, 0)
	k = append(k, edge...)
	k = append(k, 0)
	return append(k, be64(seq)...)
}

// Ingest implements Store.
func (s *BoltStore) Ingest(_ context.Context, edge, school string, recs []wire.Record, received time.Time) (IngestResult, error) {
	var res IngestResult
	err := s.db.Update(func(tx *bolt.Tx) error {
		var e Edge
		if err := getJSON(tx.Bucket(bEdges), []byte(edge), &e); err != nil {
			return fmt.Errorf("edge %s: %w", edge, err)
		}
		res.Acked = e.Acked
		if len(recs) == 0 {
			return nil
		}
		if recs[0].Seq > e.Acked+1+wire.MaxAhead {
			return &GapError{Acked: e.Acked, First: recs[0].Seq}
		}
		b := tx.Bucket(bRecords)
		for _, r := range recs {
			k := recKey(school, edge, r.Seq)
			if old := b.Get(k); old != nil {
				var sr StoredRecord
				if err := json.Unmarshal(old, &sr); err != nil {
					return err
				}
				if sr.ID != r.ID {
					return fmt.Errorf("edge %s seq %d: stored id %s, batch id %s: %w", edge, r.Seq, sr.ID, r.ID, ErrSeqConflict)
				}
				res.Dups++
				continue
			}
			r.School = school
			if err := putJSON(b, k, StoredRecord{Edge: edge, School: school, Received: received, Record: r}); err != nil {
				return err
			}
			res.Accepted++
		}
		// Advance over everything now held contiguously, including batches
		// that arrived ahead of this one.
		for b.Get(recKey(school, edge, e.Acked+1)) != nil {
			e.Acked++
		}
		res.Acked = e.Acked
		return putJSON(tx.Bucket(bEdges), []byte(edge), e)
	})
	return res, err
}

// Records implements Store.
func (s *BoltStore) Records(_ context.Context, school string, fn func(StoredRecord) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bRecords).Cursor()
		prefix := []byte(school + "\x00")
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var sr StoredRecord
			if err := json.Unmarshal(v, &sr); err != nil {
				return err
			}
			if err := fn(sr); err != nil {
				return err
			}
		}
		return nil
	})
}

// PutChange implements Store.
func (s *BoltStore) PutChange(_ context.Context, school, kind string, data []byte, now time.Time) (uint64, error) {
	var seq uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bSchools).Get([]byte(school)) == nil {
			return fmt.Errorf("school %s: %w", school, ErrNotFound)
		}
		mk := []byte("change_seq:" + school)
		if v := tx.Bucket(bMeta).Get(mk); len(v) == 8 {
			seq = binary.BigEndian.Uint64(v)
		}
		seq++
		if err := tx.Bucket(bMeta).Put(mk, be64(seq)); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bChanges), append([]byte(school+"\x00"), be64(seq)...), Change{Seq: seq, Kind: kind, Created: now, Data: data})
	})
	return seq, err
}

// Changes implements Store.
func (s *BoltStore) Changes(_ context.Context, school string, since uint64, limit int) ([]Change, error) {
	var out []Change
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bChanges).Cursor()
		prefix := []byte(school + "\x00")
		for k, v := c.Seek(append(append([]byte{}, prefix...), be64(since+1)...)); k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Next() {
			var ch Change
			if err := json.Unmarshal(v, &ch); err != nil {
				return err
			}
			out = append(out, ch)
		}
		return nil
	})
	return out, err
}

func be64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}
