package cache

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/campusedge/campusedge/edge/media"
)

// The /media fast path. Under wrk, net/http and the runtime cost a 200 KB
// file about twice nginx's CPU per request even with nothing left in the
// handler (docs/BENCHMARKS.md). So the listener of the edge's HTTP and
// HTTPS servers is a MediaListener: every accepted connection (after its
// TLS handshake, unless ALPN chose h2) is first read here, and a request
// this file fully understands — GET or HEAD of a whole cached /media
// object on a persistent HTTP/1.x connection, with no body, no Range, no
// condition, no credentials — is answered directly: the item's prepared
// header and one sendfile. At the first request it does not answer, the
// connection, with every byte already read, goes to the http.Server for the
// rest of its life, which answers that request as it always did. Nothing is
// written before that decision, so a handed-over connection sees only
// net/http.

// FastPathConfig wires a MediaListener.
type FastPathConfig struct {
	// Server serves everything the fast path does not; its
	// ReadHeaderTimeout and IdleTimeout apply to fast-path connections too,
	// and its ErrorLog gets TLS handshake errors.
	Server *http.Server
	// TLS, when set, makes the listener speak TLS: handshakes are done here
	// and connections that chose HTTP/2 go to Server at once. Server must
	// then have HTTP/2 configured for Serve (its TLSConfig's NextProtos
	// holding "h2") and httpapi.RestoreTLS in its handler, so that requests
	// of handed-over connections still see r.TLS.
	TLS *tls.Config
	// Served, if set, is called for each response sent here (the route's
	// campusedge_http_requests_total counter, as the mux counts it).
	Served func()
}

// MediaListener is a net.Listener for an http.Server that answers plain
// whole-file /media requests itself (see above). Close it through the
// server (Shutdown closes its listeners); Wait then waits for the
// connections still answering here.
type MediaListener struct {
	c      *Cache
	ln     net.Listener
	cfg    FastPathConfig
	handed chan net.Conn
	done   chan struct{}
	once   sync.Once
	err    error // why Accept fails, set before done is closed
	date   atomic.Pointer[dateLine]
	bufs   sync.Pool // *[]byte of tlsChunk bytes, TLS bodies

	closing atomic.Bool // set under mu
	mu      sync.Mutex
	conns   map[*fastConn]struct{}
	wg      sync.WaitGroup
}

// Sizes of a connection's buffers.
const (
	// fastHeaderMax bounds a request header the fast path reads; a longer
	// one is handed over (net/http allows 1 MB).
	fastHeaderMax = 8 << 10
	// tlsChunk is what is encrypted per write over TLS: 32 KB, as
	// net/http's own copy does (two full records).
	tlsChunk = 32 << 10
)

// A body at most rawSendMax long whose whole file was sent within warmFor
// is taken to be in the page cache: every page was read then. Its sendfile
// (its preads over TLS) are raw calls (sendfile_linux.go), which keep the
// P even if they have to wait for the disk after all, so the bound keeps
// any such wait short.
const (
	rawSendMax = 1 << 20
	warmFor    = 10 * time.Second
)

// FastListener returns ln with the /media fast path in front of
// cfg.Server; serve it with cfg.Server.Serve.
func (c *Cache) FastListener(ln net.Listener, cfg FastPathConfig) *MediaListener {
	l := &MediaListener{c: c, ln: ln, cfg: cfg, handed: make(chan net.Conn), done: make(chan struct{}), conns: map[*fastConn]struct{}{}}
	l.bufs.New = func() any { b := make([]byte, tlsChunk); return &b }
	go l.acceptLoop()
	return l
}

