package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/media"
)

// mediaServer serves c's /media route the way the edge registers it.
func mediaServer(t *testing.T, c *Cache) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /media/{id}", c.serveMedia)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

type mediaAnswer struct {
	status int
	header http.Header
	body   []byte
}

func getMedia(t *testing.T, url string, hdr ...string) mediaAnswer {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mediaAnswer{resp.StatusCode, resp.Header, b}
}

// openBlobFDs counts this process's descriptors open on path (also after
// path was unlinked: the kernel then names it "path (deleted)").
func openBlobFDs(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.TrimSuffix(target, " (deleted)") == path {
			n++
		}
	}
	return n
}

// TestMediaEvictionClosesKeptHandles serves a blob (its handle is kept
// for the next request), evicts it through the quota, and checks that the
// kept handle is closed with the removal (the disk space comes back), that
// the evicted item is not served from a handle any more, and that the blob
// fetched again is served.
func TestMediaEvictionClosesKeptHandles(t *testing.T) {
	db := openDB(t)
	c, err := New(Config{DB: db, DataDir: t.TempDir(), Logger: testLog(t), Quota: 3000})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	old := rnd(1000)
	it := putBlob(t, c, "lesson1", old, time.Now().Add(-time.Hour))
	srv := mediaServer(t, c)
	for range 2 {
		if a := getMedia(t, srv.URL+"/media/lesson1"); a.status != 200 || !bytes.Equal(a.body, old) {
			t.Fatalf("GET: %d, %d bytes", a.status, len(a.body))
		}
	}
	path := c.layout.blobPath(it)
	if n := openBlobFDs(t, path); n != 1 {
		t.Fatalf("%d handles kept open on the served blob; want 1", n)
	}
	// The client has the whole body a moment before the handler stops
	// counting itself a reader of the blob (a blob being read is never
	// evicted): wait for that, bounded.
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		c.space.mu.Lock()
		n := c.space.readers[it.SHA256]
		c.space.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("%d readers of the blob 5 s after the last response", n)
		}
	}
	next := media.Item{ID: "next", Size: 2500, SHA256: strings.Repeat("b", 64)}
	if err := c.space.makeRoom(next, next.Size); err != nil {
		t.Fatal(err)
	}
	c.space.release(next.ID)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the blob was not evicted: %v", err)
	}
	if n := openBlobFDs(t, path); n != 0 {
		t.Fatalf("%d handles still open on the evicted blob: its space is not freed", n)
	}
	// Not cached, no hub: the edge says so rather than serve a handle.
	if a := getMedia(t, srv.URL+"/media/lesson1"); a.status != http.StatusServiceUnavailable {
		t.Fatalf("GET of the evicted item: %d %q", a.status, a.body)
	}
	// Fetched again (same content address): served again.
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if a := getMedia(t, srv.URL+"/media/lesson1"); a.status != 200 || !bytes.Equal(a.body, old) {
		t.Fatalf("GET after the fetch: %d, %d bytes", a.status, len(a.body))
	}
}

