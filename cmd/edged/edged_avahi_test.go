//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests run the real edged binary, built from this package (with
// -race when the tests are), and check what a standard DNS-SD browser
// (avahi-browse) sees of it. The root tests run edged and avahi-daemon in
// network namespaces joined by a veth pair (helpers copied from
// edge/internal/netnstest at the end of this file), so nothing is
// advertised outside them; without root they skip, except under CI=true,
// where they fail. TestEdgedWithoutMulticastKeepsRunning needs no root: it
// runs edged on the host, HTTP and DNS-SD limited to lo.

const (
	serviceType = "_campusedge._tcp"
	schoolCode  = "SCH1"
	schoolName  = "Escuela Norte" // also the DNS-SD instance name: InstanceName keeps it as is
)

// buildEdged builds this package's binary into a temporary directory, with
// the race detector when the test binary has it, so a data race in edged
// makes it exit 66 and fails the exit-status checks.
func buildEdged(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "edged")
	// No VCS stamp: the tests need none, and git refuses a checkout owned by
	// another user ("dubious ownership"), which fails the build.
	args := []string{"build", "-buildvcs=false", "-o", bin}
	if raceEnabled() {
		args = append(args, "-race")
	}
	start := time.Now()
	cmd := exec.Command(goBin, append(args, ".")...) // go test runs in the package directory
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("built edged (race=%v) in %v", raceEnabled(), time.Since(start).Round(time.Millisecond))
	return bin
}

func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// logSource is a running program's combined output (process, or
// netnstest.Process once this file can use netnstest).
type logSource interface {
	Output() string
	Exited() (bool, error)
}

// waitLog waits until p's output has a line containing every one of subs
// and returns that line; it fails t when p exits first or ctx is done.
func waitLog(t testing.TB, ctx context.Context, p logSource, subs ...string) string {
	t.Helper()
	for {
		if line, ok := findLine(p.Output(), subs...); ok {
			return line
		}
		if done, err := p.Exited(); done {
			if line, ok := findLine(p.Output(), subs...); ok {
				return line
			}
			t.Fatalf("process exited (%v) before writing a line with %q:\n%s", err, subs, p.Output())
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no output line with %q: %v\n%s", subs, ctx.Err(), p.Output())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func findLine(out string, subs ...string) (string, bool) {
	for _, line := range strings.Split(out, "\n") {
		ok := true
		for _, s := range subs {
			if !strings.Contains(line, s) {
				ok = false
				break
			}
		}
		if ok {
			return line, true
		}
	}
	return "", false
}

// logValue returns the value of key in one slog text line.
func logValue(line, key string) string {
	m := regexp.MustCompile(`(?:^| )` + regexp.QuoteMeta(key) + `=("(?:[^"\\]|\\.)*"|\S*)`).FindStringSubmatch(line)
	if m == nil {
		return ""
	}
	if v, err := strconv.Unquote(m[1]); err == nil {
		return v
	}
	return m[1]
}

// listening waits for edged's `level=INFO msg=listening addr=… edge_id=…`
// line and returns the bound address and the edge id.
func listening(t testing.TB, ctx context.Context, p logSource) (addr, edgeID string) {
	t.Helper()
	line := waitLog(t, ctx, p, "level=INFO msg=listening ")
	addr, edgeID = logValue(line, "addr"), logValue(line, "edge_id")
	if _, _, err := net.SplitHostPort(addr); err != nil || edgeID == "" {
		t.Fatalf("cannot parse addr and edge_id from %q", line)
	}
	return addr, edgeID
}

// dialIn dials from inside the named network namespace: the socket is made
// on an OS thread moved into the namespace, and keeps that namespace after
// the thread moves back. The thread must move back and live on: children are
// started with Pdeathsig, which fires when the thread that forked them ends,
// and a goroutine that exits while locked ends its thread (seen here: edged
// SIGKILLed mid-test). Only if moving back fails is the thread left to end.
func dialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/var/run/netns", ns)) // where `ip netns add` puts it
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
			if c != nil {
				c.Close()
			}
			ch <- result{nil, fmt.Errorf("setns back from %s: %w", ns, rerr)} // the thread stays locked and ends
			return
		}
		runtime.UnlockOSThread()
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// clientIn is an HTTP client whose connections start in namespace ns: a
// terminal on that host.
func clientIn(ns *netns) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return dialIn(ctx, ns.Name, network, addr)
			},
		},
	}
}

