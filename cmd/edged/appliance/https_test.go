package appliance

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/netnstest"
)

// lanEdge is an in-process edged bound to a LAN address of a test
// namespace, so that its clients are not loopback.
type lanEdge struct {
	http, https string // base URLs
	admin       string
	roots       *x509.CertPool
	pin         string
}

func startLANEdge(t *testing.T, redirect bool) *lanEdge {
	t.Helper()
	cfg := config.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "10.231.0.1:0"
	cfg.MDNS = false
	cfg.HTTPSRedirect = redirect
	ctx, stop := context.WithCancel(t.Context())
	type ready struct {
		addr net.Addr
		tm   *certs.Manager
	}
	plain, tlsReady := make(chan net.Addr, 1), make(chan ready, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.DiscardHandler), Options{
			Ready:    func(a net.Addr) { plain <- a },
			ReadyTLS: func(a net.Addr, tm *certs.Manager) { tlsReady <- ready{a, tm} },
		})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("edged: %v", err)
		}
	})
	var e lanEdge
	for range 2 {
		select {
		case a := <-plain:
			e.http = "http://" + a.String()
		case r := <-tlsReady:
			e.https = "https://" + r.addr.String()
			e.roots = x509.NewCertPool()
			e.roots.AppendCertsFromPEM(r.tm.CAPEM())
			e.pin = r.tm.Pin()
		case err := <-done:
			t.Fatalf("edged: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("edged did not start")
		}
	}
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	e.admin = strings.TrimSpace(string(tok))
	return &e
}

func (e *lanEdge) client(trusted bool) *http.Client {
	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: e.roots}}
	if !trusted {
		tr.TLSClientConfig = &tls.Config{RootCAs: x509.NewCertPool()}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, method, url, token string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestHTTPSOnTheLAN: a client at a LAN address gets pages, API and the
// control WebSocket over TLS (HTTP/2 for pages), and on plain HTTP only what
// carries no token: pages are redirected, token-bearing calls refused.
func TestHTTPSOnTheLAN(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	if err := netnstest.AddAddr("lo", "10.231.0.1/32"); err != nil {
		t.Fatal(err)
	}
	e := startLANEdge(t, true)
	c := e.client(true)
	_, httpsPort, _ := net.SplitHostPort(strings.TrimPrefix(e.https, "https://"))

	// Over HTTPS, verified against the edge CA for the LAN address.
	resp, body := get(t, c, "GET", e.https+"/teacher.html", "")
	if resp.StatusCode != 200 || resp.Proto != "HTTP/2.0" || !strings.Contains(body, "<html") {
		t.Fatalf("teacher page over HTTPS: %d %s", resp.StatusCode, resp.Proto)
	}
	if resp, body := get(t, c, "GET", e.https+"/api/v1/classrooms", e.admin); resp.StatusCode != 200 {
		t.Fatalf("admin API over HTTPS: %d %s", resp.StatusCode, body)
	}
	if _, err := e.client(false).Get(e.https + "/healthz"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client that does not trust the edge: %v", err)
	}
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: e.roots}, HandshakeTimeout: 5 * time.Second}
	ws, wresp, err := d.Dial("wss"+strings.TrimPrefix(e.https, "https")+"/api/v1/ws", http.Header{"Authorization": {"Bearer " + e.admin}})
	if err != nil {
		code := 0
		if wresp != nil {
			code = wresp.StatusCode
		}
		t.Fatalf("wss control channel: %v (%d)", err, code)
	}
	ws.Close()

	// Plain HTTP from the LAN: a page is redirected to the same page over HTTPS.
	resp, _ = get(t, c, "GET", e.http+"/teacher.html?x=1", "")
	if want := "https://10.231.0.1:" + httpsPort + "/teacher.html?x=1"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Fatalf("page over plain HTTP: %d %q, want 308 to %s", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	// A call with a token is refused, saying where to go.
	resp, body = get(t, c, "GET", e.http+"/api/v1/classrooms", e.admin)
	var eb struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal([]byte(body), &eb)
	if resp.StatusCode != http.StatusForbidden || eb.Error.Code != "https_required" || !strings.Contains(eb.Error.Message, "https://10.231.0.1:"+httpsPort) {
		t.Fatalf("API over plain HTTP from the LAN: %d %s", resp.StatusCode, body)
	}
	for _, p := range []string{"/whip/s1", "/api/v1/ws"} {
		if resp, body := get(t, c, "POST", e.http+p, ""); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("POST %s over plain HTTP from the LAN: %d %s", p, resp.StatusCode, body)
		}
	}
	// What must work without TLS does.
	for _, p := range []string{"/healthz", "/metrics", certs.CAPath} {
		if resp, body := get(t, c, "GET", e.http+p, ""); resp.StatusCode != 200 {
			t.Fatalf("%s over plain HTTP: %d %s", p, resp.StatusCode, body)
		}
	}
	if resp, _ := get(t, c, "GET", e.http+"/media/nosuchitem", ""); resp.StatusCode == http.StatusForbidden || resp.StatusCode/100 == 3 {
		t.Fatalf("/media over plain HTTP: %d", resp.StatusCode)
	}
	resp, body = get(t, c, "GET", e.http+"/api/v1/edge", "")
	var info struct {
		HTTPSPort int `json:"https_port"`
	}
	if err := json.Unmarshal([]byte(body), &info); err != nil || resp.StatusCode != 200 || strconv.Itoa(info.HTTPSPort) != httpsPort {
		t.Fatalf("/api/v1/edge over plain HTTP: %d %s", resp.StatusCode, body)
	}
	// The CA served on plain HTTP is the one that verifies the HTTPS side.
	if _, body := get(t, c, "GET", e.http+certs.CAPath, ""); !e.roots.Equal(poolOf(t, body)) {
		t.Fatal("CA download differs from the CA that signs the edge's certificate")
	}
	resp, body = get(t, c, "GET", e.https+"/api/v1/tls", "")
	var st certs.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Source != certs.SourceEdgeCA || st.Pin != e.pin || !strings.Contains(strings.Join(st.IPs, ","), "10.231.0.1") {
		t.Fatalf("/api/v1/tls: %d %s", resp.StatusCode, body)
	}
}

func poolOf(t *testing.T, pemText string) *x509.CertPool {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM([]byte(pemText)) {
		t.Fatalf("not a PEM certificate: %.80s", pemText)
	}
	return p
}

// TestPlainHTTPWithoutRedirect: behind a TLS-terminating proxy
// (-https-redirect=false) pages are served on plain HTTP, tokens still not.
func TestPlainHTTPWithoutRedirect(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	if err := netnstest.AddAddr("lo", "10.231.0.1/32"); err != nil {
		t.Fatal(err)
	}
	e := startLANEdge(t, false)
	c := e.client(true)
	if resp, _ := get(t, c, "GET", e.http+"/teacher.html", ""); resp.StatusCode != 200 {
		t.Fatalf("page with -https-redirect=false: %d", resp.StatusCode)
	}
	if resp, _ := get(t, c, "GET", e.http+"/api/v1/classrooms", e.admin); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("token over plain HTTP with -https-redirect=false: %d", resp.StatusCode)
	}
}
