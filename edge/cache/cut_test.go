package cache_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	go func() { _, _ = io.Copy(up, down); up.Close() }()
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
	var it catalog.Item
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
