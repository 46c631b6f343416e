package api

import (
	"github.com/campusedge/campusedge/edge/ctlwire"
)

// TerminalHandler handles one message type a terminal sends; data is the
// whole message (≤ ctlwire.MaxMessageBytes), to be decoded with ctlwire.DecodeBody.
// A returned error is sent back to the terminal as a bad_message error.
type TerminalHandler func(terminalID string, data []byte) error

// HandleTerminal routes messages of type typ from terminals to h.
// Register before serving.
func (s *Server) HandleTerminal(typ string, h TerminalHandler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.termHandlers == nil {
		s.termHandlers = map[string]TerminalHandler{}
	}
	s.termHandlers[typ] = h
}

// SendToTerminal queues v on the terminal's control connection; false if
// the terminal is not connected (or too slow, and was dropped).
func (s *Server) SendToTerminal(terminalID string, v any) bool {
	s.mu.Lock()
	c := s.terms[terminalID]
	s.mu.Unlock()
	return c != nil && c.enqueue(v)
}

func (s *Server) trackTerminal(id string, c *controlConn) (untrack func()) {
	s.mu.Lock()
	if s.terms == nil {
		s.terms = map[string]*controlConn{}
	}
	s.terms[id] = c
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.terms[id] == c {
			delete(s.terms, id)
		}
		s.mu.Unlock()
	}
}

func (s *Server) terminalMessage(c *controlConn, terminalID string, hdr ctlwire.Header, data []byte) {
	s.mu.Lock()
	h := s.termHandlers[hdr.Type]
	s.mu.Unlock()
	if h == nil {
		s.sendError(c, hdr.ID, "unknown_type", "message type "+hdr.Type+" is not handled by this edge")
		return
	}
	if err := h(terminalID, data); err != nil {
		s.sendError(c, hdr.ID, "bad_message", err.Error())
	}
}
