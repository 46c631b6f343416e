package store

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// OpenBolt opens (creating, mode 0600) the bbolt file at path for this
// process alone: bbolt's file lock keeps a second process out, and wait
// bounds how long we stand in line for it so a second program says so
// instead of hanging. A time-out is ErrInUse, with hint (who the holder
// probably is and what to do) in the message; a damaged or foreign file
// is ErrRefused and left untouched. The edge's store, cityhub's sync store
// and its catalogue all open their files here.
func OpenBolt(path string, wait time.Duration, hint string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: wait})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s is locked; %s", ErrInUse, path, hint)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
		return nil, fmt.Errorf("%w: %s is corrupt or not a bbolt file (%v); it was left untouched: restore it from backup or move it aside to start empty", ErrRefused, path, err)
	default:
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
}

// CreateBuckets makes the top-level buckets of names that do not exist
// yet, in one transaction.
func CreateBuckets(db *bolt.DB, names ...[]byte) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, n := range names {
			if _, err := tx.CreateBucketIfNotExists(n); err != nil {
				return fmt.Errorf("create bucket %s: %w", n, err)
			}
		}
		return nil
	})
}
