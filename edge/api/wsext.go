package api

import (
	"github.com/campusedge/campusedge/edge/ctlwire"
)

// ControlConn is an authenticated control connection handed to a
// capability (live classes) that claimed its hello token. Sends never
// block: a client that does not read is disconnected.
type ControlConn struct {
	s *Server
	c *controlConn
}

// Send queues v (a message struct embedding ctlwire.Header) for the client.
// It reports false when the connection is gone.
func (cc *ControlConn) Send(v any) bool { return cc.c.enqueue(v) }

// SendError queues an error message answering request id.
func (cc *ControlConn) SendError(id, code, msg string) { cc.s.sendError(cc.c, id, code, msg) }

// Done is closed when the connection ends.
func (cc *ControlConn) Done() <-chan struct{} { return cc.c.done }

// Close ends the connection.
func (cc *ControlConn) Close() { cc.c.close() }

// ControlHandler serves one control connection whose hello token neither the
// admin nor a paired terminal owns. Claim returns ok=false when the token is
// not its own either (the connection is then refused). When ok, the server
// calls Serve on the returned session's Handle for every message after the
// hello, and Closed once when the connection ends.
type ControlHandler interface {
	Claim(hello ctlwire.Hello, c *ControlConn) (ControlSession, bool)
}

// ControlSession is one claimed connection.
type ControlSession interface {
	// Handle is called for each valid-envelope message, one at a time.
	Handle(hdr ctlwire.Header, data []byte)
	// Closed is called once when the connection has ended.
	Closed()
}

// HandleControl registers h for hello tokens the foundation does not know
// (live-class session tokens). Call before serving.
func (s *Server) HandleControl(h ControlHandler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctlExt = append(s.ctlExt, h)
}

// claim offers the connection to each registered handler.
func (s *Server) claim(c *controlConn, hello ctlwire.Hello) (ControlSession, bool) {
	s.mu.Lock()
	hs := append([]ControlHandler(nil), s.ctlExt...)
	s.mu.Unlock()
	for _, h := range hs {
		if cs, ok := h.Claim(hello, &ControlConn{s: s, c: c}); ok {
			return cs, true
		}
	}
	return nil, false
}

// serveClaimed runs the read loop for a claimed connection.
func (s *Server) serveClaimed(c *controlConn, cs ControlSession) {
	defer cs.Closed()
	// No closer goroutine here: the write loop closes the socket after
	// flushing what was queued, which also ends the read loop.
	s.readLoop(c, func() {}, cs.Handle)
}