// getJSON GETs url and decodes the JSON body into v, returning the status.
func getJSON(t *testing.T, c *http.Client, url string, v any) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %d, body is not the JSON expected: %v\n%s", url, resp.StatusCode, err, body)
	}
	return resp.StatusCode
}

type health struct {
	Status string `json:"status"`
	Checks map[string]struct {
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	} `json:"checks"`
}

// startEdgedIn runs edged inside ns on 0.0.0.0:8080 with school SCH1
// "Escuela Norte" and default DNS-SD settings (every multicast-capable
// interface: in the namespace, only its veth), waits for its listening line
// and returns the process, the edge id it logged and its start time.
func startEdgedIn(t *testing.T, ns *netns, bin string) (*process, string, time.Time) {
	t.Helper()
	start := time.Now()
	p := ns.Start(t, nil, bin, "-data", filepath.Join(t.TempDir(), "data"), "-listen", "0.0.0.0:8080",
		"-school", schoolCode, "-school-name", schoolName)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	addr, id := listening(t, ctx, p)
	// Go reports a 0.0.0.0 listener as [::] (one dual-stack socket).
	if ap, err := netip.ParseAddrPort(addr); err != nil || !ap.Addr().IsUnspecified() || ap.Port() != 8080 {
		t.Fatalf("edged listens on %s, want every address, port 8080", addr)
	}
	t.Logf("edged in %s logged listening %v after start (edge id %s)", ns.Name, time.Since(start).Round(time.Millisecond), id)
	line := waitLog(t, ctx, p, "DNS-SD advertising")
	if !strings.Contains(line, "level=INFO") || logValue(line, "interfaces") != "["+ns.Link+"]" {
		t.Fatalf("edged does not advertise on %s alone: %s", ns.Link, line)
	}
	return p, id, start
}

// checkResolved checks avahi's resolved line against the edge in ns:
// instance, type, domain, port, TXT keys, and the address: the veth's IPv4
// address, or its IPv6 link-local one (edged advertises both; which one an
// avahi-browse -r line shows depends on which record avahi has first). The
// host name must also resolve to the veth's IPv4 address, which it returns.
func checkResolved(t *testing.T, ctx context.Context, av *avahi, ns *netns, s avahiService, edgeID string) string {
	t.Helper()
	if s.Name != schoolName || s.Type != serviceType || s.Domain != "local" || s.Port != 8080 {
		t.Errorf("avahi resolved %+v; want %q %s.local port 8080", s, schoolName, serviceType)
	}
	txt := s.TXTMap()
	for k, v := range map[string]string{"v": "1", "id": edgeID, "school": schoolCode, "api": "/api/v1"} {
		if txt[k] != v {
			t.Errorf("avahi sees TXT %s=%q, want %q (TXT %q)", k, txt[k], v, s.TXT)
		}
	}
	if s.Address != ns.Addr.String() {
		if ll := ns.linkLocal(t); slices.Contains(ll, s.Address) {
			t.Logf("avahi-browse -r gave the veth's IPv6 link-local address %s (veth IPv4 %s checked through the host name)", s.Address, ns.Addr)
		} else {
			t.Errorf("avahi resolved address %s; want the veth's %s (or its link-local %v)", s.Address, ns.Addr, ll)
		}
	}
	if !strings.HasSuffix(s.Host, ".local") {
		t.Fatalf("avahi host %q is not a .local name", s.Host)
	}
	v4, err := av.ResolveHost4(ctx, s.Host)
	if err != nil {
		t.Fatal(err)
	}
	if v4 != ns.Addr.String() {
		t.Errorf("avahi-resolve -4 %s = %s, want the veth's %s", s.Host, v4, ns.Addr)
	}
	return v4
}

