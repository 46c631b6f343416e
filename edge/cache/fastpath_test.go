package cache

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/media"
)

// fastServer is a /media server as the edge runs it: net/http behind a
// MediaListener, with the route registered as the edge registers it.
type fastServer struct {
	addr   string
	served atomic.Int64 // responses the fast path sent
	srv    *http.Server
	fl     *MediaListener
}

// mediaHandler is /media plus a route that tells whether the request saw
// its TLS state (r.TLS), as pages and the pairing API need.
func mediaHandler(c *Cache) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /media/{id}", c.serveMedia)
	mux.HandleFunc("GET /tls", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v", r.TLS != nil && r.TLS.HandshakeComplete)
	})
	return httpapi.RestoreTLS(mux)
}

func startFastServer(t *testing.T, c *Cache, tcfg *tls.Config, tune ...func(*http.Server)) *fastServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := &fastServer{addr: ln.Addr().String()}
	fs.srv = &http.Server{Handler: mediaHandler(c), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, ConnContext: httpapi.ConnContext}
	for _, f := range tune {
		f(fs.srv)
	}
	cfg := FastPathConfig{Server: fs.srv, Served: func() { fs.served.Add(1) }}
	if tcfg != nil {
		fs.srv.TLSConfig = tcfg.Clone()
		cfg.TLS = tcfg.Clone()
	}
	fs.fl = c.FastListener(ln, cfg)
	done := make(chan struct{})
	go func() { defer close(done); _ = fs.srv.Serve(fs.fl) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = fs.srv.Shutdown(ctx)
		_ = fs.fl.Wait(ctx)
		<-done
	})
	return fs
}

// waitServed waits (at most 2 s) until the fast path has counted n
// responses: it counts one after its last byte is written, which the
// client may read first.
func (fs *fastServer) waitServed(n int64) bool {
	for deadline := time.Now().Add(2 * time.Second); fs.served.Load() < n && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	return fs.served.Load() == n
}

// startRefServer serves the same handler with net/http alone.
func startRefServer(t *testing.T, c *Cache) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mediaHandler(c), ConnContext: httpapi.ConnContext}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// testTLS is a self-signed certificate for 127.0.0.1 and a client pool
// trusting it.
func testTLS(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edge"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}},
		NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}, pool
}

