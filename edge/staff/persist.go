package staff

import (
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SignInBucket keeps the live sign-ins, one JSON SignIn per key, keyed by
// the SHA-256 of the cookie value (the cookie itself is never stored). A
// restart of the edge — a power blip, a crash, a night update that ran
// over — must not sign every teacher out in the middle of a lesson.
var SignInBucket = []byte("staff_signins")

// MigrateSignIns creates the sign-in bucket (edges made before sign-ins
// were kept across restarts get it by this migration).
func MigrateSignIns(tx *bolt.Tx) error {
	_, err := tx.CreateBucketIfNotExists(SignInBucket)
	return err
}

// touchSaveEvery is how stale a stored sign-in's LastUsed may get: a use
// is written at most this often, so requests do not each cost a commit,
// and after a restart a sign-in's idle time is at most this much longer
// than it really was.
const touchSaveEvery = time.Minute

// loadSignIns reads the stored sign-ins that have not ended and drops the
// rest; a store without the bucket (not migrated) keeps none.
func (s *Store) loadSignIns() {
	if s.db == nil {
		return
	}
	now := s.now()
	var stale [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(SignInBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var si SignIn
			if len(k) != 32 || json.Unmarshal(v, &si) != nil || si.ID == "" ||
				now.Sub(si.LastUsed) > s.idle || now.Sub(si.Created) > s.maxAge || len(s.signIns) >= MaxSignIns {
				stale = append(stale, append([]byte(nil), k...))
				return nil
			}
			var h [32]byte
			copy(h[:], k)
			si.saved = si.LastUsed
			s.signIns[h] = &si
			return nil
		})
	})
	if err != nil {
		s.log.Error("cannot read the stored sign-ins: everyone signs in again", "err", err)
	}
	s.forget(stale...)
	if n := len(s.signIns); n > 0 {
		s.log.Info("sign-ins kept across the restart", "count", n)
	}
}

// persist stores si under hash h. It returns an error only when the
// write failed; a store without the bucket keeps nothing.
//
// persist and forget take persistMu, and persist writes only a sign-in
// still live in memory: a use saved after a sign-out or revoke (the two
// race on a page that keeps calling) would otherwise store it again, and
// the next restart would bring it back.
func (s *Store) persist(h [32]byte, si SignIn) error {
	if s.db == nil {
		return nil
	}
	v, err := json.Marshal(si)
	if err != nil {
		return err
	}
	if s.beforeSave != nil {
		s.beforeSave()
	}
	s.persistMu.Lock()
	defer s.persistMu.Unlock()
	s.mu.Lock()
	_, live := s.signIns[h]
	s.mu.Unlock()
	if !live {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(SignInBucket)
		if b == nil {
			return nil
		}
		return b.Put(h[:], v)
	})
}

// forget deletes stored sign-ins by hash. A failure is logged: the
// sign-in has already ended in memory, and one that comes back after a
// restart still ends at its idle timeout or maximum age.
func (s *Store) forget(hashes ...[]byte) {
	if s.db == nil || len(hashes) == 0 {
		return
	}
	s.persistMu.Lock()
	defer s.persistMu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(SignInBucket)
		if b == nil {
			return nil
		}
		for _, h := range hashes {
			if err := b.Delete(h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.Error("cannot delete ended sign-ins from the store", "count", len(hashes), "err", err)
	}
}