// checkReachable does what a terminal does with the resolved service: GET
// /api/v1/edge and /healthz at addr and the advertised port, from namespace
// from.
func checkReachable(t *testing.T, from *netns, addr string, s avahiService, edgeID string) {
	t.Helper()
	c := clientIn(from)
	base := "http://" + net.JoinHostPort(addr, strconv.Itoa(s.Port))
	var info struct {
		ID         string `json:"id"`
		School     string `json:"school"`
		SchoolName string `json:"school_name"`
	}
	if code := getJSON(t, c, base+"/api/v1/edge", &info); code != http.StatusOK {
		t.Errorf("GET /api/v1/edge: status %d", code)
	}
	if info.ID != edgeID || info.School != schoolCode || info.SchoolName != schoolName {
		t.Errorf("GET %s/api/v1/edge from %s = %+v; want id %s school %s name %q", base, from.Name, info, edgeID, schoolCode, schoolName)
	}
	var h health
	getJSON(t, c, base+"/healthz", &h)
	if h.Status != "ok" || !h.Checks["discovery"].OK {
		t.Errorf("healthz while advertising: %+v", h)
	}
}

// shutdownTimes says, from the time= of edged's log lines, how long each
// shutdown step took after "shutting down".
func shutdownTimes(out string) string {
	at := func(msg string) (time.Time, bool) {
		line, ok := findLine(out, "msg="+msg)
		if !ok {
			return time.Time{}, false
		}
		ts, err := time.Parse(time.RFC3339Nano, logValue(line, "time"))
		return ts, err == nil
	}
	start, ok := at(`"shutting down"`)
	if !ok {
		return "no shutdown logged"
	}
	var parts []string
	for _, msg := range []string{`"DNS-SD goodbye sent"`, `"store closed"`} {
		if ts, ok := at(msg); ok {
			parts = append(parts, fmt.Sprintf("%s +%v", strings.Trim(msg, `"`), ts.Sub(start)))
		}
	}
	return "after shutting down: " + strings.Join(parts, ", ")
}

// checkCleanExit checks that edged exited 0 after a clean shutdown with the
// store closed (and, with goodbye, the DNS-SD goodbye sent), and no data race
// reported.
func checkCleanExit(t *testing.T, exitErr error, out string, goodbye bool) {
	t.Helper()
	if exitErr != nil {
		t.Errorf("edged exit after SIGTERM: %v, want status 0", exitErr)
	}
	wants := []string{"store closed"}
	if goodbye {
		wants = append(wants, "DNS-SD goodbye sent")
	}
	for _, want := range wants {
		if line, ok := findLine(out, want); !ok || !strings.Contains(line, "level=INFO") {
			t.Errorf("edged's log has no INFO %q", want)
		}
	}
	if strings.Contains(out, "DATA RACE") {
		t.Errorf("the race detector reported a data race in edged")
	}
}

// TestEdgedVisibleToAvahiOnAnotherHost: edged in namespace A, avahi-daemon
// and avahi-browse in namespace B; avahi resolves the edge with its TXT, and
// the resolved address and port reach the edge's API from B.
func TestEdgedVisibleToAvahiOnAnotherHost(t *testing.T) {
	requireRoot(t)
	bin := buildEdged(t)
	a, b := newPair(t)
	av := b.StartAvahi(t)
	edged, edgeID, started := startEdgedIn(t, a, bin)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	browse := time.Now()
	s, err := av.Resolve(ctx, serviceType, schoolName)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("avahi-browse -rtp in %s resolved %q %v after edged started (%v in avahi-browse, mostly its wait for the cache to be exhausted)",
		b.Name, s.Name, time.Since(started).Round(time.Millisecond), time.Since(browse).Round(time.Millisecond))
	v4 := checkResolved(t, ctx, av, a, s, edgeID)
	checkReachable(t, b, v4, s, edgeID)
	checkCleanExit(t, edged.Stop(), edged.Output(), true)
}

