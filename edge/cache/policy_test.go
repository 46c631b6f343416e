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

// waitFor polls the edge's cache status until ok or 15 s pass.
func (e *edge) waitFor(t *testing.T, what string, ok func(cache.Status) bool) cache.Status {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := e.status(t)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15 s; status %+v", what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func progress(st cache.Status, id string) (cache.ItemProgress, bool) {
	for _, p := range st.Items {
		if p.ID == id {
			return p, true
		}
	}
	return cache.ItemProgress{}, false
}

// TestPrefetchPinsTimetableQuota drives the prefetch policy and the quota
// through the admin API of a real edge against a real hub: pins and
// timetable entries inside the horizon are fetched without any reader,
// entries beyond it are not, the least recently used unprotected item is
// evicted to stay under the quota, and a pin the quota cannot hold is
// refused with a clear error.
func TestPrefetchPinsTimetableQuota(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	os.MkdirAll(in, 0o700)
	const mb = 1 << 20
	files := map[string][]byte{}
	for _, n := range []string{"pinned", "soon", "later", "walkin", "second", "extra"} {
		files[n] = randBytes(mb)
		os.WriteFile(filepath.Join(in, n+".mp4"), files[n], 0o600)
	}
	h := newHub(t, filepath.Join(root, "hub"))
	items := map[string]media.Item{}
	if err := h.store.Import(in, func(im catalog.Imported) {
		items[strings.TrimSuffix(filepath.Base(im.Path), ".mp4")] = im.Item
	}); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, filepath.Join(root, "edge"), h.srv.URL, func(c *config.Config) { c.CacheQuota = "3584K" })
	deadline := time.Now().Add(10 * time.Second)
	for e.catalog(t, "").Total != len(files) {
		if time.Now().After(deadline) {
			t.Fatal("catalogue not synced")
		}
		time.Sleep(20 * time.Millisecond)
	}
	id := func(n string) string { return items[n].ID }
	blob := func(n string) string { return media.BlobPath(filepath.Join(e.data, "blobs"), items[n].SHA256) }
	cached := func(st cache.Status, n string) bool {
		p, ok := progress(st, id(n))
		return ok && p.State == cache.Cached
	}

	// A pin is prefetched with no reader.
	e.do(t, "PUT", "/api/v1/cache/pins/"+id("pinned"), strings.NewReader(`{"by":"Ms Li"}`), 200, nil)
	// Timetable: one lesson in two days (inside the 7-day horizon), one in 30.
	soon := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	later := time.Now().Add(30 * 24 * time.Hour).UTC().Format(time.RFC3339)
	e.do(t, "PUT", "/api/v1/cache/timetable/g7-math-1", strings.NewReader(`{"classroom":"r204","start":"`+soon+`","resources":["`+id("soon")+`"]}`), 200, nil)
	e.do(t, "PUT", "/api/v1/cache/timetable/g7-math-9", strings.NewReader(`{"classroom":"r204","start":"`+later+`","resources":["`+id("later")+`"]}`), 200, nil)
	st := e.waitFor(t, "pin and timetable prefetched", func(st cache.Status) bool {
		return cached(st, "pinned") && cached(st, "soon")
	})
	if st.Prefetch.Wanted != 2 || st.Prefetch.Cached != 2 || st.Prefetch.BytesDone != 2*mb || st.Prefetch.BytesWanted != 2*mb {
		t.Fatalf("prefetch progress %+v", st.Prefetch)
	}
	if p, _ := progress(st, id("soon")); len(p.Reasons) != 1 || p.Reasons[0] != "timetable:g7-math-1" || p.Need.IsZero() {
		t.Fatalf("timetabled item %+v", p)
	}
	if n, _, _ := h.count(id("later")); n != 0 {
		t.Fatalf("an entry 30 days out was fetched (%d GETs)", n)
	}
	for _, n := range []string{"pinned", "soon"} {
		if g, _, _ := h.count(id(n)); g != 1 {
			t.Fatalf("%s fetched %d times", n, g)
		}
	}

	// Read-through of an unprotected item, then another that does not fit
	// the quota (3.5 MiB): the unprotected one goes, pins and timetable stay.
	for _, n := range []string{"walkin", "second"} {
		if r := get(t, "GET", e.url+"/media/"+id(n)); r.status != 200 || !bytes.Equal(r.body, files[n]) {
			t.Fatalf("GET %s: %d", n, r.status)
		}
	}
	if _, err := os.Stat(blob("walkin")); !os.IsNotExist(err) {
		t.Fatalf("walkin should have been evicted: %v", err)
	}
	for _, n := range []string{"pinned", "soon", "second"} {
		if _, err := os.Stat(blob(n)); err != nil {
			t.Fatalf("%s evicted: %v", n, err)
		}
	}
	if m := string(get(t, "GET", e.url+"/metrics").body); !strings.Contains(m, "campusedge_media_evictions_total 1") {
		t.Errorf("eviction not counted in /metrics")
	}
	st = e.status(t)
	if st.Usage.Quota != 3584<<10 || st.Usage.Used != 3*mb || st.Usage.Pinned != 2*mb || st.Usage.Blobs != 3 {
		t.Fatalf("usage %+v", st.Usage)
	}

	// A third protected item still fits (3 MiB): it displaces "second".
	e.do(t, "PUT", "/api/v1/cache/pins/"+id("extra"), nil, 200, nil)
	e.waitFor(t, "extra pinned and fetched", func(st cache.Status) bool { return cached(st, "extra") })
	if _, err := os.Stat(blob("second")); !os.IsNotExist(err) {
		t.Fatalf("second should have been evicted for the pin: %v", err)
	}
	// A fourth does not: clear error, nothing changes.
	var eb struct {
		Error struct{ Code, Message string }
	}
	e.do(t, "PUT", "/api/v1/cache/pins/"+id("walkin"), nil, 507, &eb)
	if eb.Error.Code != "pin_over_quota" || !strings.Contains(eb.Error.Message, "raise -cache-quota") {
		t.Fatalf("pin beyond quota: %+v", eb)
	}
	// Unpin, and the timetable entry can go; bad input is refused.
	e.do(t, "DELETE", "/api/v1/cache/pins/"+id("extra"), nil, 204, nil)
	e.do(t, "DELETE", "/api/v1/cache/pins/"+id("extra"), nil, 404, nil)
	e.do(t, "PUT", "/api/v1/cache/pins/..%2Fx", nil, 400, nil)
	e.do(t, "PUT", "/api/v1/cache/pins/nosuchitem", nil, 404, nil)
	e.do(t, "PUT", "/api/v1/cache/timetable/x1", strings.NewReader(`{"start":"`+soon+`","resources":["../etc"]}`), 400, nil)
	e.do(t, "PUT", "/api/v1/cache/timetable/x1", strings.NewReader(`{"resources":["a"]}`), 400, nil)
	e.do(t, "PUT", "/api/v1/cache/timetable/x1", strings.NewReader(`{"start":"`+soon+`","resources":["a"],"bogus":1}`), 400, nil)
	var tt struct{ Entries []cache.TimetableEntry }
	e.do(t, "GET", "/api/v1/cache/timetable", nil, 200, &tt)
	if len(tt.Entries) != 2 || tt.Entries[0].ID != "g7-math-1" {
		t.Fatalf("timetable %+v", tt)
	}
	e.do(t, "DELETE", "/api/v1/cache/timetable/g7-math-9", nil, 204, nil)

	// The bandwidth schedule can be changed at run time and is reported.
	var bw struct{ Schedule string }
	e.do(t, "PUT", "/api/v1/cache/bandwidth", strings.NewReader(`{"schedule":"07:30-17:00=2M,default=unlimited"}`), 200, &bw)
	if st := e.status(t); st.Bandwidth.Schedule != "07:30-17:00=2000000,default=unlimited" {
		t.Fatalf("schedule %q", st.Bandwidth.Schedule)
	}
	e.do(t, "PUT", "/api/v1/cache/bandwidth", strings.NewReader(`{"schedule":"whenever"}`), 400, nil)
}