// Accept returns the next connection handed over to the http.Server.
func (l *MediaListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.handed:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Addr is the listening address.
func (l *MediaListener) Addr() net.Addr { return l.ln.Addr() }

// Close stops accepting and closes the fast path's idle connections; those
// answering a request close after it.
func (l *MediaListener) Close() error {
	err := l.ln.Close()
	l.stop(net.ErrClosed)
	l.mu.Lock()
	l.closing.Store(true)
	for fc := range l.conns {
		if fc.idle {
			// Wakes its read; the loop then sees closing.
			_ = fc.c.SetReadDeadline(time.Unix(1, 0))
		}
	}
	l.mu.Unlock()
	return err
}

// Wait waits until no connection is served here any more, or ctx ends;
// then the remaining ones are closed.
func (l *MediaListener) Wait(ctx context.Context) error {
	ch := make(chan struct{})
	go func() { l.wg.Wait(); close(ch) }()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		for fc := range l.conns {
			_ = fc.c.Close()
		}
		l.mu.Unlock()
		<-ch // each loop ends at its next read or write
		return ctx.Err()
	}
}

func (l *MediaListener) stop(err error) {
	l.once.Do(func() { l.err = err; close(l.done) })
}

func (l *MediaListener) acceptLoop() {
	var delay time.Duration // as net/http backs off on temporary errors
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				l.logf("http: Accept error: %v; retrying in %v", err, delay)
				time.Sleep(delay)
				continue
			}
			l.stop(err)
			return
		}
		delay = 0
		fc := &fastConn{c: nc}
		l.mu.Lock()
		if l.closing.Load() {
			l.mu.Unlock()
			_ = nc.Close()
			continue
		}
		l.conns[fc] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.serveConn(fc)
	}
}

