package update_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/internal/fwtest"
	"github.com/campusedge/campusedge/firmware/release"
)

// TestRealEdgedUpdatesItselfUnderEdgesup drives the whole path with real
// binaries: edgesup runs edged 0.2.0 from a slot; edged checks the hub,
// waits while a live class runs, then downloads 0.3.0, installs, switches
// and exits; edgesup starts 0.3.0 on trial and commits it once its
// /healthz passes; edged reports the new version in GET /api/v1/firmware.
func TestRealEdgedUpdatesItselfUnderEdgesup(t *testing.T) {
	t.Parallel()
	r := &rig{k: fwtest.NewKeys(t, t.TempDir()), root: t.TempDir(), dl: t.TempDir(), addr: fwtest.FreePort(t), data: t.TempDir()}
	r.hub = fwtest.NewHub(t, r.k, nil)
	bin := t.TempDir()
	if _, err := bintest.Build(context.Background(), bin, bintest.BuildOptions{}, bintest.Cmd("edged")); err != nil {
		t.Fatal(err)
	}
	mk := func(version string) string {
		out := filepath.Join(t.TempDir(), version+".bundle")
		if _, err := bundle.Create(bundle.Build{Dir: bin, Product: "campusedge", Target: fwtest.Target, Version: version, Entry: "edged"}, r.k.Priv, out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if out, err := exec.Command(edgesupBin, "-root", r.root, "-keys", r.k.PubPath, "-target", fwtest.Target, "install", mk("0.2.0")).CombinedOutput(); err != nil {
		t.Fatalf("edgesup install: %v %s", err, out)
	}
	sup := exec.Command(edgesupBin, "-root", r.root, "-keys", r.k.PubPath, "-health", "http://"+r.addr+"/healthz", "-deadline", "30s", "-backoff", "100ms",
		"run", "--", "-listen", r.addr, "-https-listen", "127.0.0.1:0", "-data", r.data, "-mdns=false", "-log-level", "warn", "-cloud", r.hub.URL,
		"-fw-root", r.root, "-fw-keys", r.k.PubPath, "-fw-target", fwtest.Target)
	if testing.Verbose() {
		sup.Stdout, sup.Stderr = os.Stderr, os.Stderr
	}
	if err := sup.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sup.Process.Signal(syscall.SIGTERM); sup.Wait() })

	type fwStatus struct {
		State   string `json:"state"`
		Version string `json:"version"`
		Trial   bool   `json:"trial"`
	}
	status := func() fwStatus {
		var s fwStatus
		b, err := fwtest.Get(context.Background(), "http://"+r.addr+"/api/v1/firmware")
		if err == nil {
			json.Unmarshal([]byte(b), &s)
		}
		return s
	}
	if !fwtest.WaitFor(30*time.Second, func() bool { s := status(); return s.Version == "0.2.0" && !s.Trial }) {
		t.Fatalf("0.2.0 not committed: %+v", status())
	}
	tok, err := os.ReadFile(filepath.Join(r.data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	admin := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+r.addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	r.hub.Publish(t, mk("0.3.0"), release.Stable, 100)

	// A live class is running: the update must wait.
	code, body := admin(http.MethodPost, "/api/v1/sessions", `{"title":"Physics 8A"}`)
	if code != http.StatusCreated {
		t.Fatalf("create session: %d %s", code, body)
	}
	var sess struct{ ID string }
	json.Unmarshal([]byte(body), &sess)
	if code, body := admin(http.MethodPost, "/api/v1/sessions/"+sess.ID+"/start", ""); code != 200 {
		t.Fatalf("start session: %d %s", code, body)
	}
	if code, body := admin(http.MethodPost, "/api/v1/firmware/check", ""); code != http.StatusAccepted {
		t.Fatalf("trigger check: %d %s", code, body)
	}
	if !fwtest.WaitFor(20*time.Second, func() bool { return status().State == "waiting_for_class" }) {
		t.Fatalf("update did not wait for the class: %+v", status())
	}
	if st, _ := os.ReadFile(filepath.Join(r.root, "state.json")); !bytes.Contains(st, []byte(`"active": "a"`)) {
		t.Fatalf("slot changed during class: %s", st)
	}
	if code, body := admin(http.MethodPost, "/api/v1/sessions/"+sess.ID+"/end", ""); code != 200 {
		t.Fatalf("end session: %d %s", code, body)
	}
	if code, body := admin(http.MethodPost, "/api/v1/firmware/check", ""); code != http.StatusAccepted {
		t.Fatalf("trigger check: %d %s", code, body)
	}
	if !fwtest.WaitFor(40*time.Second, func() bool { s := status(); return s.Version == "0.3.0" && !s.Trial }) {
		st, _ := os.ReadFile(filepath.Join(r.root, "state.json"))
		t.Fatalf("0.3.0 not running committed: %+v\n%s", status(), st)
	}
	// The store survived the switch (same admin token still works).
	if code, body := admin(http.MethodGet, "/api/v1/sessions", ""); code != 200 {
		t.Fatalf("after update: %d %s", code, body)
	}
	// The hub heard the new version from the new edged, and served the
	// bundle once.
	var edges struct {
		Edges          []release.EdgeReport
		BundleRequests int `json:"bundle_requests"`
	}
	code, b := r.hub.Do(t, http.MethodGet, "/api/v1/firmware/edges", nil, true)
	json.Unmarshal(b, &edges)
	if code != 200 || len(edges.Edges) != 1 || edges.Edges[0].Version != "0.3.0" || edges.BundleRequests != 1 {
		t.Fatalf("hub edge reports: %d %s", code, b)
	}
}
