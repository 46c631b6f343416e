package cache_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/edge/metricstest"
)

// TestMediaFastPathOnLANOverHTTPS runs a real edge at a LAN address (a
// network namespace) and a client at that address, as a classroom player
// is: over HTTPS on HTTP/1.1 (and plain HTTP, which /media allows) one
// keep-alive connection mixes whole-file requests (the fast path's) with
// a Range and a conditional request (net/http's from then on), every
// answer checked; /metrics counts both paths; and the per-address
// connection limit still holds for connections the fast path serves.
func TestMediaFastPathOnLANOverHTTPS(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	root := t.TempDir()
	h := newHub(t, filepath.Join(root, "hub"))
	files := map[string][]byte{"分数入门.mp4": randBytes(200_000), "光合作用.mp4": randBytes(300_000)}
	items := importFiles(t, h, filepath.Join(root, "in"), files)
	const perAddr = 3
	e := startEdge(t, filepath.Join(root, "edge"), h.srv.URL, func(c *config.Config) {
		c.Listen, c.MaxConnsPerAddr = browsertest.LANListen, perAddr
	})
	plainURL := e.url
	e.url, e.client = e.https.URL, e.https.Client(t)
	e.waitSynced(t, 2)
	for name, it := range items { // the first read fills the cache from the hub
		if r := get(t, "GET", plainURL+"/media/"+it.ID); r.status != 200 || !bytes.Equal(r.body, files[name]) {
			t.Fatalf("first read of %s: %d, %d bytes", name, r.status, len(r.body))
		}
	}
	for _, it := range items {
		for deadline := time.Now().Add(10 * time.Second); e.state(t, it.ID).State != "cached"; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s not cached", it.ID)
			}
		}
	}
	lesson, photo := items["分数入门.mp4"], items["光合作用.mp4"]
	body := files["分数入门.mp4"]

	metrics := func() []byte {
		t.Helper()
		r := get(t, "GET", plainURL+"/metrics")
		if r.status != 200 {
			t.Fatalf("/metrics: %d", r.status)
		}
		return r.body
	}
	const fastName = "campusedge_media_fastpath_responses_total"
	const routeName = `campusedge_http_requests_total{code="200",route="GET /media/{id}"}`
	m0 := metrics()

	// HTTP/1.1 over TLS (ALPN http/1.1), one connection.
	tr := e.client.Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	tr.MaxConnsPerHost = 1
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var conns int
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			conns++
		}
	}}
	do := func(method, path string, want int, wantBody []byte, hdr ...string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), method, e.url+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != want || resp.ProtoMajor != 1 || (wantBody != nil && !bytes.Equal(b, wantBody)) {
			t.Fatalf("%s %s %v: %s %d, %d bytes, %v", method, path, hdr, resp.Proto, resp.StatusCode, len(b), err)
		}
		if resp.StatusCode == 200 && (resp.Header.Get("Content-Type") != "video/mp4" || resp.Header.Get("Accept-Ranges") != "bytes" || resp.Header.Get("ETag") == "") {
			t.Fatalf("%s %s: header %v", method, path, resp.Header)
		}
	}
	for range 5 {
		do("GET", "/media/"+lesson.ID, 200, body)
		do("GET", "/media/"+photo.ID, 200, files["光合作用.mp4"])
	}
	do("HEAD", "/media/"+lesson.ID, 200, nil)
	do("GET", "/media/"+lesson.ID, 206, body[1000:2000], "Range", "bytes=1000-1999")
	do("GET", "/media/"+lesson.ID, 304, nil, "If-None-Match", media.ETag(lesson.SHA256))
	do("GET", "/media/nosuch", 404, nil)
	do("GET", "/media/"+lesson.ID, 200, body)
	if conns != 1 {
		t.Errorf("%d connections; want one keep-alive connection", conns)
	}
	// Plain HTTP from the LAN: sendfile through the connection limit, on a
	// new connection (the one that filled the cache is net/http's).
	http.DefaultClient.CloseIdleConnections()
	for range 3 {
		if r := get(t, "GET", plainURL+"/media/"+lesson.ID); r.status != 200 || !bytes.Equal(r.body, body) {
			t.Fatalf("plain HTTP: %d, %d bytes", r.status, len(r.body))
		}
	}
	m1 := metrics()
	// 11 fast over HTTPS before the Range request; the 3 plain ones too.
	if got := metricstest.Value(m1, fastName) - metricstest.Value(m0, fastName); got != 14 {
		t.Errorf("%s grew by %v; want 14\n%s", fastName, got, metricstest.Grep(m1, "media"))
	}
	// 200s of both paths: 10 + HEAD + 1 over HTTPS, 3 plain.
	if got := metricstest.Value(m1, routeName) - metricstest.Value(m0, routeName); got != 15 {
		t.Errorf("%s grew by %v; want 15\n%s", routeName, got, metricstest.Grep(m1, "GET /media"))
	}
	tr.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	e.client.CloseIdleConnections()

	// The per-address limit: perAddr connections each served by the fast
	// path and kept open; one more is refused; after one closes, a new
	// one is served. (The connections just closed may still be counted a
	// moment: each open is retried for up to 5 s.)
	host := strings.TrimPrefix(e.url, "https://")
	cfg := &tls.Config{RootCAs: tr.TLSClientConfig.RootCAs, NextProtos: []string{"http/1.1"}}
	fetch := func() (*tls.Conn, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", host, cfg)
		if err != nil {
			return nil, err
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /media/"+lesson.ID+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
			c.Close()
			return nil, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
		if err != nil {
			c.Close()
			return nil, err
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, body) {
			c.Close()
			return nil, fmt.Errorf("%d, %d bytes, %v", resp.StatusCode, len(b), err)
		}
		return c, nil
	}
	fetchSoon := func(what string) *tls.Conn {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			c, err := fetch()
			if err == nil {
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
		}
	}
	var open []*tls.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := range perAddr {
		open = append(open, fetchSoon(fmt.Sprintf("connection %d", i+1)))
	}
	raw, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(raw) // the refusal is written in clear, then closed
	raw.Close()
	if !bytes.Contains(b, []byte("429 Too Many Requests")) {
		t.Fatalf("connection %d of one address was not refused: %q", perAddr+1, b)
	}
	open[0].Close()
	open[0] = fetchSoon("a new connection after a fast-path one closed")
}

