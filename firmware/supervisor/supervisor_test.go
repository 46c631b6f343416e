package supervisor_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/internal/fwtest"
	"github.com/campusedge/campusedge/firmware/slot"
	"github.com/campusedge/campusedge/firmware/supervisor"
)

var payloadBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fwsup")
	if err != nil {
		panic(err)
	}
	payloadBin, err = fwtest.BuildPayload(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type rig struct {
	k    fwtest.Keys
	m    *slot.Manager
	addr string
	data string

	mu     sync.Mutex
	events []supervisor.Event
}

func newRig(t *testing.T, maxBoots int) *rig {
	t.Helper()
	k := fwtest.NewKeys(t, t.TempDir())
	be, err := slot.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &rig{k: k, m: slot.NewManager(be, k.Ring, maxBoots), addr: fwtest.FreePort(t), data: t.TempDir()}
}

func (r *rig) install(t *testing.T, path string, commit bool) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pol, _ := r.m.Policy("campusedge", fwtest.Target)
	br, err := bundle.Open(bufio.NewReader(f), r.k.Ring, pol)
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.m.Install(context.Background(), br)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.m.Switch(s); err != nil {
		t.Fatal(err)
	}
	if commit {
		if _, err := r.m.Commit(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (r *rig) run(t *testing.T, deadline time.Duration, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	if args == nil {
		args = []string{"-listen", r.addr, "-data", r.data}
	}
	go func() {
		defer close(done)
		supervisor.Run(ctx, supervisor.Config{Slots: r.m, Args: args, HealthURL: "http://" + r.addr + "/healthz",
			Deadline: deadline, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, StopGrace: 2 * time.Second,
			Logger:  slog.New(slog.DiscardHandler),
			OnEvent: func(e supervisor.Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }})
	}()
	t.Cleanup(func() { cancel(); <-done })
}

func (r *rig) has(kind, version string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == kind && e.Version == version {
			return true
		}
	}
	return false
}

func (r *rig) serving(version string) bool {
	v, err := fwtest.Get(context.Background(), "http://"+r.addr+"/version")
	return err == nil && v == version
}

func (r *rig) starts(t *testing.T, version string) int {
	b, _ := os.ReadFile(filepath.Join(r.data, "starts.log"))
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, version+" ") {
			n++
		}
	}
	return n
}

func TestNewVersionNeverHealthyOldOneComesBackWithinDeadline(t *testing.T) {
	t.Parallel()
	r := newRig(t, 3)
	r.install(t, fwtest.PayloadBundle(t, r.k, payloadBin, "1.0.0", "ok"), true)
	r.install(t, fwtest.PayloadBundle(t, r.k, payloadBin, "2.0.0", "hang"), false)
	const deadline = 2 * time.Second
	start := time.Now()
	r.run(t, deadline)
	if !fwtest.WaitFor(deadline+8*time.Second, func() bool { return r.serving("1.0.0") }) {
		t.Fatalf("1.0.0 not back; events %+v", r.events)
	}
	took := time.Since(start)
	if !r.has("fallback", "2.0.0") || r.has("commit", "2.0.0") {
		t.Fatalf("events %+v", r.events)
	}
	if took < deadline {
		t.Fatalf("fell back after %v, before the %v deadline", took, deadline)
	}
	if took > deadline+5*time.Second {
		t.Fatalf("old version back only after %v (deadline %v)", took, deadline)
	}
	st, _ := r.m.State()
	if st.Trial || st.LastFallback == nil || st.LastFallback.From != "2.0.0" || len(st.Bad) != 1 {
		t.Fatalf("state %+v", st)
	}
	if n := r.starts(t, "2.0.0"); n != 1 {
		t.Fatalf("2.0.0 started %d times, want 1", n)
	}
}

func TestCrashingVersionFallsBackByBootCounter(t *testing.T) {
	t.Parallel()
	r := newRig(t, 3)
	r.install(t, fwtest.PayloadBundle(t, r.k, payloadBin, "1.0.0", "ok"), true)
	r.install(t, fwtest.PayloadBundle(t, r.k, payloadBin, "2.0.0", "crash"), false)
	r.run(t, time.Minute) // the deadline is not what saves us here
	if !fwtest.WaitFor(10*time.Second, func() bool { return r.serving("1.0.0") }) {
		t.Fatalf("1.0.0 not back; events %+v", r.events)
	}
	if n := r.starts(t, "2.0.0"); n != 3 {
		t.Fatalf("crashing 2.0.0 started %d times, want exactly max-boots=3", n)
	}
	st, _ := r.m.State()
	if st.Trial || st.LastFallback == nil || !strings.Contains(st.LastFallback.Reason, "3 times") {
		t.Fatalf("state %+v", st)
	}
}

func TestHealthyVersionIsCommittedAndRaisesFloor(t *testing.T) {
	t.Parallel()
	r := newRig(t, 3)
	r.install(t, fwtest.PayloadBundle(t, r.k, payloadBin, "1.0.0", "ok"), true)
	r.install(t, fwtest.PayloadBundle(t, r.k, payloadBin, "1.1.0", "slow"), false)
	r.run(t, 10*time.Second)
	if !fwtest.WaitFor(10*time.Second, func() bool { return r.has("commit", "1.1.0") }) {
		t.Fatalf("not committed; events %+v", r.events)
	}
	if !r.serving("1.1.0") {
		t.Fatal("1.1.0 not serving")
	}
	st, _ := r.m.State()
	if st.Trial || st.Floor != "1.1.0" || st.Boots != 0 {
		t.Fatalf("state %+v", st)
	}
}

// TestRealEdgedInASlot runs the real edged binary from a bundle: the
// supervisor must see its /healthz (store open, migrations done) and commit.
func TestRealEdgedInASlot(t *testing.T) {
	t.Parallel()
	r := newRig(t, 3)
	dir := t.TempDir()
	if _, err := bintest.Build(context.Background(), dir, bintest.BuildOptions{}, bintest.Cmd("edged")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "edged.bundle")
	if _, err := bundle.Create(bundle.Build{Dir: dir, Product: "campusedge", Target: fwtest.Target, Version: "0.2.0", Entry: "edged"}, r.k.Priv, out); err != nil {
		t.Fatal(err)
	}
	r.install(t, out, false)
	r.run(t, 30*time.Second, "-listen", r.addr, "-https-listen", "127.0.0.1:0", "-data", r.data, "-mdns=false", "-log-level", "warn")
	if !fwtest.WaitFor(30*time.Second, func() bool { return r.has("commit", "0.2.0") }) {
		t.Fatalf("real edged not committed; events %+v", r.events)
	}
	body, err := fwtest.Get(context.Background(), "http://"+r.addr+"/api/v1/edge")
	if err != nil || !strings.Contains(body, `"id"`) {
		t.Fatalf("edged API: %q %v", body, err)
	}
	if _, err := os.Stat(filepath.Join(r.data, "edge.db")); err != nil {
		t.Fatalf("edged store not created: %v", err)
	}
}
