// Package store owns the edge's single bbolt file: it opens it safely (one
// process at a time, corrupt or foreign files refused, never replaced), runs
// the ordered schema migrations, and hands out transactions to the packages
// that keep records in it. Large blobs live on disk beside it, not in here.
package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FileName is the name of the store file inside the data directory.
const FileName = "edge.db"

// Application marks a bbolt file as ours, so that a different program's
// bbolt file put in the data dir by mistake is refused rather than mutated.
const Application = "campusedge-edge"

var (
	bucketMeta = []byte("meta")
	keyApp     = []byte("application")
	keySchema  = []byte("schema_version")
	keyCreated = []byte("created_at")
)

// lockTimeout is how long Open waits for another process to let go of the
// file. Short: a second edged must say so within 2 s of its start, start-up
// included, even on a loaded box; the only legitimate holder that goes away
// by itself is an edged still finishing its shutdown, which takes
// milliseconds.
const lockTimeout = 750 * time.Millisecond

// ErrInUse means another process holds the store file open.
var ErrInUse = errors.New("store is in use by another process")

// ErrRefused means the file exists but is not a usable CampusEdge store.
var ErrRefused = errors.New("store file refused")

// Migration moves the schema from version N-1 to N (N is its index+1 in the
// list). Migrations run in one write transaction each, so a power cut in the
// middle leaves the previous version intact.
type Migration struct {
	Name string
	Up   func(tx *bolt.Tx) error
}

// Store is the open bbolt file.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens (creating if absent) DIR/edge.db and brings its schema up to
// date with migrations. It never blocks for more than about 1.5 s on a file
// another process holds, and it never rewrites a file it does not recognise.
func Open(dir string, migrations []Migration) (*Store, error) {
	path := filepath.Join(dir, FileName)
	fi, statErr := os.Stat(path)
	fresh := errors.Is(statErr, os.ErrNotExist) || (statErr == nil && fi.Size() == 0)
	if statErr != nil && !errors.Is(statErr, os.ErrNotExist) {
		return nil, fmt.Errorf("open store %s: %w", path, statErr)
	}
	db, err := OpenBolt(path, lockTimeout, "is another edged already running on this data dir? stop it or choose another -data")
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, path: path}
	if err := s.init(fresh, migrations); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init(fresh bool, migrations []Migration) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if !fresh || hasBuckets(tx) {
				return fmt.Errorf("%w: %s is a bbolt file of another program (no %q marker); it was left untouched: move it aside or point -data elsewhere", ErrRefused, s.path, Application)
			}
			var err error
			if meta, err = tx.CreateBucket(bucketMeta); err != nil {
				return fmt.Errorf("create meta bucket: %w", err)
			}
			for k, v := range map[string][]byte{
				string(keyApp):     []byte(Application),
				string(keyCreated): []byte(time.Now().UTC().Format(time.RFC3339)),
				string(keySchema):  u64(0),
			} {
				if err := meta.Put([]byte(k), v); err != nil {
					return fmt.Errorf("write meta %s: %w", k, err)
				}
			}
		}
		if app := meta.Get(keyApp); !bytes.Equal(app, []byte(Application)) {
			return fmt.Errorf("%w: %s belongs to %q, not %q; it was left untouched", ErrRefused, s.path, app, Application)
		}
		v := meta.Get(keySchema)
		if len(v) != 8 {
			return fmt.Errorf("%w: %s has a damaged schema version; it was left untouched", ErrRefused, s.path)
		}
		if have := binary.BigEndian.Uint64(v); have > uint64(len(migrations)) {
			return fmt.Errorf("%w: %s has schema version %d but this edged knows only %d; it was written by a newer edged (run that version, or restore a backup)", ErrRefused, s.path, have, len(migrations))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.migrate(migrations)
}

// migrate applies each pending migration in its own transaction together
// with the version bump, so the version always names what is really there.
func (s *Store) migrate(migrations []Migration) error {
	for {
		done := false
		err := s.db.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			have := binary.BigEndian.Uint64(meta.Get(keySchema))
			if have >= uint64(len(migrations)) {
				done = true
				return nil
			}
			m := migrations[have]
			if err := m.Up(tx); err != nil {
				return fmt.Errorf("migration %d (%s): %w", have+1, m.Name, err)
			}
			return meta.Put(keySchema, u64(have+1))
		})
		if err != nil {
			return fmt.Errorf("migrate store %s: %w", s.path, err)
		}
		if done {
			return nil
		}
	}
}

// SchemaVersion reports the schema version of the open file.
func (s *Store) SchemaVersion() (uint64, error) {
	var v uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		v = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keySchema))
		return nil
	})
	return v, err
}

// Path is the store file's path.
func (s *Store) Path() string { return s.path }

// DB gives packages that own buckets access to transactions. Callers must
// never hold a write transaction across network I/O.
func (s *Store) DB() *bolt.DB { return s.db }

// Update runs fn in a write transaction.
func (s *Store) Update(fn func(tx *bolt.Tx) error) error { return s.db.Update(fn) }

// View runs fn in a read transaction.
func (s *Store) View(fn func(tx *bolt.Tx) error) error { return s.db.View(fn) }

// Close closes the file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

func hasBuckets(tx *bolt.Tx) bool {
	c := tx.Cursor()
	k, _ := c.First()
	return k != nil
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}
