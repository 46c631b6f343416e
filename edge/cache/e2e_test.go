package cache_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campusedge/campusedge/cmd/edged/appliance/appliancetest"
	"github.com/campusedge/campusedge/edge/cache"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/sync/catalog"
)

// hub is a real catalogue origin (sync/catalog's handler over a real store)
// behind a wrapper that counts content requests and injects faults.
type hub struct {
	store *catalog.Store
	srv   *httptest.Server

	mu     sync.Mutex
	gets   map[string]int      // content GETs per id
	ranges map[string][]string // Range header of each GET
	sent   map[string]int64    // body bytes written per id
	cutAt  map[string]int64    // first GET of id is cut after this many bytes
	delay  map[string]time.Duration
	// gate holds the first GET of an id after gateAt bytes until closed.
	gate   map[string]chan struct{}
	gateAt map[string]int64
	// failN answers the first N content GETs of an id with 503.
	failN map[string]int
	// onRequest sees every request (under mu).
	onRequest func(*http.Request)
}

func newHub(t *testing.T, dir string) *hub {
	st, err := catalog.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := &hub{store: st, gets: map[string]int{}, ranges: map[string][]string{}, sent: map[string]int64{}, cutAt: map[string]int64{}, delay: map[string]time.Duration{}, gate: map[string]chan struct{}{}, gateAt: map[string]int64{}, failN: map[string]int{}}
	inner := catalog.Handler(st, slog.New(slog.NewTextHandler(t.Output(), nil)))
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		if h.onRequest != nil {
			h.onRequest(r)
		}
		h.mu.Unlock()
		id, ok := strings.CutPrefix(r.URL.Path, "/api/v1/content/")
		if !ok || r.Method != http.MethodGet {
			inner.ServeHTTP(w, r)
			return
		}
		h.mu.Lock()
		h.gets[id]++
		first := h.gets[id] == 1
		h.ranges[id] = append(h.ranges[id], r.Header.Get("Range"))
		cut, hasCut := h.cutAt[id]
		d := h.delay[id]
		gate, gateAt := h.gate[id], h.gateAt[id]
		fail := h.failN[id] > 0
		if fail {
			h.failN[id]--
		}
		h.mu.Unlock()
		if fail {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		time.Sleep(d)
		cw := &countingWriter{ResponseWriter: w, h: h, id: id, limit: -1}
		if first && hasCut {
			cw.limit = cut
		}
		if first && gate != nil {
			cw.gate, cw.gateAt = gate, gateAt
		}
		inner.ServeHTTP(cw, r)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hub) count(id string) (gets int, ranges []string, sent int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gets[id], append([]string(nil), h.ranges[id]...), h.sent[id]
}

// countingWriter counts body bytes and, with a limit, drops the
// connection after that many (a WAN cut mid-transfer).
type countingWriter struct {
	http.ResponseWriter
	h     *hub
	id    string
	n     int64
	limit int64

	gate   chan struct{}
	gateAt int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.gate != nil && c.n+int64(len(p)) > c.gateAt {
		k := c.gateAt - c.n
		n, err := c.ResponseWriter.Write(p[:k])
		c.add(n)
		if err != nil {
			return n, err
		}
		c.ResponseWriter.(http.Flusher).Flush()
		<-c.gate
		c.gate = nil
		m, err := c.Write(p[k:])
		return n + m, err
	}
	if c.limit >= 0 && c.n+int64(len(p)) > c.limit {
		p = p[:c.limit-c.n]
		n, _ := c.ResponseWriter.Write(p)
		c.add(n)
		c.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // net/http closes the connection
	}
	n, err := c.ResponseWriter.Write(p)
	c.add(n)
	return n, err
}

func (c *countingWriter) add(n int) {
	c.n += int64(n)
	c.h.mu.Lock()
	c.h.sent[c.id] += int64(n)
	c.h.mu.Unlock()
}

type edge struct {
	url, token, data string
	client           *http.Client       // for url; http.DefaultClient when nil
	https            *appliancetest.TLS // edged's HTTPS side
}

func (e *edge) httpClient() *http.Client {
	if e.client != nil {
		return e.client
	}
	return http.DefaultClient
}

// startEdge runs edged in-process on data, syncing with cloud, logging to
// the test's output.
func startEdge(t *testing.T, data, cloud string, tune ...func(*config.Config)) *edge {
	t.Helper()
	cfg := appliancetest.Config(t)
	cfg.DataDir, cfg.Cloud = data, cloud
	for _, f := range tune {
		f(&cfg)
	}
	a := appliancetest.Start(context.Background(), t, cfg, slog.New(slog.NewTextHandler(t.Output(), nil)))
	return &edge{url: a.URL, token: a.Admin, data: data, https: a.HTTPS}
}

func (e *edge) catalog(t *testing.T, q string) cache.CatalogResponse {
	t.Helper()
	req, _ := http.NewRequest("GET", e.url+"/api/v1/catalog?q="+q, nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := e.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("catalog: %s %s", resp.Status, b)
	}
	var c cache.CatalogResponse
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *edge) status(t *testing.T) cache.Status {
	t.Helper()
	var st cache.Status
	e.do(t, "GET", "/api/v1/cache", nil, 200, &st)
	return st
}

// do sends an admin API call and decodes the answer into out (if set).
func (e *edge) do(t *testing.T, method, path string, body io.Reader, want int, out any) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, body)
	req.Header.Set("Authorization", "Bearer "+e.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %s %s (want %d)", method, path, resp.Status, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

func (e *edge) state(t *testing.T, id string) cache.CatalogItem {
	t.Helper()
	for _, it := range e.catalog(t, "").Items {
		if it.ID == id {
			return it
		}
	}
	t.Fatalf("%s not in the edge catalogue", id)
	return cache.CatalogItem{}
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, method, url string, hdr ...string) result {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return result{}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Error(err)
	}
	return result{resp.StatusCode, resp.Header, b}
}