func newFastCache(t *testing.T) *Cache {
	t.Helper()
	c, err := New(Config{DB: openDB(t), DataDir: t.TempDir(), Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var dateLineRE = regexp.MustCompile(`(?m)^Date: [^\r]*\r$`)

// rawExchange writes req on a new connection and returns the response
// header bytes (Date's value blanked) and the body of n bytes.
func rawExchange(t *testing.T, addr, req string, n int) (string, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var hdr strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("%q: reading the header: %v (so far %q)", req, err, hdr.String())
		}
		hdr.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatalf("%q: body: %v", req, err)
	}
	return dateLineRE.ReplaceAllString(hdr.String(), "Date: -\r"), body
}

// TestMediaFastPathHeadersMatchNetHTTP sends the same requests to the fast
// path and to net/http alone: the header bytes (but Date's value) and the
// bodies must be the same, and the fast path must have answered them.
func TestMediaFastPathHeadersMatchNetHTTP(t *testing.T) {
	c := newFastCache(t)
	video := rnd(200_000)
	putBlob(t, c, "lesson-1", video, time.Now())
	doc := rnd(3000)
	it := putBlob(t, c, "worksheet", doc, time.Now())
	it.MIME, it.Title = "application/pdf", "分数 练习 \"一\"" // Content-Disposition, CSP
	putItem(t, c.cfg.DB, it)
	fast := startFastServer(t, c, nil)
	ref := startRefServer(t, c)
	for _, tc := range []struct {
		req  string
		body []byte
	}{
		{"GET /media/lesson-1 HTTP/1.1\r\nHost: edge\r\nUser-Agent: wrk\r\n\r\n", video},
		{"HEAD /media/lesson-1 HTTP/1.1\r\nHost: edge\r\n\r\n", nil},
		{"GET /media/lesson-1?v=3&t=1 HTTP/1.1\r\nhost: 10.0.0.2:8080\r\nConnection: keep-alive\r\nAccept-Encoding: gzip\r\n\r\n", video},
		{"GET /media/lesson-1 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", video},
		{"HEAD /media/lesson-1 HTTP/1.0\r\nConnection: keep-alive\r\nHost: edge\r\n\r\n", nil},
		{"GET /media/worksheet HTTP/1.1\r\nHost: [fe80::1]:8080\r\n\r\n", doc},
	} {
		before := fast.served.Load()
		gotH, gotB := rawExchange(t, fast.addr, tc.req, len(tc.body))
		if !fast.waitServed(before + 1) {
			t.Errorf("%q: not answered by the fast path", tc.req)
		}
		wantH, wantB := rawExchange(t, ref, tc.req, len(tc.body))
		if gotH != wantH {
			t.Errorf("%q: header\n%q\nnet/http's:\n%q", tc.req, gotH, wantH)
		}
		if !bytes.Equal(gotB, tc.body) || !bytes.Equal(wantB, tc.body) {
			t.Errorf("%q: body differs", tc.req)
		}
	}
}

// TestMediaFastPathKeepAliveMix does many requests on one keep-alive
// connection with Go's client, over HTTP, HTTPS (HTTP/1.1) and HTTPS with
// HTTP/2: whole-file requests the fast path answers, then Range, HEAD,
// conditional, unknown, uncached and credentialed ones that net/http must
// answer, then whole-file ones again (net/http's from then on).
func TestMediaFastPathKeepAliveMix(t *testing.T) {
	c := newFastCache(t)
	body := rnd(200_000)
	it := putBlob(t, c, "lesson-1", body, time.Now())
	putItem(t, c.cfg.DB, media.Item{ID: "not-cached", Title: "x", MIME: "video/mp4", Size: 10, SHA256: strings.Repeat("b", 64), Seq: 2})
	tcfg, pool := testTLS(t)
	type step struct {
		method, path string
		hdr          []string
		status       int
		body         []byte
		fast         bool // answered by the fast path (before the first other)
	}
	etag := media.ETag(it.SHA256)
	steps := []step{
		{"GET", "/media/lesson-1", nil, 200, body, true},
		{"HEAD", "/media/lesson-1", nil, 200, nil, true},
		{"GET", "/media/lesson-1?x=1", nil, 200, body, true},
		{"GET", "/media/lesson-1", []string{"Range", "bytes=100-199"}, 206, body[100:200], false},
		{"GET", "/media/lesson-1", nil, 200, body, false},
		{"GET", "/media/lesson-1", []string{"If-None-Match", etag}, 304, nil, false},
		{"GET", "/media/nosuch", nil, 404, nil, false},
		{"GET", "/media/Bad.ID", nil, 400, nil, false},
		{"GET", "/media/not-cached", nil, 503, nil, false},
		{"GET", "/media/lesson-1", []string{"Cookie", "s=1"}, 200, body, false},
		{"GET", "/tls", nil, 200, nil, false},
		{"HEAD", "/media/lesson-1", nil, 200, nil, false},
		{"GET", "/media/lesson-1", nil, 200, body, false},
	}
	for _, mode := range []string{"http", "https", "h2"} {
		t.Run(mode, func(t *testing.T) {
			var srv *fastServer
			tr := &http.Transport{MaxConnsPerHost: 1, DisableCompression: true}
			scheme := "http"
			if mode == "http" {
				srv = startFastServer(t, c, nil)
			} else {
				srv = startFastServer(t, c, tcfg)
				scheme = "https"
				tr.TLSClientConfig = &tls.Config{RootCAs: pool}
				tr.ForceAttemptHTTP2 = mode == "h2"
			}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			var conns atomic.Int64
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
				if !i.Reused {
					conns.Add(1)
				}
			}}
			wantFast := int64(0)
			for round := range 3 {
				for _, s := range steps {
					req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), s.method, scheme+"://"+srv.addr+s.path, nil)
					for i := 0; i+1 < len(s.hdr); i += 2 {
						req.Header.Set(s.hdr[i], s.hdr[i+1])
					}
					resp, err := client.Do(req)
					if err != nil {
						t.Fatalf("%s %s: %v", s.method, s.path, err)
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil {
						t.Fatalf("%s %s: body: %v", s.method, s.path, err)
					}
					if wantMajor := map[bool]int{true: 2, false: 1}[mode == "h2"]; resp.ProtoMajor != wantMajor {
						t.Fatalf("%s on %s: %s", s.path, mode, resp.Proto)
					}
					if resp.StatusCode != s.status {
						t.Fatalf("%s %s %v: %d %s", s.method, s.path, s.hdr, resp.StatusCode, b)
					}
					if s.body != nil && !bytes.Equal(b, s.body) {
						t.Fatalf("%s %s %v: body of %d bytes differs", s.method, s.path, s.hdr, len(b))
					}
					if s.path == "/tls" && string(b) != fmt.Sprintf("tls=%v", scheme == "https") {
						t.Fatalf("/tls on %s answered %q", mode, b)
					}
					if s.method == "HEAD" && resp.ContentLength != int64(len(body)) {
						t.Fatalf("HEAD: Content-Length %d", resp.ContentLength)
					}
					if s.fast && round == 0 && mode != "h2" {
						wantFast++
					}
				}
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("%d connections for %d requests; want one", n, 3*len(steps))
			}
			// After the first request it does not answer, the connection is
			// net/http's: the later whole-file requests are not the fast path's.
			if got := srv.served.Load(); got != wantFast {
				t.Errorf("the fast path answered %d requests; want %d", got, wantFast)
			}
		})
	}
}

