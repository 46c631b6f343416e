package update_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/internal/fwtest"
	"github.com/campusedge/campusedge/firmware/release"
	"github.com/campusedge/campusedge/firmware/slot"
	"github.com/campusedge/campusedge/firmware/update"
)

var payloadBin, edgesupBin string

func TestMain(m *testing.M) {
	if os.Getenv("FWTEST_UPDATE_HELPER") != "" {
		os.Exit(helper())
	}
	dir, err := os.MkdirTemp("", "fwupd")
	if err != nil {
		panic(err)
	}
	payloadBin, err = fwtest.BuildPayload(dir)
	if err == nil {
		var bins []string
		bins, err = bintest.Build(context.Background(), dir, bintest.BuildOptions{}, bintest.Cmd("edgesup"))
		if err == nil {
			edgesupBin = bins[0]
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// helper is the updater as a separate process, so a test can SIGKILL it at
// a chosen step: it prints "AT step" there and waits to be killed.
func helper() int {
	ring, err := bundle.LoadKeyring(os.Getenv("FW_KEYS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	be, _ := slot.NewDir(os.Getenv("FW_ROOT"))
	killAt := os.Getenv("FW_KILL_AT")
	u := update.New(update.Config{Hub: os.Getenv("FW_HUB"), EdgeID: "edge-kill", Product: "campusedge", Target: fwtest.Target,
		Channel: release.Stable, Slots: slot.NewManager(be, ring, 3), Download: os.Getenv("FW_DL"),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Step: func(s string) {
			if s == killAt {
				fmt.Printf("AT %s\n", s)
				os.Stdout.Sync()
				select {}
			}
		}})
	if err := u.CheckOnce(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("DONE")
	return 0
}

type rig struct {
	k    fwtest.Keys
	root string
	m    *slot.Manager
	hub  *fwtest.Hub
	dl   string
	addr string
	data string

	mu     sync.Mutex
	ranges []string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{k: fwtest.NewKeys(t, t.TempDir()), root: t.TempDir(), dl: t.TempDir(), addr: fwtest.FreePort(t), data: t.TempDir()}
	be, _ := slot.NewDir(r.root)
	r.m = slot.NewManager(be, r.k.Ring, 3)
	r.hub = fwtest.NewHub(t, r.k, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if strings.Contains(req.URL.Path, "/bundles/") {
				r.mu.Lock()
				r.ranges = append(r.ranges, req.Header.Get("Range"))
				r.mu.Unlock()
			}
			h.ServeHTTP(w, req)
		})
	})
	r.installLocal(t, fwtest.PayloadBundle(t, r.k, payloadBin, "1.0.0", "ok"), true)
	return r
}

func (r *rig) installLocal(t *testing.T, path string, commit bool) {
	t.Helper()
	f, _ := os.Open(path)
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
}

func (r *rig) updater(restart func(), gate update.ClassGate) *update.Updater {
	return update.New(update.Config{Hub: r.hub.URL, EdgeID: "edge-1", Product: "campusedge", Target: fwtest.Target, Channel: release.Stable,
		Slots: r.m, Download: r.dl, Restart: restart, Classes: gate, Logger: slog.New(slog.DiscardHandler)})
}

// edgesup starts the real supervisor binary on the rig.
func (r *rig) edgesup(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(edgesupBin, "-root", r.root, "-keys", r.k.PubPath, "-health", "http://"+r.addr+"/healthz",
		"-deadline", "10s", "-backoff", "100ms", "run", "--", "-listen", r.addr, "-data", r.data)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if testing.Verbose() == false {
		cmd.Stdout, cmd.Stderr = nil, nil
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	return cmd
}

func (r *rig) version() string {
	v, _ := fwtest.Get(context.Background(), "http://"+r.addr+"/version")
	return v
}

// runsCommitted waits until version serves from a committed, fully
// verifying slot.
func (r *rig) runsCommitted(t *testing.T, version string) {
	t.Helper()
	ok := fwtest.WaitFor(20*time.Second, func() bool {
		st, err := r.m.State()
		return err == nil && !st.Trial && st.Txn == nil && r.version() == version
	})
	st, _ := r.m.State()
	if !ok {
		t.Fatalf("want %s running committed; serving %q, state %+v", version, r.version(), st)
	}
	man, err := r.m.Verify(st.Active)
	if err != nil || man.Version != version {
		t.Fatalf("active slot does not verify: %v %+v", err, man)
	}
}

// lastPid is the pid of the newest payload start.
func (r *rig) lastPid(t *testing.T) int {
	b, _ := os.ReadFile(filepath.Join(r.data, "starts.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	f := strings.Fields(lines[len(lines)-1])
	pid, _ := strconv.Atoi(f[len(f)-1])
	return pid
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestKillAtEachStepLeavesAGoodVerifiedSlot(t *testing.T) {
	t.Parallel()
	for _, step := range []string{"download", "install", "installed", "switch", "first-start"} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			v2 := fwtest.PayloadBundle(t, r.k, payloadBin, "1.1.0", "slow")
			r.hub.Publish(t, v2, release.Stable, 100)
			if step == "first-start" {
				r.installLocal(t, v2, false)
				sup := r.edgesup(t)
				if !fwtest.WaitFor(10*time.Second, func() bool {
					b, _ := os.ReadFile(filepath.Join(r.data, "starts.log"))
					return strings.Contains(string(b), "1.1.0 slow")
				}) {
					t.Fatal("new version never started")
				}
				child := r.lastPid(t)
				sup.Process.Kill() // power cut while the new version is on trial
				sup.Wait()
				if !fwtest.WaitFor(3*time.Second, func() bool { return !alive(child) }) {
					t.Fatalf("edged (pid %d) outlived its supervisor", child)
				}
				r.edgesup(t)
				r.runsCommitted(t, "1.1.0")
				if st, _ := r.m.State(); st.Floor != "1.1.0" {
					t.Fatalf("floor %q", st.Floor)
				}
				return
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "FWTEST_UPDATE_HELPER=1", "FW_KEYS="+r.k.PubPath, "FW_ROOT="+r.root,
				"FW_HUB="+r.hub.URL, "FW_DL="+r.dl, "FW_KILL_AT="+step)
			out, _ := cmd.StdoutPipe()
			cmd.Stderr = nil
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil || strings.TrimSpace(line) != "AT "+step {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("helper did not reach %s: %q %v", step, line, err)
			}
			cmd.Process.Kill() // SIGKILL at this step
			cmd.Wait()

			st, _ := r.m.State()
			switch step {
			case "download":
				parts, _ := filepath.Glob(filepath.Join(r.dl, "*.part"))
				if len(parts) != 1 || st.Active != slot.A || st.Trial {
					t.Fatalf("after kill in download: parts %v state %+v", parts, st)
				}
			case "install":
				if st.Txn == nil || st.Txn.Slot != slot.B {
					t.Fatalf("power cut mid-install is not detectable: state %+v", st)
				}
			case "installed":
				if st.Txn != nil || st.Active != slot.A {
					t.Fatalf("after install: state %+v", st)
				}
			case "switch":
				if st.Active != slot.B || !st.Trial {
					t.Fatalf("after switch: state %+v", st)
				}
			}
			sup := r.edgesup(t)
			_ = sup
			if step == "switch" {
				r.runsCommitted(t, "1.1.0")
				return
			}
			r.runsCommitted(t, "1.0.0")
			if step == "install" {
				if _, err := os.Stat(filepath.Join(r.root, slot.B, "files")); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("half-written slot b still there: %v", err)
				}
			}
			// The next check finishes the job; edged's exit after the
			// switch is played by stopping the running payload.
			var restarted atomic.Bool
			u := r.updater(func() {
				restarted.Store(true)
				syscall.Kill(r.lastPid(t), syscall.SIGTERM)
			}, nil)
			if err := u.CheckOnce(context.Background()); err != nil || !restarted.Load() {
				t.Fatalf("second check: %v restarted=%v", err, restarted.Load())
			}
			r.runsCommitted(t, "1.1.0")
			if step == "download" {
				r.mu.Lock()
				ranges := append([]string(nil), r.ranges...)
				r.mu.Unlock()
				if len(ranges) != 2 || ranges[0] != "" || !strings.HasPrefix(ranges[1], "bytes=") || ranges[1] == "bytes=0-" {
					t.Fatalf("download did not resume with Range: %q", ranges)
				}
			}
		})
	}
}

type gate struct{ running atomic.Bool }

func (g *gate) LiveClassRunning() bool { return g.running.Load() }

func TestNoUpdateDuringLiveClass(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.hub.Publish(t, fwtest.PayloadBundle(t, r.k, payloadBin, "1.1.0", "ok"), release.Stable, 100)
	g := &gate{}
	g.running.Store(true)
	var restarted atomic.Bool
	u := r.updater(func() { restarted.Store(true) }, g)
	if err := u.CheckOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, _ := r.m.State()
	if s := u.Status(); s.State != "waiting_for_class" || st.Active != slot.A || st.Txn != nil || restarted.Load() {
		t.Fatalf("updated during a class: status %+v state %+v", s, st)
	}
	g.running.Store(false)
	if err := u.CheckOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, _ = r.m.State()
	if st.Active != slot.B || !st.Trial || !restarted.Load() {
		t.Fatalf("after class: state %+v", st)
	}
	// Downloaded once, although checked twice.
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ranges) != 1 {
		t.Fatalf("bundle fetched %d times", len(r.ranges))
	}
}

func TestCorruptDownloadIsRefusedAndNothingInstalled(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	rel := r.hub.Publish(t, fwtest.PayloadBundle(t, r.k, payloadBin, "1.1.0", "ok"), release.Stable, 100)
	// Bit rot (or an attacker) on the hub's disk after publishing.
	p := filepath.Join(r.hub.Store.Dir(), "blobs", "sha256", rel.SHA256[:2], rel.SHA256)
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 1
	os.WriteFile(p, b, 0o644)
	u := r.updater(func() { t.Error("restarted after a corrupt download") }, nil)
	err := u.CheckOnce(context.Background())
	if !errors.Is(err, update.ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
	st, _ := r.m.State()
	if st.Active != slot.A || st.Trial || st.Txn != nil {
		t.Fatalf("state changed: %+v", st)
	}
	if left, _ := os.ReadDir(r.dl); len(left) != 0 {
		t.Fatalf("corrupt download kept: %v", left)
	}
	if s := u.Status(); s.State != "error" || !strings.Contains(s.Error, "SHA-256") {
		t.Fatalf("status %+v", s)
	}
}

func TestOtherTargetAndOlderReleasesAreNotOffered(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	// Older than what runs: the hub does not offer it; if it did, the slot
	// policy would refuse it (bundle tests cover that path).
	r.hub.Publish(t, fwtest.PayloadBundle(t, r.k, payloadBin, "0.9.0", "ok"), release.Stable, 100)
	u := r.updater(func() { t.Error("restarted") }, nil)
	if err := u.CheckOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := u.Status(); s.State != "idle" || s.Version != "1.0.0" {
		t.Fatalf("status %+v", s)
	}
}

// TestWANCutMidDownloadResumes: the hub's connection drops after the first
// 256 KiB of the bundle; the same check resumes with a Range request and
// installs a bundle that verifies.
func TestWANCutMidDownloadResumes(t *testing.T) {
	t.Parallel()
	r := &rig{k: fwtest.NewKeys(t, t.TempDir()), root: t.TempDir(), dl: t.TempDir()}
	be, _ := slot.NewDir(r.root)
	r.m = slot.NewManager(be, r.k.Ring, 3)
	var cut atomic.Bool
	r.hub = fwtest.NewHub(t, r.k, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if strings.Contains(req.URL.Path, "/bundles/") {
				r.mu.Lock()
				r.ranges = append(r.ranges, req.Header.Get("Range"))
				r.mu.Unlock()
				if cut.CompareAndSwap(false, true) {
					h.ServeHTTP(&cutWriter{ResponseWriter: w, left: 256 << 10}, req)
					panic(http.ErrAbortHandler) // drop the connection mid-body
				}
			}
			h.ServeHTTP(w, req)
		})
	})
	r.installLocal(t, fwtest.PayloadBundle(t, r.k, payloadBin, "1.0.0", "ok"), true)
	r.hub.Publish(t, fwtest.PayloadBundle(t, r.k, payloadBin, "1.1.0", "ok"), release.Stable, 100)
	var restarted atomic.Bool
	u := r.updater(func() { restarted.Store(true) }, nil)
	if err := u.CheckOnce(context.Background()); err != nil || !restarted.Load() {
		t.Fatalf("check after a WAN cut: %v restarted=%v", err, restarted.Load())
	}
	r.mu.Lock()
	ranges := append([]string(nil), r.ranges...)
	r.mu.Unlock()
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != fmt.Sprintf("bytes=%d-", 256<<10) {
		t.Fatalf("requests %q: want a full request, then a resume from the cut", ranges)
	}
	st, _ := r.m.State()
	if man, err := r.m.Verify(st.Active); err != nil || man.Version != "1.1.0" || !st.Trial {
		t.Fatalf("installed slot: %v %+v %+v", err, man, st)
	}
}

// cutWriter passes only the first left bytes of the body.
type cutWriter struct {
	http.ResponseWriter
	left int
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.ErrClosedPipe
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.ResponseWriter.Write(p)
	c.left -= n
	if err == nil && c.left == 0 {
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		return n, io.ErrClosedPipe
	}
	return n, err
}
