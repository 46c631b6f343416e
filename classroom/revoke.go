package classroom

import (
	"github.com/campusedge/campusedge/edge/token"
)

// Revoking a live-class token: when a big screen is unpaired, the
// terminal token its page was given for the class now stops working and
// its connections close, like the screen's own credential.

func (ctl *control) track(p *participant) {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	if ctl.byToken == nil {
		ctl.byToken = map[[32]byte]map[*participant]struct{}{}
	}
	if ctl.byToken[p.tok] == nil {
		ctl.byToken[p.tok] = map[*participant]struct{}{}
	}
	ctl.byToken[p.tok][p] = struct{}{}
}

func (ctl *control) untrack(p *participant) {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	delete(ctl.byToken[p.tok], p)
	if len(ctl.byToken[p.tok]) == 0 {
		delete(ctl.byToken, p.tok)
	}
}

// closeToken closes every connection opened with tok; it returns how many.
func (ctl *control) closeToken(tok string) int {
	h := token.Hash(tok)
	ctl.mu.Lock()
	var ps []*participant
	for p := range ctl.byToken[h] {
		ps = append(ps, p)
	}
	ctl.mu.Unlock()
	for _, p := range ps {
		p.conn.Close()
	}
	return len(ps)
}

// terminalUnpaired revokes the class tokens minted for a paired terminal's
// page and closes their connections.
func (x *interaction) terminalUnpaired(terminalID string) int {
	x.mu.Lock()
	var toks []string
	for _, s := range x.bySession {
		if t, ok := s.pageTokens[terminalID]; ok {
			toks = append(toks, t)
			delete(s.pageTokens, terminalID)
		}
	}
	x.mu.Unlock()
	n := 0
	for _, t := range toks {
		x.sessions.Revoke(t)
		n += x.control.closeToken(t)
	}
	return n
}
