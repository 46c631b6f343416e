//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/remote"

	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/netnstest"
)

// The school LAN of TestTeacherAndClassroomOnTheLANOverHTTPS: three hosts
// on one bridge, nothing on loopback.
const (
	lanPrefix = "10.77.0.0/24"
	edgeHost  = "10.77.0.1" // host A: the real edged
	// host B (10.77.0.2): the teacher's laptop, Chromium trusting the edge
	// CA in its NSS database; host C (10.77.0.3): the classroom screen,
	// Chromium pinned to the edge's key as classterm -kiosk starts it.
	edgeHTTP  = edgeHost + ":8080"
	edgeHTTPS = edgeHost + ":8443" // edged's default: -listen's host, port 8443

	// A second edged on A behind a (pretend) TLS-terminating proxy
	// (-https-redirect=false): its pages are served on plain HTTP, where
	// they are not secure contexts.
	plainEdgeHTTP  = edgeHost + ":8081"
	plainEdgeHTTPS = edgeHost + ":8444"

	devtoolsPort  = "9222" // Chromium's, on 127.0.0.1 of its own host
	classroomName = "初一(3)班"
	classTitle    = "数学 · Maths in 初一(3)班"
)

// TestTeacherAndClassroomOnTheLANOverHTTPS is the three-host test:
// edged on host A, the teacher page in Chromium on host B (trusting the
// edge CA through an NSS database), the classroom page on host C (Chromium
// pinned to the edge's key, no CA installed, as classterm -kiosk starts
// it). The teacher starts a class for 初一(3)班 and publishes its fake
// camera; the classroom page joins by itself, decodes the lesson and sends
// return video that the teacher page decodes. The teacher page over plain
// HTTP is redirected to HTTPS, and on an edge that does not redirect it is
// not a secure context (and says where to go).
func TestTeacherAndClassroomOnTheLANOverHTTPS(t *testing.T) {
	ctx, cancel, hosts := browserLAN(t, 3, 150*time.Second)
	defer cancel()
	a, b, c := hosts[0], hosts[1], hosts[2]
	if a.Addr.String() != edgeHost {
		t.Fatalf("host A is %s, want %s", a.Addr, edgeHost)
	}

	// Host A: the real edged; host B fetches its CA over plain HTTP, as
	// the console tells a school admin to, and installs it in the
	// teacher's NSS database.
	se := startSchoolEdge(t, ctx, a, b)
	pin, admin, home, api := se.pin, se.admin, se.home, se.api

	// The admin (over HTTPS from B) creates the classroom and a pairing code.
	var room struct{ ID, Name string }
	api.call(t, ctx, "POST", "/api/v1/classrooms", map[string]string{"name": classroomName, "room_code": "7-3"}, http.StatusCreated, &room)
	if room.Name != classroomName {
		t.Fatalf("classroom created as %q, want %q", room.Name, classroomName)
	}
	var pc struct{ Code string }
	api.call(t, ctx, "POST", "/api/v1/classrooms/"+room.ID+"/pairing-codes", nil, http.StatusCreated, &pc)

	// Host C: the classroom screen, paired, waiting for a class.
	screen := startClassroomScreen(t, ctx, c, pin, pc.Code)
	pagePoll(t, screen, "classroom page paired and waiting", `localStorage.length === 0 && document.getElementById("status").textContent === "no class now"`)
	requireSecureAt(t, screen, edgeHost)

	// Host B: the teacher signs in (admin token), starts the class and
	// publishes the fake camera.
	teacherBrowser := startChromiumIn(t, ctx, b, []string{"HOME=" + home}, "")
	teacher := newTab(t, teacherBrowser)
	navigateTab(t, teacher, "https://"+edgeHTTPS+"/teacher.html")
	requireSecureAt(t, teacher, edgeHost)
	pageEval[bool](t, teacher, `document.getElementById("admin").value = `+jsQuote(admin)+`; document.getElementById("load").click(); true`)
	pagePoll(t, teacher, "the classroom listed", `document.querySelectorAll(".room").length === 1 && document.querySelector(".room").parentElement.textContent.includes(`+jsQuote(classroomName)+`)`)
	pageEval[bool](t, teacher, `document.getElementById("class-title").value = `+jsQuote(classTitle)+`; document.getElementById("start").click(); true`)
	pagePoll(t, teacher, "teacher publishing", `window.teacher.published === true`)

	// Host C joins by itself, decodes the lesson and sends return video,
	// which the teacher page decodes.
	pagePoll(t, screen, "classroom joined and publishing", `window.room.published === true`)
	pagePoll(t, screen, "classroom decoding the lesson", `(window.room.conn.videoStats().then(f => window.vf = f), !!window.vf && window.vf.master > 0)`)
	pagePoll(t, teacher, "teacher decoding the classroom", `(window.teacher.conn.videoStats().then(f => window.vf = f), !!window.vf && window.vf["classroom:`+room.ID+`"] > 0)`)
	if errs := pageEval[string](t, teacher, `JSON.stringify(window.teacher.errors)`); errs != "[]" {
		t.Errorf("teacher page errors: %s", errs)
	}
	if errs := pageEval[string](t, screen, `JSON.stringify(window.room.errors)`); errs != "[]" {
		t.Errorf("classroom page errors: %s", errs)
	}

	// The same teacher page over plain HTTP is sent to HTTPS.
	redirected := newTab(t, teacherBrowser)
	navigateTab(t, redirected, "http://"+edgeHTTP+"/teacher.html")
	pagePoll(t, redirected, "plain HTTP teacher page redirected to HTTPS", `location.href === "https://`+edgeHTTPS+`/teacher.html"`)
	requireSecureAt(t, redirected, edgeHost)

	// An edge that does not redirect serves the page on plain HTTP, where
	// it is not a secure context: no camera, and the page says where to go.
	plainData := filepath.Join(t.TempDir(), "plain")
	plain := a.Start(t, nil, built.edged, "-data", plainData, "-listen", plainEdgeHTTP, "-https-listen", plainEdgeHTTPS, "-https-redirect=false", "-mdns=false")
	waitLog(t, ctx, plain, `msg="listening https"`)
	insecure := newTab(t, teacherBrowser)
	navigateTab(t, insecure, "http://"+plainEdgeHTTP+"/teacher.html")
	if !pageEval[bool](t, insecure, `location.protocol === "http:" && window.isSecureContext === false && navigator.mediaDevices === undefined`) {
		t.Fatalf("the teacher page over plain HTTP at %s: %s", plainEdgeHTTP, pageEval[string](t, insecure, `location.href + " isSecureContext=" + window.isSecureContext`))
	}
	want := "https://" + plainEdgeHTTPS + "/teacher.html"
	pagePoll(t, insecure, "the page names its HTTPS address",
		`(() => { const e = document.getElementById("media-help"); return !!e && !e.hidden && e.getClientRects().length > 0 && e.textContent.includes(`+jsQuote(want)+`); })()`)
}

