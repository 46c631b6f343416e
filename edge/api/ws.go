package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/campusedge/campusedge/edge/ctlwire"
	"github.com/campusedge/campusedge/edge/fleet"
	"github.com/campusedge/campusedge/edge/httpapi"
)

// Control channel timing. A terminal that misses about three pings is
// declared gone, so a vanished terminal shows offline within ~30 s at worst
// and usually as soon as its TCP connection resets.
const (
	pingEvery    = 10 * time.Second
	readDeadline = 3*pingEvery + 5*time.Second
	helloTimeout = 5 * time.Second
	writeTimeout = 5 * time.Second
	sendQueue    = 64
)

type controlConn struct {
	ws   *websocket.Conn
	send chan []byte
	done chan struct{}
	// terminal is the paired terminal it serves ("" for others), so that
	// unpairing closes its connections (set before it is served).
	terminal atomic.Pointer[string]
}

// enqueue queues a message without blocking; a client that does not read
// fast enough is dropped (it reconnects) instead of slowing the edge.
func (c *controlConn) enqueue(v any) bool {
	data, err := json.Marshal(v)
	if err != nil {
		return false
	}
	select {
	case c.send <- data:
		return true
	case <-c.done:
		return false
	default:
		c.close()
		return false
	}
}

func (c *controlConn) close() {
	select {
	case <-c.done:
	default:
		close(c.done)
	}
}

func (s *Server) upgrader() *websocket.Upgrader {
	return &websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 4096,
		// Browsers send Origin; only the console served by this edge may
		// open the channel. Non-browser clients (classterm) send none.
		CheckOrigin: func(r *http.Request) bool {
			o := r.Header.Get("Origin")
			if o == "" {
				return true
			}
			u, err := url.Parse(o)
			return err == nil && u.Host == r.Host
		},
	}
}

func (s *Server) controlWS(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrader().Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader already answered with an HTTP error
	}
	ws.SetReadLimit(ctlwire.MaxMessageBytes)
	c := &controlConn{ws: ws, send: make(chan []byte, sendQueue), done: make(chan struct{})}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.wsConns.Inc()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wsConns.Dec()
		c.close()
		_ = ws.Close()
	}()
	hello, err := s.readHello(c, r)
	if err != nil {
		refuse(ws, "", err.Error())
		return
	}
	if p, ok := PrincipalFrom(r.Context()); hello.Token == "" && p.Kind != KindScreen {
		// A browser signed in with its session cookie: the console's
		// watcher needs an admin.
		if ok && p.IsAdmin() {
			go s.writeLoop(c)
			s.serveWatcher(c, hello)
			return
		}
		refuse(ws, hello.ID, "sign in as an admin first, or send a token in the hello")
		return
	}
	if hello.Token == "" {
		// Only a paired screen's cookie gets here (readHello): its fleet
		// connection, so the console shows it online.
		if sc, err := r.Cookie(ScreenCookie); err == nil {
			hello.Token = sc.Value
		}
	}
	if s.cfg.Identity.CheckAdminToken(hello.Token) {
		go s.writeLoop(c)
		s.serveWatcher(c, hello)
		return
	}
	t, err := s.cfg.Fleet.Authenticate(hello.Token)
	if err != nil {
		if cs, ok := s.claim(c, hello); ok {
			go s.writeLoop(c)
			s.serveClaimed(c, cs)
			return
		}
		refuse(ws, hello.ID, "unknown token: pair this terminal again with a new code, or use a token of a live-class session")
		return
	}
	go s.writeLoop(c)
	s.serveTerminal(c, r, hello, t)
}

// refuse tells an unauthenticated client why, then closes. The write loop
// has not started yet, so writing here directly is the only writer.
func refuse(ws *websocket.Conn, id, msg string) {
	h := ctlwire.New(ctlwire.TypeError)
	h.ID = id
	_ = ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if ws.WriteJSON(ctlwire.Error{Header: h, Code: "unauthorized", Message: msg}) == nil {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "unauthorized"), time.Now().Add(time.Second))
	}
}

// readHello takes the token from the Authorization header or, for
// browsers, from a hello message that must arrive within helloTimeout.
func (s *Server) readHello(c *controlConn, r *http.Request) (ctlwire.Hello, error) {
	var h ctlwire.Hello
	_ = c.ws.SetReadDeadline(time.Now().Add(helloTimeout))
	_, data, err := c.ws.ReadMessage()
	if err != nil {
		return h, errors.New("no hello message within 5s")
	}
	hdr, err := ctlwire.Decode(data)
	if err != nil {
		return h, err
	}
	if hdr.Type != ctlwire.TypeHello {
		return h, errors.New("the first message must be a hello")
	}
	if err := ctlwire.DecodeBody(data, &h); err != nil {
		return h, err
	}
	if tok, ok := httpapi.BearerToken(r); ok && h.Token == "" {
		h.Token = tok
	}
	if _, signedIn := PrincipalFrom(r.Context()); (h.Token == "" && !signedIn) || len(h.Token) > 256 {
		return h, errors.New("hello carries no token")
	}
	return h, nil
}

