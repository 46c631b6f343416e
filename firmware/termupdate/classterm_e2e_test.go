package termupdate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
	"github.com/campusedge/campusedge/firmware/slot"
	"github.com/campusedge/campusedge/firmware/termimage"
)

// TestThirtyClasstermAgentsUpdateInWavesSkippingTheClass runs a real edged
// and 30 real classterm agents. The hub publishes an image for their model;
// the edge fetches it once, offers it over the control channel in waves of
// at most 5, never to the terminal whose classroom is in a live class; each
// agent downloads it from the edge, verifies it, installs it into its own
// slot and reports its new version. When the class ends, that terminal
// updates too.
func TestThirtyClasstermAgentsUpdateInWavesSkippingTheClass(t *testing.T) {
	t.Parallel()
	k := fwtest.NewKeys(t, t.TempDir())
	hub := fwtest.NewHub(t, k, nil)
	img := t.TempDir()
	os.WriteFile(filepath.Join(img, "classterm"), bytes.Repeat([]byte("classterm 2.1.0 "), 1<<16), 0o755)
	ib := filepath.Join(t.TempDir(), "img")
	if _, err := bundle.Create(bundle.Build{Dir: img, Product: termimage.Product, Target: "ct-100", Version: "2.1.0", Entry: "classterm"}, k.Priv, ib); err != nil {
		t.Fatal(err)
	}
	hub.Publish(t, ib, release.Stable, 100)

	bin := t.TempDir()
	bins, err := bintest.Build(context.Background(), bin, bintest.BuildOptions{}, bintest.Cmd("edged"), bintest.Cmd("classterm"))
	if err != nil {
		t.Fatal(err)
	}
	edged, classterm := bins[0], bins[1]
	addr, data := fwtest.FreePort(t), t.TempDir()
	start := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		if testing.Verbose() {
			cmd.Stderr = os.Stderr
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
		return cmd
	}
	start(edged, "-listen", addr, "-https-listen", "127.0.0.1:0", "-data", data, "-mdns=false", "-log-level", "warn", "-cloud", hub.URL,
		"-fw-root", t.TempDir(), "-fw-keys", k.PubPath, "-fw-wave", "5", "-fw-wave-interval", "300ms")
	base := "http://" + addr
	if !fwtest.WaitFor(20*time.Second, func() bool { _, err := fwtest.Get(context.Background(), base+"/healthz"); return err == nil }) {
		t.Fatal("edged not up")
	}
	tok, _ := os.ReadFile(filepath.Join(data, "admin-token"))
	admin := func(method, path, body string, out any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		if out != nil {
			json.Unmarshal(b, out)
		}
	}
	var r1, r2 struct{ ID string }
	admin("POST", "/api/v1/classrooms", `{"name":"Grade 7 Class 1","room_code":"R1"}`, &r1)
	admin("POST", "/api/v1/classrooms", `{"name":"Grade 7 Class 2","room_code":"R2"}`, &r2)
	var sess struct{ ID string }
	admin("POST", "/api/v1/sessions", `{"title":"Physics","classrooms":["`+r2.ID+`"]}`, &sess)
	admin("POST", "/api/v1/sessions/"+sess.ID+"/start", "", nil)

	const n = 30
	roots := make([]string, n)
	for i := range n {
		room := r1.ID
		if i == 0 {
			room = r2.ID // the terminal in the live class
		}
		var code struct{ Code string }
		admin("POST", "/api/v1/classrooms/"+room+"/pairing-codes", "", &code)
		roots[i] = t.TempDir()
		start(classterm, "-data", t.TempDir(), "-edge", base, "-pair", code.Code, "-name", fmt.Sprintf("t%02d", i),
			"-model", "ct-100", "-fw-root", roots[i], "-fw-keys", k.PubPath, "-version", "2.0.0", "-log-level", "warn")
	}
	type status struct {
		Terminals []struct {
			ID, Model, Version, State string
		}
		Waves       int `json:"waves"`
		MaxInFlight int `json:"max_in_flight"`
	}
	var st status
	count := func(version string) int {
		st = status{}
		admin("GET", "/api/v1/terminal-images", "", &st)
		c := 0
		for _, ts := range st.Terminals {
			if ts.Version == version && ts.State != "updating" {
				c++
			}
		}
		return c
	}
	if !fwtest.WaitFor(60*time.Second, func() bool { return count("2.1.0") == n-1 && count("2.0.0") == 1 }) {
		t.Fatalf("want 29 terminals on 2.1.0 and the one in class on 2.0.0: %+v", st)
	}
	if st.MaxInFlight > 5 || st.Waves < (n-1)/5 {
		t.Fatalf("waves: %d waves, up to %d terminals at once; want at most 5 at once", st.Waves, st.MaxInFlight)
	}
	// Each updated terminal runs the image from its own verified slot.
	updated := 0
	for _, root := range roots {
		be, _ := slot.NewDir(root)
		m := slot.NewManager(be, k.Ring, 0)
		s, _ := m.State()
		if s.Active == "" {
			continue
		}
		if man, err := m.Verify(s.Active); err != nil || man.Version != "2.1.0" {
			t.Fatalf("terminal slot %s: %v %+v", root, err, man)
		}
		updated++
	}
	if updated != n-1 {
		t.Fatalf("%d terminals have the image in a slot, want %d", updated, n-1)
	}
	// The class ends: the last terminal updates too.
	admin("POST", "/api/v1/sessions/"+sess.ID+"/end", "", nil)
	if !fwtest.WaitFor(30*time.Second, func() bool { return count("2.1.0") == n }) {
		t.Fatalf("terminal not updated after the class: %+v", st)
	}
	if req, _ := hub.Store.Stats(); req != 1 {
		t.Fatalf("the hub served the image %d times over the WAN, want exactly 1", req)
	}
	t.Logf("%d waves, at most %d terminals updating at once", st.Waves, st.MaxInFlight)
}