// startClassroomScreen starts host C's classroom screen exactly as a school
// does: the real `classterm -pair CODE -kiosk`, which pairs over HTTPS
// (the code proves the edge's key, CPace), keeps the pin, and runs Chromium
// pinned to that key (--ignore-certificate-errors-spki-list, no CA: an
// empty HOME) on the classroom page, already paired. The -kiosk-flag
// additions only make it drivable here: headless, no sandbox as root, the
// fake camera, and DevTools on host C's 127.0.0.1. It checks the pin the
// agent learnt is edged's and returns the classroom page's tab.
func startClassroomScreen(t *testing.T, ctx context.Context, c *netnstest.Netns, pin, code string) context.Context {
	t.Helper()
	return startClassroomScreenAt(t, ctx, c, edgeHTTP, edgeHTTPS, pin, code)
}

// startClassroomScreenAt is startClassroomScreen for the edge whose plain
// HTTP address is httpAddr and HTTPS address httpsAddr (another school's).
func startClassroomScreenAt(t *testing.T, ctx context.Context, c *netnstest.Netns, httpAddr, httpsAddr, pin, code string) context.Context {
	t.Helper()
	data := t.TempDir()
	agent := c.Start(t, []string{"HOME=" + t.TempDir()}, built.classterm, "-data", data,
		"-edge", "http://"+httpAddr, "-pair", code, "-kiosk", "-chromium", browsertest.ChromiumPath,
		"-kiosk-flag=--headless", "-kiosk-flag=--no-sandbox", "-kiosk-flag=--disable-gpu",
		"-kiosk-flag=--use-fake-device-for-media-stream", "-kiosk-flag=--remote-debugging-port="+devtoolsPort)
	waitLog(t, ctx, agent, "kiosk: Chromium running")
	var st struct {
		EdgeURL string `json:"edge_url"`
		EdgePin string `json:"edge_pin"`
	}
	if b, err := os.ReadFile(filepath.Join(data, "terminal.json")); err != nil || json.Unmarshal(b, &st) != nil || st.EdgePin != pin || st.EdgeURL != "https://"+httpsAddr {
		t.Fatalf("classterm kept %+v (%v), want the edge's pin %s at https://%s", st, err, pin, httpsAddr)
	}
	return attachTab(t, connectDevTools(t, ctx, c), "/classroom.html")
}

