package store

import (
	"errors"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestMigrationsRunOnceInOrder(t *testing.T) {
	dir := t.TempDir()
	var ran []string
	migs := []Migration{
		{Name: "one", Up: func(tx *bolt.Tx) error { ran = append(ran, "one"); _, err := tx.CreateBucket([]byte("a")); return err }},
		{Name: "two", Up: func(tx *bolt.Tx) error { ran = append(ran, "two"); _, err := tx.CreateBucket([]byte("b")); return err }},
	}
	s, err := Open(dir, migs[:1])
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(dir, migs)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s.SchemaVersion(); v != 2 || len(ran) != 2 || ran[1] != "two" {
		t.Fatalf("version %d ran %v", v, ran)
	}
	s.Close()
	// An older edged must refuse a store a newer one migrated.
	if _, err := Open(dir, migs[:1]); !errors.Is(err, ErrRefused) {
		t.Fatalf("older code on newer store: %v", err)
	}
}

func TestFailedMigrationLeavesVersion(t *testing.T) {
	dir := t.TempDir()
	boom := errors.New("boom")
	_, err := Open(dir, []Migration{{Name: "bad", Up: func(tx *bolt.Tx) error { _, _ = tx.CreateBucket([]byte("x")); return boom }}})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, _ := s.SchemaVersion(); v != 0 {
		t.Fatalf("version %d after a failed migration", v)
	}
	_ = s.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("x")) != nil {
			t.Error("failed migration's bucket was kept")
		}
		return nil
	})
}
