package cache

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"
)

// blobSent is when the fast path last sent the blob sum whole (0: never).
func blobSent(c *Cache, sum string) int64 {
	c.files.mu.Lock()
	defer c.files.mu.Unlock()
	if e := c.files.ents[sum]; e != nil {
		return e.sent.Load()
	}
	return 0
}

// TestMediaFastPathWarmBodies: a blob's first whole send marks it warm (the
// next sends of it within warmFor are raw sendfile or pread calls); a HEAD
// does not, and neither does a body over rawSendMax. Each answer to a
// reader slower than the socket's buffer arrives whole, over HTTP and over
// TLS: the raw sendfile or write, which stops at a full socket, resumes
// where it stopped when the poller says there is room again.
func TestMediaFastPathWarmBodies(t *testing.T) {
	for _, overTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "https"}[overTLS], func(t *testing.T) { testWarmBodies(t, overTLS) })
	}
}

func testWarmBodies(t *testing.T, overTLS bool) {
	c := newFastCache(t)
	small := rnd(900_000) // under rawSendMax, several socket buffers
	itSmall := putBlob(t, c, "lesson-1", small, time.Now())
	big := rnd(rawSendMax + 1)
	itBig := putBlob(t, c, "lesson-2", big, time.Now())
	var tcfg *tls.Config
	var pool *x509.CertPool
	if overTLS {
		tcfg, pool = testTLS(t)
	}
	srv := startFastServer(t, c, tcfg)
	// A small receive buffer from the start (set after the handshake, it
	// would shrink a window already offered).
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
	}}
	tcp, err := d.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	conn := tcp
	if overTLS {
		conn = tls.Client(tcp, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReaderSize(conn, 4096)
	ask := func(method, id string, want []byte) {
		t.Helper()
		if _, err := io.WriteString(conn, method+" /media/"+id+" HTTP/1.1\r\nHost: edge\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		// Slowly: the server meets a full socket many times.
		var got bytes.Buffer
		buf := make([]byte, 64<<10)
		for {
			n, err := resp.Body.Read(buf)
			got.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s %s: %v after %d bytes", method, id, err, got.Len())
			}
			time.Sleep(time.Millisecond)
		}
		if resp.StatusCode != 200 || !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("%s %s: %d, %d bytes, want %d", method, id, resp.StatusCode, got.Len(), len(want))
		}
	}
	served := int64(0)
	step := func(what string) {
		t.Helper()
		if served++; !srv.waitServed(served) {
			t.Fatalf("%s: not the fast path's answer", what)
		}
	}
	ask("HEAD", "lesson-1", nil)
	step("HEAD")
	if s := blobSent(c, itSmall.SHA256); s != 0 {
		t.Fatal("a HEAD marked the blob warm")
	}
	start := time.Now().UnixNano()
	ask("GET", "lesson-1", small) // cold: through the runtime
	step("first GET")
	first := blobSent(c, itSmall.SHA256)
	if first < start {
		t.Fatalf("a whole send did not mark the blob warm (sent %d, before %d)", first, start)
	}
	ask("GET", "lesson-1", small) // warm: raw sendfile
	step("second GET")
	if s := blobSent(c, itSmall.SHA256); s <= first {
		t.Fatalf("the warm send was not recorded (%d, then %d)", first, s)
	}
	ask("GET", "lesson-2", big)
	step("big GET")
	ask("GET", "lesson-2", big)
	step("big GET again")
	if !warmBody(itSmall.Size, blobSent(c, itSmall.SHA256), time.Now().UnixNano()) {
		t.Error("a blob sent just now is not warm")
	}
	if warmBody(itBig.Size, blobSent(c, itBig.SHA256), time.Now().UnixNano()) {
		t.Error("a body over rawSendMax is sent raw")
	}
	if warmBody(itSmall.Size, blobSent(c, itSmall.SHA256), time.Now().Add(warmFor+time.Second).UnixNano()) {
		t.Error("still warm past warmFor")
	}
	if warmBody(itSmall.Size, 0, time.Now().UnixNano()) {
		t.Error("a blob never sent is warm")
	}
}

// TestPlainSockRead: the raw read keeps net.Conn's Read contract: bytes as
// they come, the read deadline, io.EOF at the peer's close, and a Close
// elsewhere waking it.
func TestPlainSockRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pair := func() (client, server net.Conn) {
		t.Helper()
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		server, err = ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close(); server.Close() })
		return client, server
	}
	client, server := pair()
	p := newPlainSock(server)
	if p == nil {
		t.Fatal("no plainSock for a TCP connection")
	}
	buf := make([]byte, 8)
	if n, err := p.read(buf[:0]); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	go func() { time.Sleep(20 * time.Millisecond); _, _ = client.Write([]byte("0123456789")) }()
	if n, err := p.read(buf); err != nil || string(buf[:n]) != "01234567" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if n, err := p.read(buf); err != nil || string(buf[:n]) != "89" {
		t.Fatalf("read %q, %v; want the rest", buf[:n], err)
	}
	_ = server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := p.read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("past the deadline: %v", err)
	}
	_ = server.SetReadDeadline(time.Time{})
	client.Close()
	if n, err := p.read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after the peer closed: %d, %v; want io.EOF", n, err)
	}

	_, server2 := pair()
	p2 := newPlainSock(server2)
	done := make(chan error, 1)
	go func() { _, err := p2.read(buf); done <- err }()
	time.Sleep(20 * time.Millisecond)
	server2.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("read on a closed connection: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the read")
	}
}

// TestStillAt: the revalidation stat, raw (hot) and through the runtime,
// tells the same file from a replaced, removed or resized one.
func TestStillAt(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/blob"
	if err := os.WriteFile(path, []byte("lesson"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, hot := range []bool{false, true} {
		if !stillAt(path, fi, 6, hot) {
			t.Errorf("hot=%v: the same file is not still at its path", hot)
		}
		if stillAt(path, fi, 7, hot) {
			t.Errorf("hot=%v: a size that differs passes", hot)
		}
		if stillAt(dir+"/none", fi, 6, hot) {
			t.Errorf("hot=%v: a missing path passes", hot)
		}
	}
	other := dir + "/other"
	if err := os.WriteFile(other, []byte("lesson"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	for _, hot := range []bool{false, true} {
		if stillAt(path, fi, 6, hot) {
			t.Errorf("hot=%v: a file renamed over the path passes as the old one", hot)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if stillAt(path, fi, 6, true) {
		t.Error("a removed file passes")
	}
}