// TestMediaFastPathPipelined sends requests back to back without waiting:
// answered in order, the fast path's and then net/http's.
func TestMediaFastPathPipelined(t *testing.T) {
	c := newFastCache(t)
	body := rnd(50_000)
	putBlob(t, c, "lesson-1", body, time.Now())
	srv := startFastServer(t, c, nil)
	conn, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	get := "GET /media/lesson-1 HTTP/1.1\r\nHost: edge\r\n\r\n"
	rng := "GET /media/lesson-1 HTTP/1.1\r\nHost: edge\r\nRange: bytes=0-9\r\n\r\n"
	// The last request arrives in two pieces.
	if _, err := io.WriteString(conn, get+"HEAD /media/lesson-1 HTTP/1.1\r\nHost: edge\r\n\r\n"+get+rng+get[:20]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := io.WriteString(conn, get[20:]); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for i, want := range []struct {
		method string
		status int
		body   []byte
	}{{"GET", 200, body}, {"HEAD", 200, nil}, {"GET", 200, body}, {"GET", 206, body[:10]}, {"GET", 200, body}} {
		resp, err := http.ReadResponse(br, &http.Request{Method: want.method})
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != want.status || (want.body != nil && !bytes.Equal(b, want.body)) {
			t.Fatalf("response %d: %d, %d bytes, %v", i, resp.StatusCode, len(b), err)
		}
	}
	if srv.waitServed(3); srv.served.Load() != 3 {
		n := srv.served.Load()
		t.Errorf("fast path answered %d; want 3 (then the Range request handed the connection over)", n)
	}
}

// TestMediaFastPathShutdown: Shutdown closes an idle fast-path connection
// and a connection whose request is being read closes after its answer;
// Wait returns once none is left.
func TestMediaFastPathShutdown(t *testing.T) {
	c := newFastCache(t)
	body := rnd(10_000)
	putBlob(t, c, "lesson-1", body, time.Now())
	srv := startFastServer(t, c, nil)
	idle, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	_ = idle.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(idle, "GET /media/lesson-1 HTTP/1.1\r\nHost: edge\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if !srv.waitServed(1) {
		t.Fatal("the first request was not the fast path's")
	}
	// A connection that has sent nothing yet.
	fresh, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	_ = fresh.SetDeadline(time.Now().Add(10 * time.Second))
	time.Sleep(50 * time.Millisecond) // accepted
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := srv.fl.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown took %v with two idle connections", d)
	}
	if n, err := fresh.Read(make([]byte, 1)); err == nil {
		t.Fatalf("a connection that sent nothing is still open after shutdown (read %d bytes)", n)
	}
	if n, err := br.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the idle connection is still open after shutdown (read %d bytes)", n)
	}
	if _, err := net.DialTimeout("tcp", srv.addr, time.Second); err == nil {
		t.Error("still accepting after shutdown")
	}
}

