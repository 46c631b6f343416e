package cache

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/sync/catalog"
)

func testLog(t *testing.T) *slog.Logger { return slog.New(slog.NewTextHandler(t.Output(), nil)) }

func openDB(t *testing.T) *bolt.DB {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "edge.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := Migrate(tx); err != nil {
			return err
		}
		return MigratePolicy(tx)
	}); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestSyncIncrementalAndHostileHub(t *testing.T) {
	dir := t.TempDir()
	hs, err := catalog.Open(filepath.Join(dir, "hub"))
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	in := filepath.Join(dir, "in")
	os.MkdirAll(in, 0o700)
	for i, name := range []string{"a.mp4", "b.mp4", "c.pdf"} {
		os.WriteFile(filepath.Join(in, name), []byte{byte(i), 1, 2, 3}, 0o600)
	}
	if err := hs.Import(in, nil); err != nil {
		t.Fatal(err)
	}
	var hostile atomic.Bool
	var requests atomic.Int32
	inner := catalog.Handler(hs, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if hostile.Load() {
			w.Write([]byte(`{"items":[{"id":"../../etc/passwd","title":"x","mime":"a/b","size":1,"sha256":"00","seq":99}],"next":"99"}`))
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer srv.Close()

	c, err := New(Config{DB: openDB(t), DataDir: dir, Hub: srv.URL, Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if n, err := c.SyncOnce(ctx); err != nil || n != 3 {
		t.Fatalf("first sync: %d, %v", n, err)
	}
	if n, err := c.SyncOnce(ctx); err != nil || n != 0 {
		t.Fatalf("second sync: %d, %v (want no changes)", n, err)
	}
	os.WriteFile(filepath.Join(in, "d.mp4"), []byte("new"), 0o600)
	if err := hs.Import(in, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := c.SyncOnce(ctx); err != nil || n != 1 {
		t.Fatalf("sync after import: %d, %v (want exactly the new item)", n, err)
	}
	if cur, _ := c.index.cursor(); cur != 4 {
		t.Fatalf("cursor %d, want 4", cur)
	}

	hostile.Store(true)
	if _, err := c.SyncOnce(ctx); err == nil {
		t.Fatal("hostile page accepted")
	}
	if cur, _ := c.index.cursor(); cur != 4 {
		t.Fatalf("cursor moved to %d on a refused page", cur)
	}
	if _, ok, _ := c.index.item("../../etc/passwd"); ok {
		t.Fatal("hostile item stored")
	}
	lastErr := c.index.status().LastError
	if lastErr == "" {
		t.Fatal("sync error not reported")
	}

	// The loop backs off on failure instead of hammering the hub.
	requests.Store(0)
	c2, _ := New(Config{DB: openDB(t), DataDir: t.TempDir(), Hub: srv.URL, SyncInterval: time.Millisecond, Logger: testLog(t)})
	lctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	c2.Start(lctx)
	<-lctx.Done()
	c2.Close()
	cancel()
	if n := requests.Load(); n < 1 || n > 3 {
		t.Fatalf("%d requests in 1.5s against a failing hub; want 1-3 (backoff 1s, 2s, …)", n)
	}
}

func TestReconcileRemovesOrphanPartials(t *testing.T) {
	db := openDB(t)
	dir := t.TempDir()
	it := media.Item{ID: "r1", Title: "t", MIME: "video/mp4", Size: 10, SHA256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", Seq: 1}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, _ := json.Marshal(it)
		return tx.Bucket(BucketItems).Put([]byte(it.ID), b)
	}); err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(dir, "blobs", "partial")
	os.MkdirAll(filepath.Join(part, "sub.part"), 0o700)
	files := map[string]int{"r1.part": 5, "gone.part": 5, "junk": 1}
	for name, n := range files {
		os.WriteFile(filepath.Join(part, name), make([]byte, n), 0o600)
	}
	c, err := New(Config{DB: db, DataDir: dir, Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	ents, _ := os.ReadDir(part)
	if len(ents) != 1 || ents[0].Name() != "r1.part" {
		t.Fatalf("left %v, want only r1.part", ents)
	}
	if st, n := c.layout.state(it); st != Partial || n != 5 {
		t.Fatalf("state %s %d", st, n)
	}
	// Too long for its item: removed.
	os.WriteFile(filepath.Join(part, "r1.part"), make([]byte, 11), 0o600)
	c, _ = New(Config{DB: db, DataDir: dir, Logger: testLog(t)})
	c.Close()
	if st, _ := c.layout.state(it); st != Missing {
		t.Fatalf("overlong partial kept: %s", st)
	}
}