// TestEdgedVisibleToAvahiOnSameHost: avahi-daemon first, then edged, in the
// same namespace, sharing port 5353; avahi-browse there resolves the edge.
func TestEdgedVisibleToAvahiOnSameHost(t *testing.T) {
	requireRoot(t)
	bin := buildEdged(t)
	_, b := newPair(t)
	av := b.StartAvahi(t) // first, as on a real box (see edge/internal/netnstest and discovery's TestAvahiSameHost)
	edged, edgeID, started := startEdgedIn(t, b, bin)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := av.Resolve(ctx, serviceType, schoolName)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("avahi-browse -rtp resolved %q on edged's own host %v after edged started", s.Name, time.Since(started).Round(time.Millisecond))
	v4 := checkResolved(t, ctx, av, b, s, edgeID)
	checkReachable(t, b, v4, s, edgeID)
	checkCleanExit(t, edged.Stop(), edged.Output(), true)
}

// TestEdgedGoodbyeOnShutdown: after SIGTERM edged sends goodbyes, so avahi
// on another host drops it about a second later (RFC 6762 10.1: a goodbye
// leaves the records 1 s to live; without one they would stay for their
// 120 s TTL, far past this test's deadline), closes its store and exits 0.
func TestEdgedGoodbyeOnShutdown(t *testing.T) {
	requireRoot(t)
	bin := buildEdged(t)
	a, b := newPair(t)
	av := b.StartAvahi(t)
	// A browser left running, as on a terminal, timestamps when avahi
	// resolves the edge and when it reports it gone.
	watch := av.Watch(t, serviceType)
	edged, edgeID, started := startEdgedIn(t, a, bin)

	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	seen, err := waitEvent(ctx, watch, "=", schoolName)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a running avahi-browse -rp in %s resolved the edge %v after edged started", b.Name, seen.Sub(started).Round(time.Millisecond))
	s, err := av.Resolve(ctx, serviceType, schoolName)
	if err != nil {
		t.Fatal(err)
	}
	checkResolved(t, ctx, av, a, s, edgeID)

	type removal struct {
		at  time.Time
		err error
	}
	removed := make(chan removal, 1)
	go func() {
		at, err := waitEvent(ctx, watch, "-", schoolName)
		removed <- removal{at, err}
	}()

	stopped := time.Now()
	exitErr := edged.Stop() // SIGTERM; SIGKILL (a failure here) after 5 s
	t.Logf("edged exited %v after SIGTERM (%s)", time.Since(stopped).Round(time.Millisecond), shutdownTimes(edged.Output()))
	checkCleanExit(t, exitErr, edged.Output(), true)

	listed := func(svcs []avahiService) bool {
		for _, s := range svcs {
			if s.Name == schoolName && s.Event != "-" {
				return true
			}
		}
		return false
	}
	dropCtx, cancelDrop := context.WithTimeout(ctx, 15*time.Second)
	defer cancelDrop()
	var lastSeen []avahiService // the last complete avahi-browse output
	for {
		svcs, err := av.Browse(dropCtx, serviceType)
		if err == nil && !listed(svcs) {
			t.Logf("avahi-browse -rtp no longer lists the edge %v after SIGTERM", time.Since(stopped).Round(time.Millisecond))
			select {
			case r := <-removed:
				if r.err == nil {
					t.Logf("the running avahi-browse -rp reported the removal %v after SIGTERM", r.at.Sub(stopped).Round(time.Millisecond))
				}
			case <-time.After(2 * time.Second):
				t.Logf("the running avahi-browse -rp has not reported the removal yet")
			}
			return
		}
		if err == nil {
			lastSeen = svcs
		}
		if dropCtx.Err() != nil {
			t.Fatalf("avahi still lists the edge %v after SIGTERM (goodbye not received?): last complete browse %+v; last error %v",
				time.Since(stopped).Round(time.Millisecond), lastSeen, err)
		}
		select {
		case <-dropCtx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestEdgedWithoutMulticastKeepsRunning: on the host, advertising only on
// lo, which has no MULTICAST flag outside a namespace, edged keeps serving,
// warns, reports discovery as degraded, and shuts down cleanly. No root
// needed; nothing leaves lo (-mdns-interfaces lo, HTTP on 127.0.0.1).
func TestEdgedWithoutMulticastKeepsRunning(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Flags&net.FlagMulticast != 0 {
		t.Skip("lo has the MULTICAST flag here (inside a namespace set up for multicast?); this test needs a host lo without it")
	}
	bin := buildEdged(t)
	started := time.Now()
	p := startHost(t, bin, "-data", filepath.Join(t.TempDir(), "data"), "-listen", "127.0.0.1:0", "-mdns-interfaces", "lo")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	addr, _ := listening(t, ctx, p)
	warn := waitLog(t, ctx, p, "level=WARN", "DNS-SD")
	t.Logf("edged listening on %s and warned %v after start: %s", addr, time.Since(started).Round(time.Millisecond), warn)
	if line, ok := findLine(p.Output(), `msg="DNS-SD advertising`); ok {
		t.Errorf("edged claims to advertise: %s", line)
	}

	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var h health
	code := getJSON(t, c, "http://"+addr+"/healthz", &h)
	d := h.Checks["discovery"]
	if h.Status != "degraded" || d.OK || d.Detail == "" {
		t.Errorf("healthz (%d) = %+v; want status degraded with a discovery detail", code, h)
	}
	if !strings.Contains(d.Detail, "lo") || !strings.Contains(strings.ToLower(d.Detail), "multicast") {
		t.Errorf("discovery detail %q does not say that lo cannot multicast", d.Detail)
	}
	if st, ok := h.Checks["store"]; !ok || !st.OK {
		t.Errorf("healthz store check %+v, want ok", st)
	}
	var info struct {
		ID string `json:"id"`
	}
	if code := getJSON(t, c, "http://"+addr+"/api/v1/edge", &info); code != http.StatusOK || info.ID == "" {
		t.Errorf("GET /api/v1/edge = %d %+v while DNS-SD is down", code, info)
	}
	if done, err := p.Exited(); done {
		t.Fatalf("edged exited (%v) without multicast:\n%s", err, p.Output())
	}
	checkCleanExit(t, p.Stop(), p.Output(), false) // nothing was advertised, so no goodbye is due
}

// ---------------------------------------------------------------------------
// Namespace and avahi helpers: a trimmed copy of edge/internal/netnstest,
// which this package cannot import (Go's internal rule: only packages under
// edge/ may). The names and methods mirror netnstest's (RequireRoot →
// requireRoot, NewPair → newPair, Netns → netns, Process → process,
// AvahiService → avahiService), so once netnstest moves to a module-level
// internal/netnstest this section is deleted and the calls above take the
// netnstest. prefix.

// requireRoot skips t unless running as root; under CI=true it fails t.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root (ip netns, veth, avahi-daemon)")
	}
}

func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: refusing to skip)", reason)
	}
	t.Skip(reason)
}

