package cache_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/cache"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/sync/catalog"
)

func importFiles(t *testing.T, h *hub, dir string, files map[string][]byte) map[string]media.Item {
	t.Helper()
	os.MkdirAll(dir, 0o700)
	for n, b := range files {
		os.WriteFile(filepath.Join(dir, n), b, 0o600)
	}
	items := map[string]media.Item{}
	if err := h.store.Import(dir, func(im catalog.Imported) { items[filepath.Base(im.Path)] = im.Item }); err != nil {
		t.Fatal(err)
	}
	return items
}

func (e *edge) waitSynced(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.catalog(t, "").Total != n {
		if time.Now().After(deadline) {
			t.Fatal("catalogue not synced")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPrefetchConcurrencyAndRetry pins three items whose hub responses
// are held: only two downloads may run at once. A fourth item fails twice
// at the hub (503) and is fetched on retry.
func TestPrefetchConcurrencyAndRetry(t *testing.T) {
	root := t.TempDir()
	h := newHub(t, filepath.Join(root, "hub"))
	files := map[string][]byte{"a.mp4": randBytes(300_000), "b.mp4": randBytes(300_000), "c.mp4": randBytes(300_000), "flaky.mp4": randBytes(200_000)}
	items := importFiles(t, h, filepath.Join(root, "in"), files)
	gate := make(chan struct{})
	h.mu.Lock()
	for _, n := range []string{"a.mp4", "b.mp4", "c.mp4"} {
		h.gate[items[n].ID], h.gateAt[items[n].ID] = gate, 1000
	}
	h.failN[items["flaky.mp4"].ID] = 2
	h.mu.Unlock()
	e := startEdge(t, filepath.Join(root, "edge"), h.srv.URL)
	e.waitSynced(t, len(files))
	for _, n := range []string{"a.mp4", "b.mp4", "c.mp4"} {
		e.do(t, "PUT", "/api/v1/cache/pins/"+items[n].ID, nil, 200, nil)
	}
	started := func() int {
		s := 0
		for _, n := range []string{"a.mp4", "b.mp4", "c.mp4"} {
			g, _, _ := h.count(items[n].ID)
			s += g
		}
		return s
	}
	deadline := time.Now().Add(10 * time.Second)
	for started() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("prefetch did not start two downloads")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // room for a wrong third start
	if n := started(); n != 2 {
		t.Fatalf("%d downloads running; the bound is 2", n)
	}
	st := e.status(t)
	if st.Prefetch.Active != 2 || st.Prefetch.Wanted != 3 {
		t.Fatalf("progress while held: %+v", st.Prefetch)
	}
	close(gate)
	e.waitFor(t, "all pins cached", func(st cache.Status) bool { return st.Prefetch.Cached == 3 })
	if n := started(); n != 3 {
		t.Fatalf("hub saw %d GETs for three items", n)
	}
	e.do(t, "PUT", "/api/v1/cache/pins/"+items["flaky.mp4"].ID, nil, 200, nil)
	e.waitFor(t, "flaky item cached after retries", func(st cache.Status) bool { return st.Prefetch.Cached == 4 })
	if g, _, _ := h.count(items["flaky.mp4"].ID); g != 3 {
		t.Fatalf("flaky item: %d GETs, want 2 refused + 1", g)
	}
}

// TestBandwidthCap downloads through the edge with a 8 Mbit/s cap in
// force all day: 2 MiB cannot arrive in less than about 2 s.
func TestBandwidthCap(t *testing.T) {
	root := t.TempDir()
	h := newHub(t, filepath.Join(root, "hub"))
	want := randBytes(2 << 20)
	items := importFiles(t, h, filepath.Join(root, "in"), map[string][]byte{"x.mp4": want})
	e := startEdge(t, filepath.Join(root, "edge"), h.srv.URL, func(c *config.Config) { c.CacheBandwidth = "00:00-24:00=8M,default=unlimited" })
	e.waitSynced(t, 1)
	if st := e.status(t); st.Bandwidth.NowBps != 8_000_000 || !strings.HasPrefix(st.Bandwidth.Schedule, "00:00-24:00=8000000") {
		t.Fatalf("bandwidth %+v", st.Bandwidth)
	}
	start := time.Now()
	r := get(t, "GET", e.url+"/media/"+items["x.mp4"].ID)
	took := time.Since(start)
	if r.status != 200 || !bytes.Equal(r.body, want) {
		t.Fatalf("GET: %d", r.status)
	}
	// 1 MB/s with a 64 KiB burst: at least (2 MiB - 64 KiB) / 1 MB/s.
	if floor := time.Duration(float64((2<<20)-(64<<10)) / 1e6 * float64(time.Second)); took < floor {
		t.Fatalf("2 MiB took %v under an 8 Mbit/s cap; the cap allows no less than %v", took, floor)
	}
	t.Logf("2 MiB under an 8 Mbit/s cap took %v", took)
}