// tryGet is get for requests that may legitimately be cut mid-body.
func tryGet(url string) (result, error) {
	resp, err := http.Get(url)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{resp.StatusCode, resp.Header, b}, err
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestCacheEndToEnd runs a real hub and a real edge (appliance.Run) and
// drives the cache the way LAN clients and the WAN would.
func TestCacheEndToEnd(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	files := map[string][]byte{
		"plain lesson.mp4":  randBytes(2 << 20),
		"popular.mp4":       randBytes(3 << 20),
		"tampered.mp4":      randBytes(1 << 20),
		"short.mp4":         randBytes(1<<20 + 7),
		"resume after.mp4":  randBytes(1<<20 + 5),
		"garbage start.pdf": randBytes(1 << 20),
		"streamed.mp4":      randBytes(3 << 20),
		"课件 页面.html":        []byte(`<script>fetch("/api/v1/classrooms")</script>`),
	}
	os.MkdirAll(in, 0o700)
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(in, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h := newHub(t, filepath.Join(root, "hub"))
	items := map[string]media.Item{} // by file name
	if err := h.store.Import(in, func(im catalog.Imported) { items[filepath.Base(im.Path)] = im.Item }); err != nil {
		t.Fatal(err)
	}
	id := func(name string) string { return items[name].ID }

	// Faults on the hub side.
	tam := items["tampered.mp4"]
	if err := os.WriteFile(media.BlobPath(h.store.BlobRoot(), tam.SHA256), randBytes(int(tam.Size)), 0o600); err != nil {
		t.Fatal(err)
	}
	short := items["short.mp4"]
	if err := os.Truncate(media.BlobPath(h.store.BlobRoot(), short.SHA256), short.Size-1000); err != nil {
		t.Fatal(err)
	}
	h.delay[id("popular.mp4")] = 300 * time.Millisecond // let every client pile up

	e := startEdge(t, filepath.Join(root, "edge"), h.srv.URL)

	// Catalogue sync (the first runs at start-up).
	deadline := time.Now().Add(10 * time.Second)
	for e.catalog(t, "").Total != len(files) {
		if time.Now().After(deadline) {
			t.Fatalf("catalogue not synced in 10s: %+v", e.catalog(t, ""))
		}
		time.Sleep(50 * time.Millisecond)
	}
	c := e.catalog(t, "LESSON")
	if c.Total != 1 || c.Items[0].ID != id("plain lesson.mp4") || c.Items[0].State != cache.Missing || c.Cursor != fmt.Sprint(len(files)) {
		t.Fatalf("search 'LESSON' = %+v", c)
	}
	if r := get(t, "GET", e.url+"/api/v1/catalog"); r.status != 401 {
		t.Fatalf("catalog without token: %d", r.status)
	}

	t.Run("serve and ranges", func(t *testing.T) {
		it, want := items["plain lesson.mp4"], files["plain lesson.mp4"]
		u := e.url + "/media/" + it.ID
		r := get(t, "HEAD", u)
		if r.status != 200 || r.header.Get("Content-Length") != fmt.Sprint(it.Size) || r.header.Get("ETag") != media.ETag(it.SHA256) {
			t.Fatalf("HEAD uncached: %d %v", r.status, r.header)
		}
		if n, _, _ := h.count(it.ID); n != 0 {
			t.Fatalf("HEAD fetched from the hub (%d GETs)", n)
		}
		r = get(t, "GET", u)
		if r.status != 200 || !bytes.Equal(r.body, want) || r.header.Get("Content-Type") != "video/mp4" || r.header.Get("ETag") != media.ETag(it.SHA256) {
			t.Fatalf("GET: %d len %d %v", r.status, len(r.body), r.header)
		}
		if st := e.state(t, it.ID); st.State != cache.Cached || st.Bytes != it.Size {
			t.Fatalf("state after GET = %+v", st)
		}
		n := int(it.Size)
		for rng, wantBody := range map[string][]byte{
			"bytes=0-0":                            want[:1],
			"bytes=-1":                             want[n-1:],
			fmt.Sprintf("bytes=%d-", n-1):          want[n-1:],
			"bytes=1000-1999":                      want[1000:2000],
			"bytes=-5000":                          want[n-5000:],
			fmt.Sprintf("bytes=%d-%d", n-10, n+99): want[n-10:],
		} {
			r := get(t, "GET", u, "Range", rng)
			if r.status != 206 || !bytes.Equal(r.body, wantBody) {
				t.Errorf("Range %s: %d, %d bytes", rng, r.status, len(r.body))
			}
		}
		if r := get(t, "GET", u, "Range", fmt.Sprintf("bytes=%d-", n)); r.status != 416 {
			t.Errorf("out of range: %d, want 416", r.status)
		}
		if r := get(t, "GET", u, "If-None-Match", media.ETag(it.SHA256)); r.status != 304 || len(r.body) != 0 {
			t.Errorf("If-None-Match: %d", r.status)
		}
		if r := get(t, "GET", u, "If-None-Match", `"0000", `+media.ETag(it.SHA256)); r.status != 304 {
			t.Errorf("If-None-Match list: %d", r.status)
		}
		if r := get(t, "GET", u, "If-None-Match", `"0000"`); r.status != 200 || !bytes.Equal(r.body, want) {
			t.Errorf("If-None-Match other tag: %d", r.status)
		}
		if r := get(t, "GET", u, "Range", "bytes=10-19", "If-Range", media.ETag(it.SHA256)); r.status != 206 || !bytes.Equal(r.body, want[10:20]) {
			t.Errorf("If-Range matching: %d", r.status)
		}
		if r := get(t, "GET", u, "Range", "bytes=10-19", "If-Range", `"0000"`); r.status != 200 || !bytes.Equal(r.body, want) {
			t.Errorf("If-Range stale: %d, want the whole file", r.status)
		}
		if r := get(t, "GET", u, "Range", "bytes=0-0", "If-Match", `"0000"`); r.status != 412 {
			t.Errorf("If-Match other tag: %d, want 412", r.status)
		}
		if r := get(t, "HEAD", u); r.status != 200 || r.header.Get("Content-Length") != fmt.Sprint(it.Size) {
			t.Errorf("HEAD cached: %d %v", r.status, r.header)
		}
		if n, _, _ := h.count(it.ID); n != 1 {
			t.Errorf("hub saw %d content GETs, want 1", n)
		}
		m := string(get(t, "GET", e.url+"/metrics").body)
		for _, want := range []string{`campusedge_media_requests_total{outcome="head_uncached"} 1`, `campusedge_media_requests_total{outcome="miss"} 1`, "campusedge_media_upstream_bytes_total " + strconv.FormatFloat(float64(it.Size), 'g', -1, 64)} {
			if !strings.Contains(m, want) {
				t.Errorf("metrics lack %q", want)
			}
		}
		for bad, want := range map[string]int{"/media/..%2Fedge.db": 400, "/media/%2Fetc%2Fpasswd": 400, "/media/a%00b": 400,
			"/media/" + strings.Repeat("a", 65): 400, "/media/A1": 400, "/media/nosuchitem": 404} {
			if r := get(t, "GET", e.url+bad); r.status != want {
				t.Errorf("%s: %d, want %d", bad, r.status, want)
			}
			if r := get(t, "HEAD", e.url+bad); r.status != want {
				t.Errorf("HEAD %s: %d, want %d", bad, r.status, want)
			}
		}
	})

	// The stored-XSS chain: an HTML page in the catalogue must never run as
	// a page of the edge's origin (where the console keeps its token).
	t.Run("an HTML item is a sandboxed download", func(t *testing.T) {
		it := items["课件 页面.html"]
		if it.MIME != "application/octet-stream" {
			t.Fatalf("imported as %q", it.MIME)
		}
		r := get(t, "GET", e.url+"/media/"+it.ID)
		h := r.header
		if r.status != 200 || h.Get("Content-Type") != "application/octet-stream" || h.Get("X-Content-Type-Options") != "nosniff" ||
			h.Get("Content-Security-Policy") != "sandbox" || !strings.HasPrefix(h.Get("Content-Disposition"), "attachment; filename*=utf-8''%E8%AF%BE%E4%BB%B6") {
			t.Fatalf("GET: %d %v", r.status, h)
		}
	})

	t.Run("100 concurrent readers, one upstream fetch", func(t *testing.T) {
		it, want := items["popular.mp4"], files["popular.mp4"]
		var wg sync.WaitGroup
		for i := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i%4 == 0 {
					r := get(t, "GET", e.url+"/media/"+it.ID)
					if r.status != 200 || !bytes.Equal(r.body, want) {
						t.Errorf("reader %d: %d, %d bytes", i, r.status, len(r.body))
					}
					return
				}
				off := i * 20011
				r := get(t, "GET", e.url+"/media/"+it.ID, "Range", fmt.Sprintf("bytes=%d-%d", off, off+4095))
				if r.status != 206 || !bytes.Equal(r.body, want[off:off+4096]) {
					t.Errorf("reader %d: %d, %d bytes", i, r.status, len(r.body))
				}
			}()
		}
		wg.Wait()
		if n, _, sent := h.count(it.ID); n != 1 || sent != it.Size {
			t.Fatalf("hub saw %d content GETs sending %d bytes; want exactly 1 and %d", n, sent, it.Size)
		}
	})

	t.Run("wrong bytes or wrong size are refused", func(t *testing.T) {
		for _, it := range []media.Item{tam, short} {
			// The first GET streams until verification fails: the client
			// either gets an error or a cut body, never the whole thing.
			r, _ := tryGet(e.url + "/media/" + it.ID)
			if r.status == 200 && int64(len(r.body)) >= it.Size {
				t.Fatalf("%s: served whole (%d bytes) although the hub's bytes are wrong", it.Title, len(r.body))
			}
			if r.status != 200 && r.status != 502 {
				t.Fatalf("%s: first GET %d", it.Title, r.status)
			}
			// Later GETs are refused at once, without asking the hub again.
			for try := range 2 {
				r := get(t, "GET", e.url+"/media/"+it.ID)
				var eb struct {
					Error struct{ Code, Message string }
				}
				if err := json.Unmarshal(r.body, &eb); err != nil || r.status != 502 || eb.Error.Code != "upstream_corrupt" || !strings.Contains(eb.Error.Message, it.ID) {
					t.Fatalf("%s try %d: %d %.300q", it.Title, try, r.status, r.body)
				}
			}
			if n, _, _ := h.count(it.ID); n != 1 {
				t.Errorf("%s: hub saw %d GETs; a refused item must not be fetched again at once", it.Title, n)
			}
			st := e.status(t)
			var found bool
			for _, p := range st.Items {
				if p.ID == it.ID {
					found = true
					if !strings.Contains(p.Error, "does not match the catalogue") || p.State != cache.Missing {
						t.Errorf("%s: API shows %+v, want the corruption error and state missing", it.Title, p)
					}
				}
			}
			if !found {
				t.Errorf("%s: not listed in GET /api/v1/cache", it.Title)
			}
			if _, err := os.Stat(media.BlobPath(filepath.Join(e.data, "blobs"), it.SHA256)); !os.IsNotExist(err) {
				t.Errorf("%s: a blob was stored: %v", it.Title, err)
			}
			if r := get(t, "HEAD", e.url+"/media/"+it.ID); r.status != 200 {
				t.Errorf("%s: HEAD %d", it.Title, r.status)
			}
		}
	})

	t.Run("readers get bytes as they arrive", func(t *testing.T) {
		it, want := items["streamed.mp4"], files["streamed.mp4"]
		gate := make(chan struct{})
		h.mu.Lock()
		h.gate[it.ID], h.gateAt[it.ID] = gate, 1<<20
		h.mu.Unlock()
		resp, err := http.Get(e.url + "/media/" + it.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// The hub has sent 1 MiB and waits: the reader must already have
		// (almost) all of it, long before the download ends.
		head := make([]byte, 1<<20-64<<10)
		if _, err := io.ReadFull(resp.Body, head); err != nil {
			t.Fatalf("reading the first bytes while the hub holds the rest: %v", err)
		}
		if _, _, sent := h.count(it.ID); sent != 1<<20 {
			t.Fatalf("hub sent %d bytes, want exactly 1 MiB (gated)", sent)
		}
		if !bytes.Equal(head, want[:len(head)]) {
			t.Fatal("streamed bytes differ")
		}
		close(gate)
		rest, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(append(head, rest...), want) {
			t.Fatalf("rest: %v, total %d bytes", err, len(head)+len(rest))
		}
	})

	t.Run("partial file from a previous run is resumed or discarded", func(t *testing.T) {
		part := func(id string) string { return filepath.Join(e.data, "blobs", "partial", id+".part") }
		good, want := items["resume after.mp4"], files["resume after.mp4"]
		os.WriteFile(part(good.ID), want[:500_000], 0o600)
		if st := e.state(t, good.ID); st.State != cache.Partial || st.Bytes != 500_000 {
			t.Fatalf("state with partial file = %+v", st)
		}
		if r := get(t, "GET", e.url+"/media/"+good.ID); r.status != 200 || !bytes.Equal(r.body, want) {
			t.Fatalf("resume: %d", r.status)
		}
		if _, ranges, sent := h.count(good.ID); len(ranges) != 1 || ranges[0] != "bytes=500000-" || sent != good.Size-500_000 {
			t.Fatalf("resume ranges %q, sent %d", ranges, sent)
		}
		bad, want := items["garbage start.pdf"], files["garbage start.pdf"]
		os.WriteFile(part(bad.ID), randBytes(100_000), 0o600)
		// The reader that was streaming the bad prefix is cut; the next
		// gets the verified file.
		if r, err := tryGet(e.url + "/media/" + bad.ID); err == nil && r.status == 200 && bytes.Equal(r.body, want) {
			t.Log("first reader joined after the restart")
		}
		if r := get(t, "GET", e.url+"/media/"+bad.ID); r.status != 200 || !bytes.Equal(r.body, want) || r.header.Get("Content-Type") != "application/pdf" {
			t.Fatalf("garbage partial: %d %v", r.status, r.header)
		}
		if _, ranges, _ := h.count(bad.ID); len(ranges) != 2 || ranges[0] != "bytes=100000-" || ranges[1] != "" {
			t.Fatalf("garbage partial ranges %q; want a resume, then a fresh download after verification failed", ranges)
		}
		if _, err := os.Stat(part(bad.ID)); !os.IsNotExist(err) {
			t.Errorf("partial file left behind: %v", err)
		}
	})
}
