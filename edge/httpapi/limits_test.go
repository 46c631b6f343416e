package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// serve runs a real http.Server on loopback with h behind the limits.
func serve(t *testing.T, h http.Handler, cl ConnLimit) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(cl.Listener(ln))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// slowloris sends a POST announcing 4000 bytes, sends 5, and returns how
// long the server kept the connection open (bounded by within).
func slowloris(t *testing.T, addr string, within time.Duration) (time.Duration, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	fmt.Fprintf(c, "POST /x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"a\":")
	c.SetReadDeadline(time.Now().Add(within))
	b, _ := io.ReadAll(c) // until the server closes, or within
	return time.Since(start), string(b)
}

// TestBodyDeadlineCutsSlowloris: a POST with Content-Length 4000 and 5
// bytes is cut off at the deadline (before, it was held as long as the
// client liked: 46 s and more on edged and cityhub); a body that arrives in
// time is read, a long answer after it keeps its context, and an upload
// route may take longer as long as it does not stall.
func TestBodyDeadlineCutsSlowloris(t *testing.T) {
	var cuts atomic.Int64
	ctxErr := make(chan error, 1)
	h := BodyDeadlines{Deadline: 500 * time.Millisecond, Stall: 400 * time.Millisecond, Cut: func() { cuts.Add(1) },
		Long: func(r *http.Request) bool { return r.URL.Path == "/upload" }}.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			WriteError(w, http.StatusRequestTimeout, CodeBodyTimeout, err.Error())
			return
		}
		if r.URL.Path == "/slow-answer" {
			select {
			case <-r.Context().Done():
				ctxErr <- r.Context().Err()
			case <-time.After(1200 * time.Millisecond):
				ctxErr <- nil
			}
		}
		fmt.Fprintf(w, "%d", n)
	}))
	addr := serve(t, h, ConnLimit{})
	took, _ := slowloris(t, addr, 10*time.Second)
	if took > 3*time.Second || cuts.Load() != 1 {
		t.Fatalf("slow body held %v (cuts %d); want cut at the 500ms deadline", took, cuts.Load())
	}

	// A body in time, then an answer slower than the deadline: not cancelled.
	resp, err := http.Post("http://"+addr+"/slow-answer", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "5" {
		t.Fatalf("answer %q", b)
	}
	if err := <-ctxErr; err != nil {
		t.Fatalf("the answer's context was cancelled after the body was read: %v", err)
	}

	// An upload that keeps sending for longer than the deadline passes;
	// one that stalls past Stall is cut.
	pr, pw := io.Pipe()
	go func() {
		for range 8 {
			pw.Write([]byte("chunk"))
			time.Sleep(150 * time.Millisecond)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", "http://"+addr+"/upload", pr)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "40" {
		t.Fatalf("long upload: %d %q", resp.StatusCode, b)
	}
	c, _ := net.Dial("tcp", addr)
	defer c.Close()
	start := time.Now()
	fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 4000\r\n\r\nabc")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusRequestTimeout || time.Since(start) > 3*time.Second {
		t.Fatalf("stalled upload: %v %v after %v", err, resp, time.Since(start))
	}
}

// TestConnLimitPerAddress: one address gets at most PerAddr connections;
// the next is answered 429 too_many_connections and closed, and a closed
// connection frees its place.
func TestConnLimitPerAddress(t *testing.T) {
	var refused atomic.Int64
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ConnLimit{PerAddr: 3, Refused: func() { refused.Add(1) }})
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection within the limit: %v", err)
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth connection: %v %v", err, resp)
	}
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), CodeTooManyConnections) || refused.Load() != 1 {
		t.Fatalf("refusal %q, refused %d", b, refused.Load())
	}
	c.Close()
	held[0].Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err == nil && resp.StatusCode == 200 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("a closed connection's place was not freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range held[1:] {
		c.Close()
	}
	// Loopback exempt: the server's own tools and a proxy in front pass.
	addr2 := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), ConnLimit{PerAddr: 1, ExemptLoopback: true})
	for range 3 {
		c, err := net.Dial("tcp", addr2)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("loopback with ExemptLoopback: %v %v", err, resp)
		}
	}
}
