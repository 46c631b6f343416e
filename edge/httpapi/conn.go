package httpapi

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
)

type connKey struct{}

// ConnContext is an http.Server ConnContext that remembers each request's
// connection, for handlers that tune it (Cork).
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// TCPConn is the TCP connection under c (through TLS and wrappers that
// expose NetConn), or nil.
func TCPConn(c net.Conn) *net.TCPConn { return tcpConn(c) }

// tcpConn finds the TCP connection under c: through TLS and through
// wrappers that expose NetConn, as tls.Conn does.
func tcpConn(c net.Conn) *net.TCPConn {
	for range 8 { // bounded: wrappers do not nest deeper
		switch x := c.(type) {
		case *net.TCPConn:
			return x
		case *tls.Conn:
			c = x.NetConn()
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// Cork holds back partial TCP segments of r's connection (TCP_CORK) until
// the returned function is called, so that a response's header and the
// first bytes of its body leave in full segments instead of a small
// header packet ahead of the body (what nginx's tcp_nopush does). The
// returned function must be called; it sends what is held back. Cork does
// nothing over HTTP/2, where other streams share the connection, or when
// the connection is not TCP.
func Cork(r *http.Request) (uncork func()) {
	if r.ProtoMajor != 1 {
		return func() {}
	}
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	return CorkConn(c)
}

// CorkConn is Cork for a connection served outside net/http (one
// HTTP/1.x response at a time).
func CorkConn(c net.Conn) (uncork func()) {
	tc := tcpConn(c)
	if tc == nil {
		return func() {}
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return func() {}
	}
	set := func(on int) bool {
		var serr error
		err := raw.Control(func(fd uintptr) { serr = setCork(fd, on) })
		return err == nil && serr == nil
	}
	if !set(1) {
		return func() {}
	}
	return func() { set(0) }
}

// RestoreTLS gives requests their TLS state (r.TLS) when their connection
// reached the server wrapped, as a connection handed over by the /media
// fast path is (net/http sets r.TLS only for a bare *tls.Conn). It needs
// ConnContext on the server.
func RestoreTLS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if c, ok := r.Context().Value(connKey{}).(interface {
				ConnectionState() tls.ConnectionState
			}); ok {
				st := c.ConnectionState()
				r.TLS = &st
			}
		}
		next.ServeHTTP(w, r)
	})
}
