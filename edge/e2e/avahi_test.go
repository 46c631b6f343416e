//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/netnstest"
)

// These tests run the real edged binary (built by TestMain, with -race when
// the tests are) and check what a standard DNS-SD browser (avahi-browse)
// sees of it. edged and avahi-daemon run in network namespaces joined by a
// veth pair (netnstest), so nothing is advertised outside them; without root
// they skip, except under CI=true, where they fail.
// TestEdgedWithoutMulticastKeepsRunning needs no root: edged on the host,
// HTTP and DNS-SD limited to lo.

const (
	serviceType = "_campusedge._tcp"
	schoolCode  = "SCH1"
	schoolName  = "Escuela Norte" // also the DNS-SD instance name: InstanceName keeps it as is
)

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

// clientIn is an HTTP client whose connections start in namespace ns: a
// terminal on that host.
func clientIn(ns *netnstest.Netns) *http.Client {
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: ns.DialContext},
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
func startEdgedIn(t *testing.T, ns *netnstest.Netns) (*netnstest.Process, string, time.Time) {
	t.Helper()
	start := time.Now()
	p := ns.Start(t, nil, built.edged, "-data", filepath.Join(t.TempDir(), "data"), "-listen", "0.0.0.0:8080",
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
func checkResolved(t *testing.T, ctx context.Context, av *netnstest.Avahi, ns *netnstest.Netns, s netnstest.AvahiService, edgeID string) string {
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
		ll, err := ns.LinkLocal()
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(ll, func(a netip.Addr) bool { return a.String() == s.Address }) {
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
	if v4 != ns.Addr {
		t.Errorf("avahi-resolve -4 %s = %s, want the veth's %s", s.Host, v4, ns.Addr)
	}
	return v4.String()
}

// checkReachable does what a terminal does with the resolved service: GET
// /api/v1/edge and /healthz at addr and the advertised port, from namespace
// from.
func checkReachable(t *testing.T, from *netnstest.Netns, addr string, s netnstest.AvahiService, edgeID string) {
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
	netnstest.RequireRoot(t)
	a, b := netnstest.NewPair(t)
	av := b.StartAvahi(t)
	edged, edgeID, started := startEdgedIn(t, a)

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
	netnstest.RequireRoot(t)
	_, b := netnstest.NewPair(t)
	av := b.StartAvahi(t) // first, as on a real box (see edge/internal/netnstest and discovery's TestAvahiSameHost)
	edged, edgeID, started := startEdgedIn(t, b)

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
	netnstest.RequireRoot(t)
	a, b := netnstest.NewPair(t)
	av := b.StartAvahi(t)
	// A browser left running, as on a terminal, timestamps when avahi
	// resolves the edge and when it reports it gone.
	watch := av.Watch(t, serviceType)
	edged, edgeID, started := startEdgedIn(t, a)

	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	seen, err := watch.WaitEvent(ctx, "=", schoolName)
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
		at, err := watch.WaitEvent(ctx, "-", schoolName)
		removed <- removal{at, err}
	}()

	stopped := time.Now()
	exitErr := edged.Stop() // SIGTERM; SIGKILL (a failure here) after 5 s
	t.Logf("edged exited %v after SIGTERM (%s)", time.Since(stopped).Round(time.Millisecond), shutdownTimes(edged.Output()))
	checkCleanExit(t, exitErr, edged.Output(), true)

	listed := func(svcs []netnstest.AvahiService) bool {
		for _, s := range svcs {
			if s.Name == schoolName && s.Event != "-" {
				return true
			}
		}
		return false
	}
	dropCtx, cancelDrop := context.WithTimeout(ctx, 15*time.Second)
	defer cancelDrop()
	var lastSeen []netnstest.AvahiService // the last complete avahi-browse output
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
	started := time.Now()
	p := start(t, built.edged, "-data", filepath.Join(t.TempDir(), "data"), "-listen", "127.0.0.1:0", "-mdns-interfaces", "lo")
	addr := p.waitLine(t, listeningRE, 15*time.Second)[1]
	warn := p.waitLine(t, regexp.MustCompile(`level=WARN .*DNS-SD.*`), 15*time.Second)[0]
	t.Logf("edged listening on %s and warned %v after start: %s", addr, time.Since(started).Round(time.Millisecond), warn)
	if line, ok := findLine(p.logs(), `msg="DNS-SD advertising`); ok {
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
	p.signal(t, syscall.SIGTERM)
	var exitErr error
	if code := p.wait(t, 10*time.Second); code != 0 {
		exitErr = fmt.Errorf("exit status %d", code)
	}
	checkCleanExit(t, exitErr, p.logs(), false) // nothing was advertised, so no goodbye is due
}