// TestMediaFastPathIdleTimeout: a connection idle past the server's
// IdleTimeout is closed, as net/http closes its own.
func TestMediaFastPathIdleTimeout(t *testing.T) {
	c := newFastCache(t)
	putBlob(t, c, "lesson-1", rnd(1000), time.Now())
	srv := startFastServer(t, c, nil, func(s *http.Server) { s.IdleTimeout = 300 * time.Millisecond })
	conn, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "GET /media/lesson-1 HTTP/1.1\r\nHost: edge\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	start := time.Now()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("read a byte from an idle connection")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed after %v idle; IdleTimeout is 300ms", d)
	}
}

// TestMediaFastPathNoStall: the header is sent with MSG_MORE and pushed by
// the body's last bytes; an answer must never wait for a timer (TCP_CORK's
// 200 ms) — thirty sequential answers on one connection, every other one
// an empty item, take far less than one such wait each (15 of them would
// be 3 s; TCP_CORK left on for an empty body measured 0.2 s an answer).
func TestMediaFastPathNoStall(t *testing.T) {
	c := newFastCache(t)
	body := rnd(200_000)
	putBlob(t, c, "lesson-1", body, time.Now())
	putBlob(t, c, "empty", nil, time.Now())
	srv := startFastServer(t, c, nil)
	conn, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	start := time.Now()
	for i := range 30 {
		id, want := "lesson-1", body
		if i%2 == 1 {
			id, want = "empty", nil
		}
		if _, err := io.WriteString(conn, "GET /media/"+id+" HTTP/1.1\r\nHost: edge\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, want) {
			t.Fatalf("answer %d: %d, %d bytes, %v", i, resp.StatusCode, len(b), err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("30 answers took %v: a header or body waited to be pushed", d)
	}
	if !srv.waitServed(30) {
		t.Errorf("the fast path answered %d of 30", srv.served.Load())
	}
}

// TestMediaFastPathHeaderTimeout: a client that sends part of a /media
// request and stops (slowloris) is cut off after the server's
// ReadHeaderTimeout, on its first request and on a later one.
func TestMediaFastPathHeaderTimeout(t *testing.T) {
	c := newFastCache(t)
	putBlob(t, c, "lesson-1", rnd(1000), time.Now())
	srv := startFastServer(t, c, nil, func(s *http.Server) { s.ReadHeaderTimeout = 300 * time.Millisecond })
	for _, whole := range []int{0, 1} {
		conn, err := net.Dial("tcp", srv.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		for range whole {
			_, _ = io.WriteString(conn, "GET /media/lesson-1 HTTP/1.1\r\nHost: edge\r\n\r\n")
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
		}
		_, _ = io.WriteString(conn, "GET /media/lesson-1 HTTP/1.1\r\nHo")
		start := time.Now()
		if _, err := br.ReadByte(); err == nil {
			t.Fatal("an answer to half a request")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("cut after %v (after %d whole requests); ReadHeaderTimeout is 300ms", d, whole)
		}
	}
}
