package cache_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/cache"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/sync/catalog"
)

// tcpProxy is a real TCP relay between the edge and the hub. Once armed
// with a byte budget, it closes the connection that carries the budget's
// last hub-to-edge byte: a WAN cut in the middle of a response.
type tcpProxy struct {
	ln     net.Listener
	target string
	budget atomic.Int64 // < 0: not armed
	cuts   atomic.Int32
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]bool
	sent  bytes.Buffer // every byte edge→hub: the requests the hub saw
}

// Write records edge→hub bytes (requests are small).
func (p *tcpProxy) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent.Write(b)
}

var contentReqRE = regexp.MustCompile(`GET /api/v1/content/(\S+) HTTP/1.1\r\n((?:[^\r]+\r\n)*)\r\n`)

// contentRequests lists the Range header (or "") of each content GET.
func (p *tcpProxy) contentRequests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range contentReqRE.FindAllStringSubmatch(p.sent.String(), -1) {
		rng := ""
		for _, h := range strings.Split(m[2], "\r\n") {
			if v, ok := strings.CutPrefix(h, "Range: "); ok {
				rng = v
			}
		}
		out = append(out, rng)
	}
	return out
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.budget.Store(-1)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns[c] = true
			p.mu.Unlock()
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.relay(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.conns { // idle keep-alive connections of the edge
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) relay(down net.Conn) {
	defer down.Close()
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { _, _ = io.Copy(up, io.TeeReader(down, p)); up.Close() }()
	buf := make([]byte, 16<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			k := n
			if b := p.budget.Load(); b >= 0 {
				if int64(n) >= b {
					k = int(b)
				}
				p.budget.Add(-int64(k))
			}
			if _, werr := down.Write(buf[:k]); werr != nil {
				return
			}
			if k < n {
				p.budget.Store(-1)
				p.cuts.Add(1)
				return // both sides are closed by the defers
			}
		}
		if err != nil {
			return
		}
	}
}

// TestWANCutThroughTCPProxyResumes cuts the TCP connection between a real
// edge and a real hub in the middle of a download and checks, from the
// Range header the hub saw, that the edge resumed from its offset.
func TestWANCutThroughTCPProxyResumes(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	os.MkdirAll(in, 0o700)
	want := randBytes(6<<20 + 77)
	os.WriteFile(filepath.Join(in, "cut lesson.webm"), want, 0o600)
	h := newHub(t, filepath.Join(root, "hub"))
	var it media.Item
	if err := h.store.Import(in, func(im catalog.Imported) { it = im.Item }); err != nil {
		t.Fatal(err)
	}
	p := newTCPProxy(t, strings.TrimPrefix(h.srv.URL, "http://"))
	e := startEdge(t, filepath.Join(root, "edge"), "http://"+p.ln.Addr().String())
	deadline := time.Now().Add(10 * time.Second)
	for e.catalog(t, "").Total != 1 {
		if time.Now().After(deadline) {
			t.Fatal("catalogue not synced")
		}
		time.Sleep(20 * time.Millisecond)
	}
	const cutAfter = 2<<20 + 4321 // includes the response header
	p.budget.Store(cutAfter)
	// The reader streams across the cut: same generation, no restart.
	r := get(t, "GET", e.url+"/media/"+it.ID)
	if r.status != 200 || !bytes.Equal(r.body, want) {
		t.Fatalf("GET across the cut: %d, %d bytes", r.status, len(r.body))
	}
	if p.cuts.Load() != 1 {
		t.Fatalf("proxy cut %d connections, want 1", p.cuts.Load())
	}
	n, ranges, _ := h.count(it.ID)
	if n != 2 || ranges[0] != "" {
		t.Fatalf("hub saw %d GETs with ranges %q; want a full GET then a resume", n, ranges)
	}
	var from int64
	if _, err := fmt.Sscanf(ranges[1], "bytes=%d-", &from); err != nil {
		t.Fatalf("resume Range %q: %v", ranges[1], err)
	}
	// The edge has at most what crossed the proxy (less the header).
	if from < 1<<20 || from > cutAfter {
		t.Fatalf("resumed from %d; the cut let at most %d bytes through", from, cutAfter)
	}
	if st := e.state(t, it.ID); st.State != "cached" || st.Bytes != it.Size {
		t.Fatalf("state after resume: %+v", st)
	}
	t.Logf("cut after %d bytes on the wire, resumed with %q", cutAfter, ranges[1])
}

// TestRealBinariesPrefetchCutResume runs the real cityhub and edged
// binaries: import a folder, sync the catalogue, pin an item so the
// prefetcher fetches it, cut the TCP connection mid-download, and check
// from the requests that crossed the link that the download resumed from
// its offset and ended verified.
func TestRealBinariesPrefetchCutResume(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	dir := t.TempDir()
	bins := buildBins(t, dir, "cityhub", "edged")
	in := filepath.Join(dir, "in")
	os.MkdirAll(in, 0o700)
	want := randBytes(6<<20 + 5)
	os.WriteFile(filepath.Join(in, "algebra.mp4"), want, 0o600)
	out, err := exec.Command(bins["cityhub"], "-data", filepath.Join(dir, "hub"), "import", in).Output()
	if err != nil {
		t.Fatalf("cityhub import: %v", err)
	}
	id, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\t")
	enrolTok := hubEnrolToken(t, bins["cityhub"], filepath.Join(dir, "hub"))
	_, hubAddr := startBin(t, bins["cityhub"], "-data", filepath.Join(dir, "hub"), "-listen", "127.0.0.1:0")
	p := newTCPProxy(t, hubAddr)
	data := filepath.Join(dir, "edge")
	enrolEdge(t, bins["edged"], data, "http://"+hubAddr, enrolTok)
	_, edgeAddr := startBin(t, bins["edged"], "-data", data, "-listen", "127.0.0.1:0", "-mdns=false", "-cloud", "http://"+p.ln.Addr().String(), "-school", testSchool)
	tok, _ := os.ReadFile(filepath.Join(data, "admin-token"))
	e := &edge{url: "http://" + edgeAddr, token: strings.TrimSpace(string(tok)), data: data}
	e.waitSynced(t, 1)

	const cutAfter = 3<<20 + 999
	p.budget.Store(cutAfter)
	e.do(t, "PUT", "/api/v1/cache/pins/"+id, nil, 200, nil)
	e.waitFor(t, "prefetched after the cut", func(st cache.Status) bool {
		return st.Prefetch.Cached == 1
	})
	if p.cuts.Load() != 1 {
		t.Fatalf("%d cuts, want 1", p.cuts.Load())
	}
	reqs := p.contentRequests()
	if len(reqs) != 2 || reqs[0] != "" {
		t.Fatalf("content requests over the link: %q; want a full GET, then a resume", reqs)
	}
	var from int64
	if _, err := fmt.Sscanf(reqs[1], "bytes=%d-", &from); err != nil || from < 2<<20 || from > cutAfter {
		t.Fatalf("resumed with %q; the cut let %d bytes through", reqs[1], cutAfter)
	}
	r := get(t, "GET", e.url+"/media/"+id)
	if r.status != 200 || !bytes.Equal(r.body, want) {
		t.Fatalf("GET after prefetch: %d, %d bytes", r.status, len(r.body))
	}
	if n := len(p.contentRequests()); n != 2 {
		t.Fatalf("serving a prefetched item went to the hub (%d requests)", n)
	}
	t.Logf("cut after %d bytes; resumed with %q", cutAfter, reqs[1])
}