// netns is a named network namespace made for one test, with one end of a
// veth pair in it.
type netns struct {
	Name string     // as in `ip netns exec NAME`
	Link string     // the veth inside the namespace
	Addr netip.Addr // Link's IPv4 address, on a private /24
}

// newPair makes two namespaces joined by a veth pair on a random private
// 10.x.y.0/24, each with a route for 224.0.0.0/4 out of its veth. Nothing is
// created outside them (the veth pair is made inside the first). Cleanup
// deletes them after the processes started in them have been stopped.
func newPair(t testing.TB) (a, b *netns) {
	t.Helper()
	requireRoot(t)
	var rnd [5]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(rnd[:3])
	prefix := fmt.Sprintf("10.%d.%d.", 16+int(rnd[3])%200, rnd[4])
	a = &netns{Name: "cetest-" + id + "-a", Link: "ce" + id + "a", Addr: netip.MustParseAddr(prefix + "1")}
	b = &netns{Name: "cetest-" + id + "-b", Link: "ce" + id + "b", Addr: netip.MustParseAddr(prefix + "2")}
	for _, n := range []*netns{a, b} {
		if err := ipCmd("netns", "add", n.Name); err != nil {
			t.Fatal(err)
		}
		name := n.Name
		t.Cleanup(func() {
			if err := ipCmd("netns", "del", name); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
	}
	steps := [][]string{{"-n", a.Name, "link", "add", a.Link, "type", "veth", "peer", "name", b.Link, "netns", b.Name}}
	for _, n := range []*netns{a, b} {
		steps = append(steps,
			[]string{"-n", n.Name, "link", "set", "lo", "up"},
			[]string{"-n", n.Name, "addr", "add", n.Addr.String() + "/24", "dev", n.Link},
			[]string{"-n", n.Name, "link", "set", n.Link, "up"},
			[]string{"-n", n.Name, "route", "add", "224.0.0.0/4", "dev", n.Link},
		)
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

func ipCmd(args ...string) error {
	p, err := lookSbin("ip")
	if err != nil {
		return fmt.Errorf("iproute2's ip not found (apt-get install iproute2): %w", err)
	}
	if out, err := exec.Command(p, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func lookSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if p := filepath.Join(d, name); fileExists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// command runs name inside n (`ip netns exec`, which execs the program: the
// command's process is the program itself, and gets our signals).
func (n *netns) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	p, err := lookSbin("ip")
	if err != nil {
		p = "ip"
	}
	cmd := exec.CommandContext(ctx, p, append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Start runs name inside n with env added, stopped in t.Cleanup.
func (n *netns) Start(t testing.TB, env []string, name string, args ...string) *process {
	t.Helper()
	cmd := n.command(context.Background(), name, args...)
	cmd.Env = append(os.Environ(), env...)
	return startProcess(t, cmd)
}

// process is a running program with its stdout and stderr kept.
type process struct {
	cmd  *exec.Cmd
	out  lockedBuffer
	done chan struct{}
	err  error // valid after done is closed
}

// startHost runs bin directly on the host, stopped in t.Cleanup.
func startHost(t testing.TB, bin string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return startProcess(t, cmd)
}

func startProcess(t testing.TB, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", strings.Join(cmd.Args, " "), err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		err := p.Stop()
		if t.Failed() {
			t.Logf("%s exited (%v); output:\n%s", strings.Join(cmd.Args, " "), err, p.Output())
		}
	})
	return p
}

func (p *process) Output() string { return p.out.String() }

// Exited reports whether the process has ended, and how.
func (p *process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM, then SIGKILL if the process has not exited within
// 5 s, and returns its exit error (nil for status 0).
func (p *process) Stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 4<<20 {
		return len(p), nil // keep the first 4 MiB
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// avahi is a private dbus-daemon + avahi-daemon in one namespace.
type avahi struct {
	ns       *netns
	env      []string
	browser  string
	resolver string // avahi-resolve
}

// StartAvahi starts dbus-daemon and avahi-daemon (limited to n.Link, under a
// private tmpfs /run) inside n and waits for "Server startup complete".
func (n *netns) StartAvahi(t testing.TB) *avahi {
	t.Helper()
	requireRoot(t)
	paths := map[string]string{}
	for _, name := range []string{"dbus-daemon", "avahi-daemon", "avahi-browse", "avahi-resolve"} {
		p, err := lookSbin(name)
		if err != nil {
			skipOrFail(t, name+" not installed (apt-get install avahi-daemon avahi-utils dbus)")
		}
		paths[name] = p
	}
	dir, err := os.MkdirTemp("", "campusedge-avahi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // avahi drops root and must reach the socket
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "system_bus_socket")
	busConf, avahiConf := filepath.Join(dir, "dbus.conf"), filepath.Join(dir, "avahi-daemon.conf")
	if err := os.WriteFile(busConf, []byte(fmt.Sprintf(dbusConfig, sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(avahiConf, []byte(fmt.Sprintf(avahiConfig, "avahi-"+n.Link, n.Link)), 0o644); err != nil {
		t.Fatal(err)
	}
	av := &avahi{ns: n, env: []string{"DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + sock}, browser: paths["avahi-browse"], resolver: paths["avahi-resolve"]}
	bus := n.Start(t, nil, paths["dbus-daemon"], "--config-file="+busConf, "--nofork", "--nopidfile")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !fileExists(sock) {
		if done, err := bus.Exited(); done {
			t.Fatalf("dbus-daemon exited: %v\n%s", err, bus.Output())
		}
		select {
		case <-ctx.Done():
			t.Fatalf("dbus-daemon made no socket at %s", sock)
		case <-time.After(10 * time.Millisecond):
		}
	}
	daemon := n.Start(t, av.env, "/bin/sh", "-c",
		`mount -t tmpfs -o mode=0755 tmpfs /run && exec "$0" -f "$1" --no-chroot`, paths["avahi-daemon"], avahiConf)
	waitLog(t, ctx, daemon, "Server startup complete")
	return av
}

// Browse runs `avahi-browse -rtpk TYPE` once in the namespace.
func (av *avahi) Browse(ctx context.Context, serviceType string) ([]avahiService, error) {
	cmd := av.ns.command(ctx, av.browser, "-r", "-t", "-p", "-k", serviceType)
	cmd.Env = append(os.Environ(), av.env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("avahi-browse -rtpk %s: %w: %s", serviceType, err, strings.TrimSpace(stderr.String()))
	}
	return parseAvahiBrowse(string(out))
}

// Watch starts `avahi-browse -rpk TYPE` in the namespace, left running to
// timestamp events as they happen (stopped in t.Cleanup).
func (av *avahi) Watch(t testing.TB, serviceType string) *process {
	t.Helper()
	return av.ns.Start(t, av.env, av.browser, "-r", "-p", "-k", serviceType)
}

// waitEvent waits until the watcher's output has an IPv4 event ev ("=",
// "-") for instance and returns when it was first seen (polled every 5 ms).
func waitEvent(ctx context.Context, w *process, ev, instance string) (time.Time, error) {
	for {
		out := w.Output()
		svcs, _ := parseAvahiBrowse(out[:strings.LastIndex(out, "\n")+1]) // complete lines only
		for _, s := range svcs {
			if s.Event == ev && s.Protocol == "IPv4" && s.Name == instance {
				return time.Now(), nil
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("avahi-browse -rp saw no %q event for %q: %w\n%s", ev, instance, ctx.Err(), out)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// ResolveHost4 asks avahi for host's IPv4 address (`avahi-resolve -4 -n`).
func (av *avahi) ResolveHost4(ctx context.Context, host string) (string, error) {
	cmd := av.ns.command(ctx, av.resolver, "-4", "-n", host)
	cmd.Env = append(os.Environ(), av.env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("avahi-resolve -4 -n %s: %w: %s", host, err, strings.TrimSpace(stderr.String()))
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return "", fmt.Errorf("avahi-resolve -4 -n %s: output %q: want NAME ADDRESS", host, out)
	}
	return f[1], nil
}

// linkLocal returns the IPv6 link-local addresses of n's veth.
func (n *netns) linkLocal(t testing.TB) []string {
	t.Helper()
	p, err := lookSbin("ip")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, "-n", n.Name, "-6", "-o", "addr", "show", "dev", n.Link, "scope", "link").Output()
	if err != nil {
		t.Fatalf("ip -n %s addr show dev %s: %v", n.Name, n.Link, err)
	}
	var addrs []string
	for _, f := range strings.Fields(string(out)) {
		if pfx, err := netip.ParsePrefix(f); err == nil && pfx.Addr().Is6() {
			addrs = append(addrs, pfx.Addr().String())
		}
	}
	return addrs
}

// Resolve runs Browse until a resolved IPv4 line for instance appears, or
// fails when ctx is done with the last output seen.
func (av *avahi) Resolve(ctx context.Context, serviceType, instance string) (avahiService, error) {
	var last []avahiService
	var lastErr error
	for {
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		svcs, err := av.Browse(bctx, serviceType)
		cancel()
		for _, s := range svcs {
			if s.Event == "=" && s.Protocol == "IPv4" && s.Name == instance {
				return s, nil
			}
		}
		last, lastErr = svcs, err
		select {
		case <-ctx.Done():
			return avahiService{}, fmt.Errorf("avahi-browse never resolved %q (last lines %+v, last error %v): %w", instance, last, lastErr, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// avahiService is one line of `avahi-browse -p` output.
type avahiService struct {
	Event, Iface, Protocol, Name, Type, Domain string // Event: + appeared, - gone, = resolved
	Host, Address                              string // resolved lines only
	Port                                       int
	TXT                                        []string
}

// TXTMap returns the TXT strings as key → value (first occurrence wins).
func (s avahiService) TXTMap() map[string]string {
	m := make(map[string]string, len(s.TXT))
	for _, f := range s.TXT {
		k, v, _ := strings.Cut(f, "=")
		if _, dup := m[k]; !dup {
			m[k] = v
		}
	}
	return m
}

func parseAvahiBrowse(out string) ([]avahiService, error) {
	var svcs []avahiService
	for _, line := range strings.Split(out, "\n") {
		if line = strings.TrimRight(line, "\r"); line == "" {
			continue
		}
		f := strings.SplitN(line, ";", 10)
		if len(f) < 6 || (f[0] != "+" && f[0] != "-" && f[0] != "=") || (f[0] == "=" && len(f) < 10) {
			return svcs, fmt.Errorf("avahi-browse line %q not understood", line)
		}
		s := avahiService{Event: f[0], Iface: f[1], Protocol: f[2], Name: unescapeAvahi(f[3]), Type: f[4], Domain: f[5]}
		if s.Event == "=" {
			s.Host, s.Address = f[6], f[7]
			var err error
			if s.Port, err = strconv.Atoi(f[8]); err != nil {
				return svcs, fmt.Errorf("avahi-browse line %q: port: %w", line, err)
			}
			if s.TXT, err = parseAvahiTXT(f[9]); err != nil {
				return svcs, fmt.Errorf("avahi-browse line %q: %w", line, err)
			}
		}
		svcs = append(svcs, s)
	}
	return svcs, nil
}

// unescapeAvahi undoes avahi's label escaping: \DDD (decimal byte) and \c.
func unescapeAvahi(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			if n, _ := strconv.Atoi(s[i+1 : i+4]); n <= 255 {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// parseAvahiTXT splits `"a=1" "b=2"` into its strings (\" and \\ escaped).
func parseAvahiTXT(s string) ([]string, error) {
	var out []string
	for i := 0; i < len(s); {
		if s[i] == ' ' {
			i++
			continue
		}
		if s[i] != '"' {
			return nil, fmt.Errorf("TXT %q: expected a quote at %d", s, i)
		}
		var b strings.Builder
		for i++; ; {
			if i >= len(s) {
				return nil, fmt.Errorf("TXT %q: unterminated string", s)
			}
			c := s[i]
			if c == '\\' && i+1 < len(s) {
				b.WriteByte(s[i+1])
				i += 2
				continue
			}
			i++
			if c == '"' {
				break
			}
			b.WriteByte(c)
		}
		out = append(out, b.String())
	}
	return out, nil
}

// dbusConfig is a system bus that lets anyone own and call anything: it is
// private to one test.
const dbusConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`

// avahiConfig: IPv4 only, one interface, nothing published but its host name.
const avahiConfig = `[server]
host-name=%s
use-ipv4=yes
use-ipv6=no
allow-interfaces=%s
enable-dbus=yes

[wide-area]
enable-wide-area=no

[publish]
publish-hinfo=no
publish-workstation=no

[reflector]
enable-reflector=no
`
