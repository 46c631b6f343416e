package cache

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/media"
)

// putBlob stores content as a verified blob and a catalogue item.
func putBlob(t *testing.T, c *Cache, id string, content []byte, used time.Time) media.Item {
	t.Helper()
	h := sha256.Sum256(content)
	it := media.Item{ID: id, Title: id, MIME: "video/mp4", Size: int64(len(content)), SHA256: hex.EncodeToString(h[:]), Seq: 1}
	p := media.BlobPath(c.layout.blobs, it.SHA256)
	os.MkdirAll(filepath.Dir(p), 0o700)
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, used, used)
	putItem(t, c.cfg.DB, it)
	return it
}

func putItem(t *testing.T, db *bolt.DB, it media.Item) {
	t.Helper()
	v, _ := json.Marshal(it)
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(BucketItems).Put([]byte(it.ID), v) }); err != nil {
		t.Fatal(err)
	}
}

func rnd(n int) []byte { b := make([]byte, n); rand.Read(b); return b }

// TestEvictionSparesReadersAndPins checks the eviction order: least
// recently used first, never a blob being read, never a pinned one.
func TestEvictionSparesReadersAndPins(t *testing.T) {
	db := openDB(t)
	c, err := New(Config{DB: db, DataDir: t.TempDir(), Logger: testLog(t), Quota: 4000})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	base := time.Now().Add(-time.Hour)
	oldest := putBlob(t, c, "oldest", rnd(1000), base)
	pinned := putBlob(t, c, "pinned", rnd(1000), base.Add(time.Minute))
	middle := putBlob(t, c, "middle", rnd(1000), base.Add(2*time.Minute))
	newest := putBlob(t, c, "newest", rnd(1000), base.Add(3*time.Minute))
	if _, err := c.SetPin("pinned", "test"); err != nil {
		t.Fatal(err)
	}
	c.space.reading(oldest.SHA256, 1) // a classroom is watching it
	next := media.Item{ID: "next", Size: 1500, SHA256: strings.Repeat("b", 64)}
	if err := c.space.makeRoom(next, next.Size); err != nil {
		t.Fatal(err)
	}
	gone := func(it media.Item) bool {
		_, err := os.Stat(c.layout.blobPath(it))
		return errors.Is(err, os.ErrNotExist)
	}
	// 4000 used + 1500 > 4000: two blobs must go; oldest is read and
	// pinned is pinned, so middle and newest go.
	if gone(oldest) || gone(pinned) || !gone(middle) || !gone(newest) {
		t.Fatalf("after eviction: oldest gone %v, pinned gone %v, middle gone %v, newest gone %v", gone(oldest), gone(pinned), gone(middle), gone(newest))
	}
	c.space.release("next")
	// Nothing else can go: a download that needs more fails clearly.
	big := media.Item{ID: "big", Size: 2500, SHA256: strings.Repeat("c", 64)}
	err = c.space.makeRoom(big, big.Size)
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "quota") {
		t.Fatalf("makeRoom beyond quota: %v", err)
	}
	if gone(oldest) || gone(pinned) {
		t.Fatal("a read or pinned blob was evicted")
	}
	c.space.reading(oldest.SHA256, -1)
	if err := c.space.makeRoom(big, big.Size); err != nil {
		t.Fatalf("after the reader left: %v", err)
	}
	if !gone(oldest) || gone(pinned) {
		t.Fatal("want oldest evicted now, pinned kept")
	}
}