func (l *MediaListener) logf(format string, args ...any) {
	if el := l.cfg.Server.ErrorLog; el != nil {
		el.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// fastConn is one connection while the fast path serves it.
type fastConn struct {
	c    net.Conn // after the handshake: the *tls.Conn
	idle bool     // waiting for a request (guarded by MediaListener.mu)
}

func (l *MediaListener) forget(fc *fastConn) {
	l.mu.Lock()
	delete(l.conns, fc)
	l.mu.Unlock()
	l.wg.Done()
}

// handOver gives c, with the bytes already read from it, to the
// http.Server.
func (l *MediaListener) handOver(fc *fastConn, read []byte) {
	c := fc.c
	_ = c.SetReadDeadline(time.Time{})
	if len(read) > 0 {
		pre := bytes.Clone(read)
		if tc, ok := c.(*tls.Conn); ok {
			c = &handedTLSConn{Conn: tc, pre: pre}
		} else {
			c = &handedConn{Conn: c, pre: pre}
		}
	}
	l.forget(fc)
	select {
	case l.handed <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *MediaListener) serveConn(fc *fastConn) {
	if l.cfg.TLS != nil {
		under := fc.c
		if s := newPlainSock(fc.c); s != nil {
			// The TLS records are read and written with raw calls,
			// as plain responses are (see plainSock).
			under = &rawConn{Conn: fc.c, s: s}
		}
		tc := tls.Server(under, l.cfg.TLS)
		l.mu.Lock() // Wait may close fc.c
		fc.c = tc
		l.mu.Unlock()
		if !l.handshake(tc) {
			l.forget(fc)
			return
		}
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			l.handOver(fc, nil)
			return
		}
	}
	var sock *plainSock // plain TCP; nil over TLS
	read := fc.c.Read
	if _, isTLS := fc.c.(*tls.Conn); !isTLS {
		if sock = newPlainSock(fc.c); sock == nil {
			l.handOver(fc, nil) // not TCP: net/http's
			return
		}
		read = sock.read
	}
	buf := make([]byte, 0, fastHeaderMax)
	var hdr []byte // the response header being built
	for first := true; ; first = false {
		// Wait for a request: net/http's idle timeout between requests
		// (its header timeout for the first), then the header timeout from
		// the request's first bytes.
		if len(buf) == 0 && !l.waitRequest(fc, read, &buf, first) {
			return
		}
		var req mediaRequest
		for more := false; ; more = true {
			var res parseResult
			req, res = parseMediaRequest(buf)
			if res == parseOther || (res == parseMore && len(buf) == cap(buf)) {
				l.handOver(fc, buf)
				return
			}
			if res == parseMedia {
				break
			}
			// The rest of the header within the header timeout (a
			// request that came whole in its first read, the usual
			// case, costs no deadline change).
			if d := l.cfg.Server.ReadHeaderTimeout; d > 0 && !more {
				_ = fc.c.SetReadDeadline(time.Now().Add(d))
			}
			n, err := read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err != nil && n == 0 {
				l.closeConn(fc)
				return
			}
		}
		served, err := l.serve(fc.c, sock, req, &hdr)
		if !served {
			l.handOver(fc, buf) // nothing was written
			return
		}
		if err != nil || l.closing.Load() {
			l.closeConn(fc)
			return
		}
		buf = buf[:copy(buf, buf[req.size:])] // a pipelined request's bytes
	}
}

// waitRequest reads the first bytes of the next request. Meanwhile the
// connection counts as idle: Close wakes it and it closes.
func (l *MediaListener) waitRequest(fc *fastConn, read func([]byte) (int, error), buf *[]byte, first bool) bool {
	s := l.cfg.Server
	d := s.IdleTimeout
	if d <= 0 {
		d = s.ReadTimeout
	}
	if first {
		d = s.ReadHeaderTimeout
	}
	if d > 0 {
		_ = fc.c.SetReadDeadline(time.Now().Add(d))
	} else {
		_ = fc.c.SetReadDeadline(time.Time{})
	}
	l.mu.Lock()
	if l.closing.Load() {
		l.mu.Unlock()
		l.closeConn(fc)
		return false
	}
	fc.idle = true
	l.mu.Unlock()
	n, err := read((*buf)[:cap(*buf)])
	l.mu.Lock()
	fc.idle = false
	l.mu.Unlock()
	*buf = (*buf)[:n]
	if err != nil && n == 0 {
		l.closeConn(fc)
		return false
	}
	return true
}

func (l *MediaListener) closeConn(fc *fastConn) {
	_ = fc.c.Close()
	l.forget(fc)
}

// handshake does what net/http does with a new TLS connection: the
// handshake under its deadline, a plain-HTTP request answered with why it
// failed.
func (l *MediaListener) handshake(tc *tls.Conn) bool {
	s := l.cfg.Server
	var to time.Duration // net/http: the shortest of its timeouts
	for _, d := range [...]time.Duration{s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout} {
		if d > 0 && (to == 0 || d < to) {
			to = d
		}
	}
	if to > 0 {
		_ = tc.SetDeadline(time.Now().Add(to))
	}
	if err := tc.HandshakeContext(context.Background()); err != nil {
		reason := err.Error()
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
			_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
			reason = "client sent an HTTP request to an HTTPS server"
		}
		_ = tc.Close()
		l.logf("http: TLS handshake error from %s: %v", tc.RemoteAddr(), reason)
		return false
	}
	_ = tc.SetDeadline(time.Time{})
	return true
}

func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// serve answers req on c when its item is cached. served is false when
// nothing was written (not in the catalogue, not cached): net/http then
// answers the same request.
func (l *MediaListener) serve(c net.Conn, sock *plainSock, req mediaRequest, hdr *[]byte) (served bool, err error) {
	cc := l.c
	e, ok, err := cc.served.get(req.id)
	if err != nil || !ok {
		return false, nil
	}
	cc.space.reading(e.SHA256, 1)
	defer cc.space.reading(e.SHA256, -1)
	f, err := cc.files.openAt(e.SHA256, e.Size)
	if err != nil {
		return false, nil
	}
	defer cc.files.put(f)
	if t, ok := cc.space.touch(e.SHA256, f.modTime); ok {
		cc.files.touched(f, t)
	}
	h := l.header((*hdr)[:0], e, req, l.closing.Load())
	*hdr = h
	now := time.Now().UnixNano()
	warm := warmBody(e.Size, f.ent.sent.Load(), now)
	if sock == nil { // TLS
		if len(h) > tlsChunk {
			return false, nil
		}
		err = l.writeTLS(c, h, f, e.Size, req.head, warm)
	} else {
		err = sock.send(h, f.File, e.Size, req.head, warm)
	}
	if err == nil && !req.head {
		f.ent.sent.Store(now)
	}
	if err == nil {
		cc.metrics.outcome("hit")
		cc.metrics.fast.Inc()
		if l.cfg.Served != nil {
			l.cfg.Served()
		}
	}
	return true, err
}

// warmBody reports whether a body of size bytes whose whole file was last
// sent at sent (Unix ns, 0 never) is taken to be in the page cache at now.
func warmBody(size, sent, now int64) bool {
	return size <= rawSendMax && sent != 0 && now-sent < int64(warmFor)
}

// header builds the response header: what net/http writes for the
// handler's whole-file answer (http.go), byte for byte.
func (l *MediaListener) header(b []byte, e *servedItem, req mediaRequest, closing bool) []byte {
	if req.http10 {
		b = append(b, "HTTP/1.0 200 OK\r\n"...)
	} else {
		b = append(b, "HTTP/1.1 200 OK\r\n"...)
	}
	b = append(b, e.raw...)
	b = append(b, l.dateLine()...)
	switch {
	case req.http10 && !closing:
		b = append(b, "Connection: keep-alive\r\n"...)
	case !req.http10 && closing:
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// dateLine is "Date: <now>\r\n", formatted once a second.
type dateLine struct {
	sec  int64
	line []byte
}

func (l *MediaListener) dateLine() []byte {
	now := time.Now()
	if d := l.date.Load(); d != nil && d.sec == now.Unix() {
		return d.line
	}
	d := &dateLine{sec: now.Unix(), line: now.UTC().AppendFormat([]byte("Date: "), http.TimeFormat)}
	d.line = append(d.line, "\r\n"...)
	l.date.Store(d)
	return d.line
}

// writeTLS sends the header with the file's first bytes in one write,
// then the rest in tlsChunk writes. A warm body is read with raw calls
// (readAtWarm).
func (l *MediaListener) writeTLS(c net.Conn, h []byte, f blobHandle, size int64, head, warm bool) error {
	bp := l.bufs.Get().(*[]byte)
	defer l.bufs.Put(bp)
	buf := *bp
	n := copy(buf, h)
	var off int64 // read at offsets: the handle's own offset is not used
	if head {
		off = size
	}
	for {
		if m := int(min(int64(len(buf)-n), size-off)); m > 0 {
			if err := readAtWarm(f.File, buf[n:n+m], off, warm); err != nil {
				return err
			}
			n += m
			off += int64(m)
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return err
		}
		n = 0
		if off == size {
			return nil
		}
	}
}

// handedConn is a plain connection handed to net/http with the bytes the
// fast path read from it. It keeps ReadFrom (sendfile) and NetConn (the
// cork) of the connection it wraps.
type handedConn struct {
	net.Conn
	pre []byte
}

func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *handedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *handedConn) NetConn() net.Conn { return c.Conn }

// rawConn is a plain TCP connection under TLS whose reads and writes are
// raw system calls (plainSock). Everything else (Close, deadlines,
// addresses) is the connection's; NetConn finds it for socket options.
type rawConn struct {
	net.Conn
	s *plainSock
}

func (c *rawConn) Read(b []byte) (int, error)  { return c.s.read(b) }
func (c *rawConn) Write(b []byte) (int, error) { return c.s.write(b) }
func (c *rawConn) NetConn() net.Conn           { return c.Conn }

// handedTLSConn is a TLS connection handed over with the bytes read from
// it. Like a *tls.Conn it has no ReadFrom (net/http copies through its own
// buffer) and has CloseWrite; its ConnectionState gives requests r.TLS
// (httpapi.RestoreTLS).
type handedTLSConn struct {
	*tls.Conn
	pre []byte
}

func (c *handedTLSConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// mediaRequest is a request the fast path answers.
type mediaRequest struct {
	id     string
	head   bool
	http10 bool // HTTP/1.0 with Connection: keep-alive
	size   int  // bytes: request line, header, blank line
}

type parseResult int

const (
	parseMore  parseResult = iota // the header is not complete yet
	parseOther                    // not a request the fast path answers
	parseMedia                    // a request it answers
)

// parseMediaRequest reads the request at the start of b strictly: anything
// it does not fully understand is parseOther, for net/http to answer. It
// answers only persistent GET or HEAD requests of /media/{id} (an optional
// query of plain characters) with no body, no Range, no If-*, no Expect,
// no Upgrade, no credentials, CRLF line ends and exactly one plain Host
// on HTTP/1.1.
func parseMediaRequest(b []byte) (mediaRequest, parseResult) {
	var r mediaRequest
	// Decide early for other requests (uploads, pages, WebSockets), so
	// they are handed over at their first bytes.
	var prefix string
	switch {
	case hasPrefixUpTo(b, "GET /media/"):
		prefix = "GET /media/"
	case hasPrefixUpTo(b, "HEAD /media/"):
		prefix, r.head = "HEAD /media/", true
	default:
		return r, parseOther
	}
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if !crlfOnly(b) {
			return r, parseOther
		}
		return r, parseMore
	}
	r.size = end + 4
	head := b[:end+2] // each line with its CRLF
	if !crlfOnly(head) {
		return r, parseOther
	}
	eol := bytes.Index(head, []byte("\r\n"))
	line := head[len(prefix):eol]
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return r, parseOther
	}
	target, version := line[:sp], line[sp+1:]
	path := target
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		path = target[:q]
		for _, c := range target[q+1:] {
			if !queryChar(c) {
				return r, parseOther
			}
		}
	}
	r.id = string(path)
	if !media.ValidID(r.id) {
		return r, parseOther
	}
	switch string(version) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		r.http10 = true
	default:
		return r, parseOther
	}
	hosts, conns := 0, 0
	keepAlive, closeConn := false, false
	for rest := head[eol+2:]; len(rest) > 0; {
		i := bytes.Index(rest, []byte("\r\n"))
		line := rest[:i]
		rest = rest[i+2:]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return r, parseOther // also a folded line (leading space)
		}
		name, value := line[:colon], bytes.Trim(line[colon+1:], " \t")
		for _, c := range name {
			if !tokenChar(c) {
				return r, parseOther
			}
		}
		for _, c := range value {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return r, parseOther
			}
		}
		switch {
		case bytes.EqualFold(name, []byte("Host")):
			hosts++
			if len(value) == 0 {
				return r, parseOther
			}
			for _, c := range value {
				if !hostChar(c) {
					return r, parseOther
				}
			}
		case bytes.EqualFold(name, []byte("Connection")):
			conns++
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				switch tok = bytes.Trim(tok, " \t"); {
				case bytes.EqualFold(tok, []byte("keep-alive")):
					keepAlive = true
				case bytes.EqualFold(tok, []byte("close")):
					closeConn = true
				default:
					return r, parseOther // upgrade, te, ...
				}
			}
		case len(name) >= 3 && bytes.EqualFold(name[:3], []byte("If-")),
			bytes.EqualFold(name, []byte("Range")),
			bytes.EqualFold(name, []byte("Content-Length")),
			bytes.EqualFold(name, []byte("Transfer-Encoding")),
			bytes.EqualFold(name, []byte("Expect")),
			bytes.EqualFold(name, []byte("Upgrade")),
			bytes.EqualFold(name, []byte("Authorization")),
			bytes.EqualFold(name, []byte("Cookie")):
			// Ranges and conditions are ServeContent's; a body, an
			// upgrade or an expectation net/http's; credentials the
			// guard's (a sign-in's use is recorded).
			return r, parseOther
		}
	}
	if hosts > 1 || conns > 1 || closeConn || (r.http10 && !keepAlive) || (!r.http10 && hosts != 1) {
		return r, parseOther
	}
	return r, parseMedia
}

// hasPrefixUpTo reports whether b and p agree on their common length.
func hasPrefixUpTo(b []byte, p string) bool {
	n := min(len(b), len(p))
	return string(b[:n]) == p[:n]
}

// crlfOnly reports whether every LF in b follows a CR and every CR is
// followed by an LF (or ends b): bare line ends are net/http's to judge.
func crlfOnly(b []byte) bool {
	for i, c := range b {
		switch c {
		case '\n':
			if i == 0 || b[i-1] != '\r' {
				return false
			}
		case '\r':
			if i+1 < len(b) && b[i+1] != '\n' {
				return false
			}
		}
	}
	return true
}

func tokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

func hostChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_'
}

func queryChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return c == '-' || c == '.' || c == '_' || c == '~' || c == '=' || c == '&' || c == '+' || c == '%'
}