func (s *Server) writeLoop(c *controlConn) {
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	for {
		select {
		case <-c.done:
			// Flush what was queued before the close (an "ended" or
			// "error" message explains the close to the client).
			for drained := false; !drained; {
				select {
				case data := <-c.send:
					_ = c.ws.SetWriteDeadline(time.Now().Add(time.Second))
					if c.ws.WriteMessage(websocket.TextMessage, data) != nil {
						drained = true
					}
				default:
					drained = true
				}
			}
			_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			_ = c.ws.Close()
			return
		case data := <-c.send:
			_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
			if err := c.ws.WriteMessage(websocket.TextMessage, data); err != nil {
				c.close()
				_ = c.ws.Close()
				return
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				c.close()
				_ = c.ws.Close()
				return
			}
		}
	}
}

func (s *Server) sendError(c *controlConn, id, code, msg string) {
	h := ctlwire.New(ctlwire.TypeError)
	h.ID = id
	c.enqueue(ctlwire.Error{Header: h, Code: code, Message: msg})
}

// readLoop reads messages until the connection ends, enforcing the read
// deadline (refreshed by pongs and messages) and a per-connection rate limit.
func (s *Server) readLoop(c *controlConn, seen func(), handle func(hdr ctlwire.Header, data []byte)) {
	lim := rate.NewLimiter(rate.Limit(20), 40)
	_ = c.ws.SetReadDeadline(time.Now().Add(readDeadline))
	c.ws.SetPongHandler(func(string) error {
		seen()
		return c.ws.SetReadDeadline(time.Now().Add(readDeadline))
	})
	strikes := 0
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(readDeadline))
		seen()
		if !lim.Allow() {
			strikes++
			s.sendError(c, "", "rate_limited", "too many control messages; slow down")
			if strikes > 100 {
				return
			}
			continue
		}
		hdr, err := ctlwire.Decode(data)
		if err != nil {
			s.sendError(c, "", "bad_message", err.Error())
			continue
		}
		if hdr.Type == ctlwire.TypePing {
			p := ctlwire.New(ctlwire.TypePong)
			p.ID = hdr.ID
			c.enqueue(p)
			continue
		}
		handle(hdr, data)
	}
}

func (s *Server) serveTerminal(c *controlConn, r *http.Request, hello ctlwire.Hello, t fleet.Terminal) {
	version := hello.Version
	if len(version) > 64 {
		version = version[:64]
	}
	addr := remoteHost(r)
	disconnect := s.cfg.Fleet.Connected(t, addr, version)
	defer disconnect()
	s.log.Info("terminal online", "terminal", t.ID, "classroom", t.ClassroomID, "addr", addr, "version", version)
	defer s.log.Info("terminal offline", "terminal", t.ID, "classroom", t.ClassroomID)
	c.enqueue(ctlwire.Welcome{Header: ctlwire.New(ctlwire.TypeWelcome), Role: "terminal", EdgeID: s.cfg.Identity.EdgeID(),
		TerminalID: t.ID, Classroom: t.ClassroomID, HeartbeatSeconds: int(pingEvery / time.Second)})
	go func() { <-c.done; _ = c.ws.Close() }()
	tid := t.ID
	c.terminal.Store(&tid)
	defer s.trackTerminal(t.ID, c)()
	s.readLoop(c, func() { s.cfg.Fleet.Seen(t.ID) }, func(hdr ctlwire.Header, data []byte) {
		s.terminalMessage(c, t.ID, hdr, data)
	})
}

// Snapshot is the first message a watcher receives.
type Snapshot struct {
	ctlwire.Header
	Classrooms []fleet.Classroom `json:"classrooms"`
	Terminals  []fleet.Terminal  `json:"terminals"`
}

// EventMessage carries one fleet change to watchers.
type EventMessage struct {
	ctlwire.Header
	fleet.Event
}

func (s *Server) serveWatcher(c *controlConn, hello ctlwire.Hello) {
	events, cancel := s.cfg.Fleet.Watch()
	defer cancel()
	c.enqueue(ctlwire.Welcome{Header: ctlwire.New(ctlwire.TypeWelcome), Role: "admin", EdgeID: s.cfg.Identity.EdgeID(), HeartbeatSeconds: int(pingEvery / time.Second)})
	cs, err1 := s.cfg.Fleet.Classrooms()
	ts, err2 := s.cfg.Fleet.Terminals()
	if err := errors.Join(err1, err2); err != nil {
		s.sendError(c, hello.ID, "internal", err.Error())
		return
	}
	c.enqueue(Snapshot{Header: ctlwire.New(ctlwire.TypeSnapshot), Classrooms: cs, Terminals: ts})
	go func() {
		defer c.close()
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					return // fell behind: the client reconnects and gets a fresh snapshot
				}
				if !c.enqueue(EventMessage{Header: ctlwire.New(ctlwire.TypeEvent), Event: ev}) {
					return
				}
			case <-c.done:
				return
			}
		}
	}()
	go func() { <-c.done; _ = c.ws.Close() }()
	s.readLoop(c, func() {}, func(hdr ctlwire.Header, _ []byte) {
		s.sendError(c, hdr.ID, "unknown_type", "message type "+hdr.Type+" is not handled by this edge")
	})
}

// CloseTerminal ends every control connection of a terminal (it was
// unpaired); each closes within a write timeout.
func (s *Server) CloseTerminal(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if t := c.terminal.Load(); t != nil && *t == id {
			c.close()
			n++
		}
	}
	return n
}

// CloseControl ends every control connection (used at shutdown: hijacked
// WebSockets are not closed by http.Server.Shutdown).
func (s *Server) CloseControl() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.close()
	}
}