// lanAPI is the admin API over HTTPS from a host on the LAN.
type lanAPI struct {
	base, token string
	client      *http.Client
}

func (a *lanAPI) call(t *testing.T, ctx context.Context, method, path string, body any, want int, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s (want %d)", method, path, resp.StatusCode, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// httpGetIn GETs url from host ns and returns the body of a 200 answer.
func httpGetIn(t *testing.T, ctx context.Context, ns *netnstest.Netns, url string) []byte {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := clientIn(ns).Do(req)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", url, ns.Addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s from %s: %d %s", url, ns.Addr, resp.StatusCode, b)
	}
	return b
}

// nssHome makes a HOME whose NSS database (the one Chromium on Linux uses)
// trusts caPEM to identify web sites, as FIELD-NOTES verified.
func nssHome(t *testing.T, ctx context.Context, caPEM []byte) string {
	t.Helper()
	home := t.TempDir()
	db := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(home, "campusedge-ca.pem")
	if err := os.WriteFile(ca, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-d", "sql:" + db, "-N", "--empty-password"},
		{"-d", "sql:" + db, "-A", "-t", "C,,", "-n", "campusedge", "-i", ca},
	} {
		if out, err := exec.CommandContext(ctx, "certutil", args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return home
}

// startChromiumIn runs Chromium on host ns with the verified flags
// (browsertest.Flags; trusting pin when it is not empty), extra arguments,
// and its DevTools port on ns's 127.0.0.1, and returns a browser context
// for it, reached through a forwarder on the test's own 127.0.0.1.
func startChromiumIn(t *testing.T, ctx context.Context, ns *netnstest.Netns, env []string, pin string, extra ...string) context.Context {
	t.Helper()
	var opts []browsertest.Option
	if pin != "" {
		opts = append(opts, browsertest.TrustPin(pin))
	}
	args := append(browsertest.Flags(t.TempDir(), opts...), "--remote-debugging-port="+devtoolsPort)
	p := ns.Start(t, env, browsertest.ChromiumPath, append(args, extra...)...)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := p.WaitOutput(wctx, "DevTools listening on"); err != nil {
		t.Fatal(err)
	}
	return connectDevTools(t, ctx, ns)
}

// connectDevTools drives the Chromium listening for DevTools on ns's
// 127.0.0.1 (waiting up to 20 s for it) from the test, and opens a tab.
func connectDevTools(t *testing.T, ctx context.Context, ns *netnstest.Netns) context.Context {
	t.Helper()
	// Up to a minute: under -race on a loaded 2-core CI machine a kiosk
	// Chromium was seen taking longer than 20 s to open its DevTools port.
	for deadline := time.Now().Add(time.Minute); ; {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := ns.DialContext(dctx, "tcp", "127.0.0.1:"+devtoolsPort)
		cancel()
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no DevTools on %s: %v", ns.Addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	fwd := forwardDevTools(t, ns)
	actx, acancel := remote.NewAllocator(ctx, "http://"+fwd)
	t.Cleanup(acancel)
	var log syncLog
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(log.printf), chromedp.WithErrorf(log.printf))
	t.Cleanup(func() {
		bcancel()
		if t.Failed() {
			t.Logf("chromedp log (host %s):\n%s", ns.Addr, log.String())
		}
	})
	open(t, bctx, bcancel, fmt.Sprintf("connect to chromium on %s", ns.Addr)) // and open a blank tab
	return bctx
}

// forwardDevTools listens on the test's 127.0.0.1 and forwards each
// connection to Chromium's DevTools port on ns's 127.0.0.1, dialled from
// inside ns. It returns host:port; t.Cleanup closes it and every
// connection, and waits for its goroutines.
func forwardDevTools(t *testing.T, ns *netnstest.Netns) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
		wg    sync.WaitGroup
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil { // closed
			return false
		}
		conns[c] = true
		return true
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			up, err := ns.DialContext(dctx, "tcp", "127.0.0.1:"+devtoolsPort)
			cancel()
			if err != nil {
				c.Close()
				continue
			}
			if !track(c) || !track(up) {
				c.Close()
				up.Close()
				return
			}
			wg.Go(func() { _, _ = io.Copy(up, c); up.Close() })
			wg.Go(func() { _, _ = io.Copy(c, up); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// newTab opens a new tab in browser.
func newTab(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	open(t, tab, cancel, "open a tab")
	return tab
}

// attachTab attaches to the page whose URL contains urlPart, which the
// browser opened by itself (a kiosk's page).
func attachTab(t *testing.T, browser context.Context, urlPart string) context.Context {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		tctx, cancel := context.WithTimeout(browser, 5*time.Second)
		targets, err := chromedp.Targets(tctx)
		cancel()
		if err != nil {
			t.Fatalf("list chromium's pages: %v", err)
		}
		for _, ti := range targets {
			if ti.Type == "page" && strings.Contains(ti.URL, urlPart) {
				tab, tcancel := chromedp.NewContext(browser, chromedp.WithTargetID(ti.TargetID))
				t.Cleanup(tcancel)
				open(t, tab, tcancel, "attach to "+ti.URL)
				// The browser may still be loading it, and an evaluation
				// in a document that is being replaced fails: reload it
				// under chromedp's eyes (the page keeps its URL and its
				// localStorage, as a kiosk's reload would).
				rctx, rcancel := context.WithTimeout(tab, 15*time.Second)
				defer rcancel()
				if err := chromedp.Do(rctx, chromedp.Reload()); err != nil {
					t.Fatalf("reload %s: %v", ti.URL, err)
				}
				pagePoll(t, tab, "page loaded", `document.readyState === "complete"`)
				return tab
			}
		}
		if time.Now().After(deadline) {
			var urls []string
			for _, ti := range targets {
				urls = append(urls, ti.Type+" "+ti.URL)
			}
			t.Fatalf("no page at %s in chromium; pages: %q", urlPart, urls)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// open runs the first (empty) Do of a chromedp context, which attaches it
// to its browser or tab. Its context must not carry a timeout (it would
// end the tab with it), so the wait is bounded here: after 20 s cancel
// ends the context and t fails.
func open(t *testing.T, ctx context.Context, cancel context.CancelFunc, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- chromedp.Do(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(20 * time.Second):
		cancel()
		<-done
		t.Fatalf("%s: no answer within 20 s", what)
	}
}

func navigateTab(t *testing.T, tab context.Context, url string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(tab, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
}

// requireSecureAt fails t unless the page is a secure context served over
// HTTPS from host (a LAN address, not loopback).
func requireSecureAt(t *testing.T, tab context.Context, host string) {
	t.Helper()
	if !pageEval[bool](t, tab, `window.isSecureContext === true && location.protocol === "https:" && location.hostname === `+jsQuote(host)) {
		t.Fatalf("not a secure context at https://%s: %s", host, pageEval[string](t, tab, `location.href + " isSecureContext=" + window.isSecureContext`))
	}
}

func pageEval[T any](t *testing.T, tab context.Context, expr string) T {
	t.Helper()
	ectx, cancel := context.WithTimeout(tab, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ectx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %.100s: %v", expr, err)
	}
	return v
}

// pagePoll waits up to 20 s for expr to be true in the page.
func pagePoll(t *testing.T, tab context.Context, what, expr string) {
	t.Helper()
	const within = 20 * time.Second
	pctx, cancel := context.WithTimeout(tab, within+2*time.Second)
	defer cancel()
	if _, err := chromedp.Run(pctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(within), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		dctx, dcancel := context.WithTimeout(tab, 2*time.Second)
		defer dcancel()
		text, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`location.href + " (" + document.readyState + ")\n" + (document.body ? document.body.innerText : "") +
			"\nloaded: " + JSON.stringify(performance.getEntries().map(e => [e.name, e.responseStatus, Math.round(e.duration)]))`))
		t.Fatalf("%s: %v\npage:\n%s", what, err, text)
	}
}

func jsQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

// syncLog collects chromedp's log lines; shown only when the test fails.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) printf(f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, f+"\n", a...)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// browserLAN is the start of a browser test at LAN addresses: it needs
// root, Chromium and certutil, and gets a context that ends after timeout
// (the caller defers cancel, so it ends before the namespaces' cleanups)
// and n hosts on the test LAN lanPrefix.
func browserLAN(t *testing.T, n int, timeout time.Duration) (context.Context, context.CancelFunc, []*netnstest.Netns) {
	t.Helper()
	netnstest.RequireRoot(t)
	browsertest.Require(t)
	requireCertutil(t)
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	return ctx, cancel, netnstest.NewLAN(t, netip.MustParsePrefix(lanPrefix), n)
}

// requireCertutil: the teacher's Chromium trusts the edge's CA through
// its NSS database, made with certutil (Debian libnss3-tools). Skips
// without it, or fails under CI=true.
func requireCertutil(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("certutil"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("certutil is required in CI: %v (apt-get install libnss3-tools)", err)
		}
		t.Skipf("certutil not installed (%v)", err)
	}
}

// schoolEdge is a real edged on host A of a test LAN, serving HTTPS on
// its default port at edgeHTTPS, with what the teacher's machine (host B)
// has of it: the edge's CA fetched over plain HTTP and installed in an
// NSS home (home: HOME for B's Chromium), and the admin API over HTTPS
// trusting that CA.
type schoolEdge struct {
	proc             *netnstest.Process
	pin, admin, home string
	api              *lanAPI
}

// startSchoolEdge starts edged on a with args after its data dir,
// -listen edgeHTTP and -mdns=false, and sets up b as schoolEdge says.
func startSchoolEdge(t *testing.T, ctx context.Context, a, b *netnstest.Netns, args ...string) *schoolEdge {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	proc := a.Start(t, nil, built.edged, append([]string{"-data", data, "-listen", edgeHTTP, "-mdns=false"}, args...)...)
	line := waitLog(t, ctx, proc, `msg="listening https"`)
	if got := logValue(line, "addr"); got != edgeHTTPS {
		t.Fatalf("edged serves HTTPS on %s, want %s: %s", got, edgeHTTPS, line)
	}
	tok, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	se := &schoolEdge{proc: proc, pin: logValue(line, "spki_pin"), admin: strings.TrimSpace(string(tok))}
	caPEM := httpGetIn(t, ctx, b, "http://"+edgeHTTP+certs.CAPath)
	se.home = nssHome(t, ctx, caPEM)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("the CA download is not a PEM certificate: %.80q", caPEM)
	}
	se.api = &lanAPI{base: "https://" + edgeHTTPS, token: se.admin, client: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: b.DialContext, TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
	}}
	return se
}