// TestMediaFastPathOff: with -media-fastpath=false net/http answers every
// /media request, over HTTP and HTTPS, and the fast path counts none.
func TestMediaFastPathOff(t *testing.T) {
	root := t.TempDir()
	h := newHub(t, filepath.Join(root, "hub"))
	content := randBytes(100_000)
	it := importFiles(t, h, filepath.Join(root, "in"), map[string][]byte{"lesson.mp4": content})["lesson.mp4"]
	e := startEdge(t, filepath.Join(root, "edge"), h.srv.URL, func(c *config.Config) { c.MediaFastPath = false })
	e.waitSynced(t, 1)
	tlsTr := e.https.Client(t).Transport.(*http.Transport)
	for _, base := range []string{e.url, e.https.URL} {
		for range 3 {
			// A new HTTP/1.1 connection each time: the fast path's, were it on.
			tr := &http.Transport{}
			if base == e.https.URL {
				tr = tlsTr.Clone()
				tr.ForceAttemptHTTP2 = false
				tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			}
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(base + "/media/" + it.ID)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			tr.CloseIdleConnections()
			if err != nil || resp.StatusCode != 200 || resp.ProtoMajor != 1 || !bytes.Equal(b, content) {
				t.Fatalf("%s: %s %d, %d bytes, %v", base, resp.Proto, resp.StatusCode, len(b), err)
			}
		}
	}
	r := get(t, "GET", e.url+"/metrics")
	if v := metricstest.Value(r.body, "campusedge_media_fastpath_responses_total"); v != 0 {
		t.Errorf("fast path off, yet it answered %v", v)
	}
	if v := metricstest.Value(r.body, `campusedge_media_requests_total{outcome="hit"}`); v < 5 {
		t.Errorf("%v hits counted; want at least 5 of the 6 (the first may be a miss)", v)
	}
}
