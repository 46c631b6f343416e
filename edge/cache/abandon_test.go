package cache_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/cache"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/edge/metricstest"
	"github.com/campusedge/campusedge/sync/catalog"
)

// TestLANFillStopsWhenReadersLeave is issue 14 finding 7: an
// unauthenticated GET /media/{id} started a whole download from the hub
// that went on after the client left, so anyone on the LAN could make the
// edge pull the catalogue over the WAN. Now a fill only LAN readers wanted
// stops when the last one has left; each client has a budget of uncached
// reads; both show in /metrics.
func TestLANFillStopsWhenReadersLeave(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	os.MkdirAll(in, 0o700)
	for i := range 6 {
		os.WriteFile(filepath.Join(in, fmt.Sprintf("lesson-%d.mp4", i)), randBytes(4<<20), 0o600)
	}
	h := newHub(t, filepath.Join(root, "hub"))
	var items []media.Item
	if err := h.store.Import(in, func(im catalog.Imported) { items = append(items, im.Item) }); err != nil {
		t.Fatal(err)
	}
	// Every item's first hub response is held after 1 MiB, a thin WAN.
	gate := make(chan struct{})
	var closeGate sync.Once
	t.Cleanup(func() { closeGate.Do(func() { close(gate) }) })
	h.mu.Lock()
	for _, it := range items {
		h.gate[it.ID], h.gateAt[it.ID] = gate, 1<<20
	}
	h.mu.Unlock()
	e := startEdge(t, filepath.Join(root, "edge"), h.srv.URL)
	e.waitSynced(t, len(items))

	// A client opens an uncached item, reads a little and leaves.
	left := items[0]
	resp, err := http.Get(e.url + "/media/" + left.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	deadline := time.Now().Add(20 * time.Second)
	for e.state(t, left.ID).Downloading {
		if time.Now().After(deadline) {
			t.Fatal("the download went on after its only reader left")
		}
		time.Sleep(100 * time.Millisecond)
	}
	closeGate.Do(func() { close(gate) })
	time.Sleep(500 * time.Millisecond)
	if st := e.state(t, left.ID); st.State == cache.Cached || st.Downloading {
		t.Fatalf("after its reader left the item is %+v", st)
	}
	if _, _, sent := h.count(left.ID); sent >= left.Size {
		t.Fatalf("the hub sent the whole item (%d bytes) for a reader that read 1000", sent)
	}
	// It resumes from the partial file for the next reader.
	if r := get(t, "GET", e.url+"/media/"+left.ID); r.status != 200 || int64(len(r.body)) != left.Size {
		t.Fatalf("next reader: %d, %d bytes", r.status, len(r.body))
	}

	// Budget: one client streams at most MaxUncachedReadsPerClient uncached items at once.
	gate2 := make(chan struct{})
	var close2 sync.Once
	defer close2.Do(func() { close(gate2) })
	h.mu.Lock()
	for _, it := range items[1:] {
		h.gate[it.ID], h.gateAt[it.ID], h.gets[it.ID] = gate2, 1<<20, 0
	}
	h.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, it := range items[1 : 1+cache.MaxUncachedReadsPerClient] {
		req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/media/"+it.ID, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("uncached read within the budget: %v %v", err, resp)
		}
		defer resp.Body.Close()
	}
	r := get(t, "GET", e.url+"/media/"+items[1+cache.MaxUncachedReadsPerClient].ID)
	if r.status != http.StatusTooManyRequests || !strings.Contains(string(r.body), cache.CodeUncachedBudget) {
		t.Fatalf("uncached read %d at once: %d %s", cache.MaxUncachedReadsPerClient+1, r.status, r.body)
	}
	m, err := metricstest.Read(context.Background(), http.DefaultClient, e.url)
	if err != nil {
		t.Fatal(err)
	}
	if m["campusedge_media_downloads_abandoned_total"] < 1 || m["campusedge_media_uncached_budget_refusals_total"] < 1 {
		t.Fatalf("metrics: abandoned %v, over budget %v", m["campusedge_media_downloads_abandoned_total"], m["campusedge_media_uncached_budget_refusals_total"])
	}
}
