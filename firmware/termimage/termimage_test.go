package termimage_test

import (
	"bytes"
	"context"
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
	"reflect"
	"sync"
	"testing"

	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/internal/fwtest"
	"github.com/campusedge/campusedge/firmware/release"
	"github.com/campusedge/campusedge/firmware/termimage"
)

func image(t *testing.T, k fwtest.Keys, model, version string, size int) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "classterm"), bytes.Repeat([]byte(model+version), size/len(model+version)), 0o755)
	out := filepath.Join(t.TempDir(), "img")
	if _, err := bundle.Create(bundle.Build{Dir: dir, Product: termimage.Product, Target: model, Version: version, Entry: "classterm"}, k.Priv, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestThirtyTerminalsOneWANFetch: 30 terminals of one model ask the edge
// for their image at the same moment, and 30 more later; every one gets
// the full image and verifies it with the release keys as a terminal does,
// and the hub served the bundle exactly once.
func TestThirtyTerminalsOneWANFetch(t *testing.T) {
	t.Parallel()
	k := fwtest.NewKeys(t, t.TempDir())
	hub := fwtest.NewHub(t, k, nil)
	hub.Publish(t, image(t, k, "ct-100", "2.1.0", 1<<20), release.Stable, 100)
	hub.Publish(t, image(t, k, "ct-100", "2.2.0", 1<<20), release.Beta, 100) // a stable edge must not take it
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	im := termimage.New(ctx, termimage.Config{Hub: hub.URL, EdgeID: "edge-1", Keys: k.Ring, Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	mux := http.NewServeMux()
	im.Register(mux)
	edge := httptest.NewServer(mux)
	defer edge.Close()

	terminal := func() error {
		resp, err := http.Get(edge.URL + "/api/v1/terminal-images/ct-100")
		if err != nil {
			return err
		}
		var img termimage.Image
		json.NewDecoder(resp.Body).Decode(&img)
		resp.Body.Close()
		if img.Version != "2.1.0" {
			return fmt.Errorf("offered %+v", img)
		}
		resp, err = http.Get(edge.URL + img.URL)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("bundle: %d %v", resp.StatusCode, err)
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != img.SHA256 || int64(len(b)) != img.Size {
			return fmt.Errorf("bytes differ from the announced image")
		}
		r, err := bundle.Open(bytes.NewReader(b), k.Ring, bundle.Policy{Product: termimage.Product, Target: "ct-100", Floor: "2.0.0"})
		if err != nil {
			return err
		}
		return r.Verify()
	}
	for round := range 2 {
		var wg sync.WaitGroup
		errs := make(chan error, 30)
		for range 30 {
			wg.Add(1)
			go func() { defer wg.Done(); errs <- terminal() }()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
	if req, _ := hub.Store.Stats(); req != 1 {
		t.Fatalf("hub served the image %d times over the WAN, want exactly 1", req)
	}
	resp, _ := http.Get(edge.URL + "/api/v1/terminal-images/ct-999")
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown model: %d", resp.StatusCode)
	}
	resp.Body.Close()
	resp, _ = http.Get(edge.URL + "/api/v1/terminal-images/..%2fetc")
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad model: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

func TestTamperedImageOnHubIsNotServed(t *testing.T) {
	t.Parallel()
	k := fwtest.NewKeys(t, t.TempDir())
	other := fwtest.NewKeys(t, t.TempDir())
	hub := fwtest.NewHub(t, k, nil)
	rel := hub.Publish(t, image(t, k, "ct-1", "1.0.0", 1<<16), release.Stable, 100)
	// The edge trusts only "other": it must refuse the image and serve nothing.
	im := termimage.New(context.Background(), termimage.Config{Hub: hub.URL, EdgeID: "e", Keys: other.Ring, Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if _, err := im.Ensure(context.Background(), rel); err == nil {
		t.Fatal("served an image signed by an untrusted key")
	}
}

func TestNextWaveSkipsTerminalsInClass(t *testing.T) {
	t.Parallel()
	latest := map[string]string{"ct-100": "2.1.0"}
	var ts []termimage.Terminal
	for i := range 10 {
		ts = append(ts, termimage.Terminal{ID: fmt.Sprintf("t%02d", i), Model: "ct-100", Version: "2.0.0", Online: true})
	}
	ts[0].InClass = true
	ts[1].Version = "2.1.0" // already current
	ts[2].Online = false
	ts[3].Updating = true
	ts = append(ts, termimage.Terminal{ID: "x", Model: "other", Version: "1.0.0", Online: true})
	got := termimage.NextWave(ts, latest, 3)
	if want := []string{"t04", "t05"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("wave %v, want %v (t03 is updating: one slot used)", got, want)
	}
	ts[3].Updating, ts[3].Version = false, "2.1.0"
	ts[4].Updating, ts[5].Updating = true, true
	if got := termimage.NextWave(ts, latest, 3); !reflect.DeepEqual(got, []string{"t06"}) {
		t.Fatalf("second wave %v", got)
	}
	ts[0].InClass = false
	for i := range ts {
		ts[i].Updating = false
		if ts[i].ID != "t00" && ts[i].Model == "ct-100" {
			ts[i].Version = "2.1.0"
		}
	}
	if got := termimage.NextWave(ts, latest, 3); !reflect.DeepEqual(got, []string{"t00"}) {
		t.Fatalf("after class: %v", got)
	}
}

func FuzzRolloutReport(f *testing.F) {
	f.Add(`{"type":"fw.status","v":1,"model":"ct-100","version":"2.0.0","state":"idle"}`)
	f.Add(`{"type":"fw.status","v":1,"model":"../x","version":"2","state":"installed"}`)
	f.Add(`{"type":"fw.status","v":1,"model":"ct","state":"failed","error":"x","extra":1}`)
	f.Fuzz(func(t *testing.T, s string) {
		ro := termimage.NewRollout(termimage.RolloutConfig{Logger: slog.New(slog.DiscardHandler)})
		if ro.Report("t-1", []byte(s)) != nil {
			if len(ro.Status().Terminals) != 0 {
				t.Fatal("a refused report was kept")
			}
			return
		}
		st := ro.Status().Terminals[0]
		if !termimage.ValidModel(st.Model) || len(st.Error) > 1024 {
			t.Fatalf("kept invalid report %+v", st)
		}
		if st.Version != "" {
			if _, err := bundle.ParseVersion(st.Version); err != nil {
				t.Fatalf("kept invalid version %q", st.Version)
			}
		}
	})
}

// TestMadeUpModelsCostNoHubRequests is issue 14 finding 8: each new model
// name in GET /api/v1/terminal-images/{model} cost a hub request and a
// permanent map entry. Now the edge asks the hub for every model's images
// at once, at most once per TTL, whatever names clients send.
func TestMadeUpModelsCostNoHubRequests(t *testing.T) {
	t.Parallel()
	k := fwtest.NewKeys(t, t.TempDir())
	hub := fwtest.NewHub(t, k, nil)
	hub.Publish(t, image(t, k, "ct-100", "2.1.0", 1<<12), release.Stable, 100)
	count := 0
	var mu sync.Mutex
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/firmware/releases" {
			mu.Lock()
			count++
			mu.Unlock()
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, hub.URL+r.URL.RequestURI(), r.Body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	defer counting.Close()
	im := termimage.New(context.Background(), termimage.Config{Hub: counting.URL, EdgeID: "edge-1", Keys: k.Ring, Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	mux := http.NewServeMux()
	im.Register(mux)
	edge := httptest.NewServer(mux)
	defer edge.Close()
	for i := range 200 {
		resp, err := http.Get(fmt.Sprintf("%s/api/v1/terminal-images/made-up-%d", edge.URL, i))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("made-up model %d: %d", i, resp.StatusCode)
		}
	}
	resp, err := http.Get(edge.URL + "/api/v1/terminal-images/ct-100")
	if err != nil {
		t.Fatal(err)
	}
	var img termimage.Image
	json.NewDecoder(resp.Body).Decode(&img)
	resp.Body.Close()
	if img.Version != "2.1.0" {
		t.Fatalf("the published model: %+v", img)
	}
	mu.Lock()
	defer mu.Unlock()
	if count != 1 {
		t.Fatalf("the hub was asked %d times for 201 model names, want once per TTL", count)
	}
}
