package termupdate_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/internal/fwtest"
	"github.com/campusedge/campusedge/firmware/release"
	"github.com/campusedge/campusedge/firmware/slot"
	"github.com/campusedge/campusedge/firmware/termimage"
	"github.com/campusedge/campusedge/firmware/termupdate"
)

// TestThirtyTerminalsInstallFromOneEdge: 30 terminals, each with its own
// A/B slots, update from one edge at once; each installs and verifies the
// image in its own slot, and the hub served the image exactly once.
func TestThirtyTerminalsInstallFromOneEdge(t *testing.T) {
	t.Parallel()
	k := fwtest.NewKeys(t, t.TempDir())
	hub := fwtest.NewHub(t, k, nil)
	mk := func(version string) string {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "classterm"), bytes.Repeat([]byte("terminal "+version), 50000), 0o755)
		out := filepath.Join(t.TempDir(), version)
		if _, err := bundle.Create(bundle.Build{Dir: dir, Product: termimage.Product, Target: "ct-100", Version: version, Entry: "classterm"}, k.Priv, out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	hub.Publish(t, mk("2.1.0"), release.Stable, 100)
	ctx := context.Background()
	im := termimage.New(ctx, termimage.Config{Hub: hub.URL, EdgeID: "edge-1", Keys: k.Ring, Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	mux := http.NewServeMux()
	im.Register(mux)
	edge := httptest.NewServer(mux)
	defer edge.Close()

	const n = 30
	mgrs := make([]*slot.Manager, n)
	for i := range mgrs {
		be, _ := slot.NewDir(t.TempDir())
		mgrs[i] = slot.NewManager(be, k.Ring, 0)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := termupdate.Apply(ctx, termupdate.Config{Edge: edge.URL, Model: "ct-100", Slots: mgrs[i], Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
			if err == nil && (!res.Updated || res.To != "2.1.0") {
				err = fmt.Errorf("result %+v", res)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("terminal %d: %v", i, err)
		}
		st, _ := mgrs[i].State()
		man, err := mgrs[i].Verify(st.Active)
		if err != nil || man.Version != "2.1.0" || !st.Trial {
			t.Fatalf("terminal %d slot: %v %+v %+v", i, err, man, st)
		}
	}
	if req, _ := hub.Store.Stats(); req != 1 {
		t.Fatalf("hub served the image %d times, want exactly 1", req)
	}
	// Up to date now (after commit): a second Apply does nothing.
	mgrs[0].Commit(func() string { st, _ := mgrs[0].State(); return st.Active }())
	res, err := termupdate.Apply(ctx, termupdate.Config{Edge: edge.URL, Model: "ct-100", Slots: mgrs[0], Dir: t.TempDir()})
	if err != nil || res.Updated || res.From != "2.1.0" {
		t.Fatalf("second apply: %+v %v", res, err)
	}
}
