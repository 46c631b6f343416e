package httpapi

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Body read deadlines: a client that announces a body and sends it
// slowly, or not at all (slowloris), holds a connection and a handler
// goroutine. Every body must arrive within a route's deadline; long
// bodies (uploads) instead may not stall for longer than Stall between
// reads.
const (
	DefaultBodyDeadline = 10 * time.Second
	DefaultBodyStall    = 60 * time.Second
)

// CodeBodyTimeout is the error a handler gets (and may answer) when a body
// does not arrive in time; the connection is closed after the answer.
const CodeBodyTimeout = "body_timeout"

// BodyDeadlines puts a read deadline on every request body.
type BodyDeadlines struct {
	Deadline time.Duration // whole body, default DefaultBodyDeadline
	Stall    time.Duration // longest pause on a Long route, default DefaultBodyStall
	// Long says which requests stream large bodies (uploads): they get the
	// stall rule instead of the deadline. nil: none.
	Long func(r *http.Request) bool
	// Cut, if set, is called once for each body cut off by its deadline.
	Cut func()
}

// Wrap returns next with the deadlines applied.
func (b BodyDeadlines) Wrap(next http.Handler) http.Handler {
	if b.Deadline <= 0 {
		b.Deadline = DefaultBodyDeadline
	}
	if b.Stall <= 0 {
		b.Stall = DefaultBodyStall
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		long := b.Long != nil && b.Long(r)
		d := b.Deadline
		if long {
			d = b.Stall
		}
		if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
			next.ServeHTTP(w, r) // a connection without deadlines (tests' recorders)
			return
		}
		body := &deadlineBody{ReadCloser: r.Body, rc: rc, stall: long, d: d, cut: b.Cut}
		r.Body = body
		next.ServeHTTP(w, r)
		// What the handler left unread the server reads before it reuses
		// the connection; read it here, under the same deadline, so a cut
		// there is counted too.
		if !body.eof {
			_, _ = io.Copy(io.Discard, io.LimitReader(body, maxDrain))
		}
	})
}

// deadlineBody extends a stall deadline on each read and lifts the
// deadline once the body is read: the server then watches the connection
// for the client going away, and a deadline left behind would cancel a
// long answer's context.
type deadlineBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	stall bool
	d     time.Duration
	cut   func()
	once  sync.Once
	eof   bool
}

// maxDrain is how much of an unread body is read after the handler, as
// net/http itself does before reusing a connection.
const maxDrain = 256 << 10

func (b *deadlineBody) Read(p []byte) (int, error) {
	if b.stall {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.d))
	}
	n, err := b.ReadCloser.Read(p)
	switch {
	case errors.Is(err, io.EOF):
		b.eof = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		if b.cut != nil {
			b.once.Do(b.cut)
		}
	}
	return n, err
}

// ConnLimit bounds the connections one client address may hold open at
// once, so a single LAN device cannot take every file descriptor or
// goroutine of the server. Loopback clients are exempt when
// ExemptLoopback is set (local tools, and a reverse proxy in front, whose
// clients all look like loopback).
type ConnLimit struct {
	PerAddr        int // 0: no limit
	ExemptLoopback bool
	// Refused, if set, is called for each connection refused.
	Refused func()
}

// CodeTooManyConnections is what a refused connection is answered with.
const CodeTooManyConnections = "too_many_connections"

// Listener wraps ln with the limit.
func (c ConnLimit) Listener(ln net.Listener) net.Listener {
	if c.PerAddr <= 0 {
		return ln
	}
	return &limitListener{Listener: ln, lim: c, open: map[string]int{}}
}

type limitListener struct {
	net.Listener
	lim  ConnLimit
	mu   sync.Mutex
	open map[string]int
}

// refusal is a complete HTTP answer written to a refused connection
// before it is closed, so a browser or tool sees why.
const refusal = "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 122\r\n\r\n" +
	`{"error":{"code":"too_many_connections","message":"this address has too many connections open; close some and try again"}}`

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := ""
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			if l.lim.ExemptLoopback && ta.IP.IsLoopback() {
				return c, nil
			}
			host = ta.IP.String()
		}
		l.mu.Lock()
		if l.open[host] >= l.lim.PerAddr {
			l.mu.Unlock()
			if l.lim.Refused != nil {
				l.lim.Refused()
			}
			// The write is best effort and bounded: a refused client cannot
			// hold Accept up.
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = io.WriteString(c, refusal)
			_ = c.Close()
			continue
		}
		l.open[host]++
		l.mu.Unlock()
		return &limitedConn{Conn: c, release: func() {
			l.mu.Lock()
			if l.open[host]--; l.open[host] <= 0 {
				delete(l.open, host)
			}
			l.mu.Unlock()
		}}, nil
	}
}

type limitedConn struct {
	net.Conn
	closed  atomic.Bool
	release func()
}

// ReadFrom keeps net/http's zero-copy path (sendfile from a file to a
// TCP connection) through the wrapper: net/http uses it only when the
// connection itself is an io.ReaderFrom, and an embedded net.Conn does not
// promote the TCP connection's ReadFrom.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// NetConn is the wrapped connection (as tls.Conn's), for socket options.
func (c *limitedConn) NetConn() net.Conn { return c.Conn }

func (c *limitedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.release()
	}
	return c.Conn.Close()
}