// TestFreeSpaceCheckedBeforeDownload uses a real 8 MiB tmpfs: a download
// larger than the free space fails at once with a clear error and no
// request to the hub.
func TestFreeSpaceCheckedBeforeDownload(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to mount a tmpfs (CI=true: refusing to skip)")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	db := openDB(t)
	c, err := New(Config{DB: db, DataDir: dir, Logger: testLog(t), Hub: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	it := media.Item{ID: "huge", Title: "huge", MIME: "video/mp4", Size: 64 << 20, SHA256: strings.Repeat("d", 64), Seq: 1}
	putItem(t, db, it)
	start := time.Now()
	err = c.Ensure(t.Context(), it)
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "free disk space") {
		t.Fatalf("Ensure on a full disk: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("took %v: the job must fail at once, not hang", time.Since(start))
	}
	if _, err := os.Stat(c.layout.partialPath("huge")); err == nil {
		if fi, _ := os.Stat(c.layout.partialPath("huge")); fi.Size() > 0 {
			t.Fatal("bytes were written")
		}
	}
}

// TestReconcileBlobs checks start-up: orphan and damaged blobs and temp
// files are removed, a missing blob shows as not cached, and a partial
// file is never reported as cached.
func TestReconcileBlobs(t *testing.T) {
	db := openDB(t)
	dir := t.TempDir()
	c, err := New(Config{DB: db, DataDir: dir, Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	good := putBlob(t, c, "good", rnd(500), time.Now())
	torn := putBlob(t, c, "torn", rnd(500), time.Now())
	os.Truncate(c.layout.blobPath(torn), 100)
	orphan := rnd(300)
	h := sha256.Sum256(orphan)
	orphanPath := media.BlobPath(c.layout.blobs, hex.EncodeToString(h[:]))
	os.MkdirAll(filepath.Dir(orphanPath), 0o700)
	os.WriteFile(orphanPath, orphan, 0o600)
	junk := filepath.Join(c.layout.blobs, "sha256", "zz", "not-a-sum")
	os.MkdirAll(filepath.Dir(junk), 0o700)
	os.WriteFile(junk, []byte("x"), 0o600)
	os.WriteFile(filepath.Join(c.layout.blobs, "tmp", "upload-123"), []byte("half an upload"), 0o600)
	missing := media.Item{ID: "missing", Title: "m", MIME: "video/mp4", Size: 10, SHA256: strings.Repeat("e", 64), Seq: 1}
	putItem(t, db, missing)
	partial := media.Item{ID: "partial", Title: "p", MIME: "video/mp4", Size: 1000, SHA256: strings.Repeat("f", 64), Seq: 1}
	putItem(t, db, partial)
	os.WriteFile(c.layout.partialPath("partial"), rnd(1000), 0o600) // complete length, unverified
	c.Close()

	c, err = New(Config{DB: db, DataDir: dir, Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for p, want := range map[string]bool{c.layout.blobPath(good): true, c.layout.blobPath(torn): false, orphanPath: false, junk: false, filepath.Join(c.layout.blobs, "tmp", "upload-123"): false, c.layout.partialPath("partial"): true} {
		_, err := os.Stat(p)
		if (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", p, err == nil, want)
		}
	}
	for it, want := range map[media.Item]State{good: Cached, torn: Missing, missing: Missing, partial: Partial} {
		if st, _ := c.layout.state(it); st != want {
			t.Errorf("%s: state %s, want %s", it.ID, st, want)
		}
	}
}

func TestPrunePastTimetable(t *testing.T) {
	db := openDB(t)
	c, err := New(Config{DB: db, DataDir: t.TempDir(), Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	now := time.Now()
	err = c.PutTimetable([]TimetableEntry{
		{ID: "old", Start: now.Add(-8 * 24 * time.Hour), Resources: []string{"r1"}},
		{ID: "yesterday", Start: now.Add(-24 * time.Hour), Resources: []string{"r1"}},
		{ID: "soon", Start: now.Add(time.Hour), Resources: []string{"r1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.policy.prunePast(now.Add(-pastKeep)); err != nil || n != 1 {
		t.Fatalf("pruned %d (%v), want 1", n, err)
	}
	tt, _ := c.Timetable()
	if len(tt) != 2 || tt[0].ID != "yesterday" || tt[1].ID != "soon" {
		t.Fatalf("left %+v", tt)
	}
}

// TestHostileHubRunsOutOfAttempts serves a short body without a length
// (chunked) and refuses every resume: the download must end with an
// error after a bounded number of requests, not loop.
func TestHostileHubRunsOutOfAttempts(t *testing.T) {
	content := rnd(100_000)
	h := sha256.Sum256(content)
	it := media.Item{ID: "short", Title: "s", MIME: "video/mp4", Size: int64(len(content)), SHA256: hex.EncodeToString(h[:]), Seq: 1}
	var mu sync.Mutex
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		mu.Unlock()
		if r.Header.Get("Range") != "" {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		w.Write(content[:50_000]) // no Content-Length: chunked, ends cleanly
		w.(http.Flusher).Flush()
	}))
	defer srv.Close()
	db := openDB(t)
	c, err := New(Config{DB: db, DataDir: t.TempDir(), Logger: testLog(t), Hub: srv.URL, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	putItem(t, db, it)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = c.Ensure(ctx, it)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("Ensure: %v (ctx %v); want a download error", err, ctx.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	if requests > 2*maxAttempts+2 {
		t.Fatalf("%d hub requests: the retry budget was not bounded", requests)
	}
	if st, _ := c.layout.state(it); st == Cached {
		t.Fatal("short content marked cached")
	}
	t.Logf("gave up after %d requests: %v", requests, err)
}

// TestMaxDownloadsQueuesTheRest holds the hub's answers: with
// MaxDownloads 1 a second item's download waits for the first.
func TestMaxDownloadsQueuesTheRest(t *testing.T) {
	a, b := rnd(10_000), rnd(10_000)
	items := map[string][]byte{}
	release := make(chan struct{})
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/api/v1/content/")
		mu.Lock()
		seen = append(seen, id)
		mu.Unlock()
		<-release
		w.Write(items[id])
	}))
	defer srv.Close()
	db := openDB(t)
	c, err := New(Config{DB: db, DataDir: t.TempDir(), Logger: testLog(t), Hub: srv.URL, MaxDownloads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var its []media.Item
	for i, content := range [][]byte{a, b} {
		h := sha256.Sum256(content)
		it := media.Item{ID: []string{"ia", "ib"}[i], Title: "x", MIME: "video/mp4", Size: int64(len(content)), SHA256: hex.EncodeToString(h[:]), Seq: 1}
		items[it.ID] = content
		putItem(t, db, it)
		its = append(its, it)
	}
	errs := make(chan error, 2)
	for _, it := range its {
		go func() { errs <- c.Ensure(t.Context(), it) }()
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	n := len(seen)
	mu.Unlock()
	if n != 1 {
		t.Fatalf("%d hub requests running with MaxDownloads 1", n)
	}
	close(release)
	for range its {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
