package httpapi

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func corkOf(t *testing.T, r *http.Request) int {
	t.Helper()
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	tc := tcpConn(c)
	if tc == nil {
		t.Errorf("no TCP connection under %T", c)
		return -1
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		t.Error(err)
		return -1
	}
	v := -1
	_ = raw.Control(func(fd uintptr) { v, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK) })
	return v
}

// TestCorkAndSendfileThroughConnLimit serves a file to a client the
// per-address limit wraps (loopback not exempt here, as a LAN address is
// not): the handler finds the TCP connection to cork through the wrapper,
// and the wrapped connection still offers net/http its ReadFrom (the
// sendfile path) — before, an embedded net.Conn hid it and every /media
// body to the LAN went through a 32 KB copy loop.
func TestCorkAndSendfileThroughConnLimit(t *testing.T) {
	content := bytes.Repeat([]byte("课"), 100_000)
	path := filepath.Join(t.TempDir(), "lesson.mp4")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	var sawReaderFrom bool
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, ConnContext: ConnContext,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, _ := r.Context().Value(connKey{}).(net.Conn)
			_, sawReaderFrom = c.(io.ReaderFrom)
			f, err := os.Open(path)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			uncork := Cork(r)
			if v := corkOf(t, r); v != 1 {
				t.Errorf("TCP_CORK %d after Cork; want 1", v)
			}
			w.WriteHeader(200)
			_, _ = io.Copy(w, f)
			uncork()
			if v := corkOf(t, r); v != 0 {
				t.Errorf("TCP_CORK %d after uncork; want 0", v)
			}
		})}
	go srv.Serve(ConnLimit{PerAddr: 4}.Listener(ln))
	t.Cleanup(func() { srv.Close() })
	for range 2 { // and again on the kept-alive connection
		resp, err := http.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("body: %d bytes, %v", len(got), err)
		}
	}
	if !sawReaderFrom {
		t.Fatal("the limited connection is not an io.ReaderFrom: net/http cannot sendfile to it")
	}
}