// TestBlobFilesRevalidate replaces a blob's file behind the cache's back:
// within revalidateAfter the kept handle may still serve (it holds the
// same content address), after it the new file is opened and the old
// handles are closed; a file of the wrong size is refused.
func TestBlobFilesRevalidate(t *testing.T) {
	dir := t.TempDir()
	path := func(sum string) string { return filepath.Join(dir, sum) }
	b := newBlobFiles(path)
	now := time.Now()
	b.now = func() time.Time { return now }
	sum := strings.Repeat("a", 64)
	if err := os.WriteFile(path(sum), []byte("first copy"), 0o600); err != nil {
		t.Fatal(err)
	}
	read := func() (string, error) {
		h, err := b.open(sum, 10)
		if err != nil {
			return "", err
		}
		defer b.put(h)
		got, err := io.ReadAll(h.File)
		return string(got), err
	}
	if got, err := read(); err != nil || got != "first copy" {
		t.Fatalf("first read: %q %v", got, err)
	}
	// Another file under the name (written aside and renamed, as blobs are).
	tmp := path("tmp")
	if err := os.WriteFile(tmp, []byte("other copy"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path(sum)); err != nil {
		t.Fatal(err)
	}
	if got, err := read(); err != nil || got != "first copy" {
		t.Fatalf("read within %v: %q %v (the kept handle serves its own file)", revalidateAfter, got, err)
	}
	now = now.Add(revalidateAfter + time.Millisecond)
	if got, err := read(); err != nil || got != "other copy" {
		t.Fatalf("read after %v: %q %v; want the file now at the path", revalidateAfter, got, err)
	}
	if n := openBlobFDs(t, path(sum)); n != 1 {
		t.Fatalf("%d handles open on the blob's path; want only the new file's", n)
	}
	// Truncated: refused once revalidated.
	if err := os.WriteFile(path(sum), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	now = now.Add(revalidateAfter + time.Millisecond)
	if got, err := read(); err == nil {
		t.Fatalf("read of a 5-byte file for a 10-byte blob: %q, no error", got)
	}
	// Deleted behind the cache's back (not by eviction): once revalidated,
	// the idle handles go, so the file's disk space comes back.
	if err := os.WriteFile(path(sum), []byte("third copy"), 0o600); err != nil {
		t.Fatal(err)
	}
	now = now.Add(revalidateAfter + time.Millisecond)
	if got, err := read(); err != nil || got != "third copy" {
		t.Fatalf("read of the third copy: %q %v", got, err)
	}
	if err := os.Remove(path(sum)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(revalidateAfter + time.Millisecond)
	if _, err := read(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read of a deleted blob: %v, want not-exist", err)
	}
	if n := openBlobFDs(t, path(sum)); n != 0 {
		t.Fatalf("%d handles still open on the deleted blob", n)
	}
	if err := b.closeAll(); err != nil {
		t.Fatal(err)
	}
	if n := openBlobFDs(t, path(sum)); n != 0 {
		t.Fatalf("%d handles open after closeAll", n)
	}
}

// TestBlobFilesBounded keeps more blobs than the bound: the least recently
// used handles are closed, never more than maxIdle stay open.
func TestBlobFilesBounded(t *testing.T) {
	dir := t.TempDir()
	path := func(sum string) string { return filepath.Join(dir, sum) }
	b := newBlobFiles(path)
	b.maxIdle = 3
	sums := make([]string, 6)
	for i := range sums {
		sums[i] = fmt.Sprintf("%064d", i)
		if err := os.WriteFile(path(sums[i]), []byte("content"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range sums {
		h, err := b.open(s, 7)
		if err != nil {
			t.Fatal(err)
		}
		b.put(h)
	}
	open := 0
	for i, s := range sums {
		n := openBlobFDs(t, path(s))
		open += n
		if i >= 3 && n != 1 {
			t.Errorf("recently used blob %d has %d kept handles; want 1", i, n)
		}
	}
	if open != 3 || b.idle != 3 {
		t.Fatalf("%d handles open (%d counted idle); want the bound, 3", open, b.idle)
	}
}

// TestMediaCatalogueChangeServedAtOnce syncs a new version of an item's
// record (another title and type) from a hub after the item was served:
// the next answer carries the new headers, not the remembered ones.
func TestMediaCatalogueChangeServedAtOnce(t *testing.T) {
	content := []byte("%PDF-1.4 lesson notes")
	sum := sha256.Sum256(content)
	v1 := media.Item{ID: "r" + hex.EncodeToString(sum[:])[:20], Title: "第一课", MIME: "video/mp4", Size: int64(len(content)), SHA256: hex.EncodeToString(sum[:]), Seq: 1}
	v2 := v1
	v2.Title, v2.MIME, v2.Seq = "第一课 讲义", "application/pdf", 2
	var page atomic.Pointer[media.Changes]
	page.Store(&media.Changes{Items: []media.Item{v1}, Next: "1"})
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		since, _ := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
		p := *page.Load()
		if next, _ := strconv.ParseUint(p.Next, 10, 64); next <= since {
			p = media.Changes{Items: []media.Item{}, Next: strconv.FormatUint(since, 10)}
		}
		_ = json.NewEncoder(w).Encode(p)
	}))
	defer hub.Close()
	c, err := New(Config{DB: openDB(t), DataDir: t.TempDir(), Hub: hub.URL, Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.SyncOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	p := c.layout.blobPath(v1)
	os.MkdirAll(filepath.Dir(p), 0o700)
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := mediaServer(t, c)
	a := getMedia(t, srv.URL+"/media/"+v1.ID)
	if a.status != 200 || a.header.Get("Content-Type") != "video/mp4" || a.header.Get("Content-Disposition") != "" {
		t.Fatalf("v1: %d %v", a.status, a.header)
	}
	page.Store(&media.Changes{Items: []media.Item{v2}, Next: "2"})
	if n, err := c.SyncOnce(t.Context()); err != nil || n != 1 {
		t.Fatalf("sync of v2: %d items, %v", n, err)
	}
	a = getMedia(t, srv.URL+"/media/"+v1.ID)
	if a.status != 200 || a.header.Get("Content-Type") != "application/pdf" || !strings.Contains(a.header.Get("Content-Disposition"), "attachment") || !bytes.Equal(a.body, content) {
		t.Fatalf("after the catalogue changed: %d %v", a.status, a.header)
	}
}

// TestMediaConcurrentServeEvictRefetch serves two items to many clients
// at once (whole files, ranges, conditional requests) while one of them is
// evicted through the quota and fetched again, over and over, and the
// catalogue changes under it. Every answer is checked against the content
// its ETag names: never a byte of anything else. Run it with -race.
func TestMediaConcurrentServeEvictRefetch(t *testing.T) {
	db := openDB(t)
	c, err := New(Config{DB: db, DataDir: t.TempDir(), Logger: testLog(t), Quota: 300_000})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	contents := map[string][]byte{}
	var items []media.Item
	for _, id := range []string{"hot", "warm"} {
		b := rnd(100_000)
		it := putBlob(t, c, id, b, time.Now().Add(-time.Hour))
		contents[media.ETag(it.SHA256)] = b
		items = append(items, it)
	}
	srv := mediaServer(t, c)
	client := &http.Client{Timeout: 20 * time.Second}
	stop := make(chan struct{})
	var evictions atomic.Int32
	var churn sync.WaitGroup
	churn.Go(func() {
		next := media.Item{ID: "next", Size: 150_000, SHA256: strings.Repeat("b", 64)}
		for i := 0; i < 2000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if c.space.makeRoom(next, next.Size) == nil {
				c.space.release(next.ID)
			}
			for _, it := range items {
				p := c.layout.blobPath(it)
				if _, err := os.Stat(p); os.IsNotExist(err) {
					evictions.Add(1)
					tmp := p + ".tmp"
					if err := os.WriteFile(tmp, contents[media.ETag(it.SHA256)], 0o600); err != nil {
						t.Error(err)
						return
					}
					if err := os.Rename(tmp, p); err != nil {
						t.Error(err)
						return
					}
				}
			}
			c.served.changed()
			time.Sleep(time.Millisecond)
		}
	})
	var served, refused atomic.Int32
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range 60 {
				it := items[r.IntN(len(items))]
				req, _ := http.NewRequest("GET", srv.URL+"/media/"+it.ID, nil)
				var lo, hi int
				switch r.IntN(3) {
				case 1:
					lo = r.IntN(90_000)
					hi = lo + r.IntN(10_000)
					req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", lo, hi))
				case 2:
					req.Header.Set("If-None-Match", media.ETag(it.SHA256))
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Error(err)
					return
				}
				want, ok := contents[resp.Header.Get("ETag")]
				switch {
				case resp.StatusCode == 200 && ok && bytes.Equal(body, want):
				case resp.StatusCode == 206 && ok && bytes.Equal(body, want[lo:hi+1]):
				case resp.StatusCode == 304 && len(body) == 0:
				case resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusInternalServerError:
					// Evicted at that moment and no hub to fetch from.
					refused.Add(1)
					continue
				default:
					t.Errorf("GET %s (%v): %d ETag %q, %d bytes that are not its content", it.ID, req.Header, resp.StatusCode, resp.Header.Get("ETag"), len(body))
					return
				}
				served.Add(1)
			}
		})
	}
	wg.Wait()
	close(stop)
	churn.Wait()
	t.Logf("%d answers checked, %d refused while evicted, %d evictions", served.Load(), refused.Load(), evictions.Load())
	if evictions.Load() == 0 || served.Load() < 16*60/2 {
		t.Fatalf("the test did not exercise eviction under load: %d evictions, %d answers", evictions.Load(), served.Load())
	}
}
