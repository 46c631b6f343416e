package classroom

// The handlers of the class-control messages (registry.go routes them
// here). Each runs with the sender's p.mu held, for a participant that
// has joined (join itself excepted).

import (
	"context"
	"strings"

	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/campusedge/campusedge/edge/ctlwire"
)

// join: a classroom's join is stored (an attendance record) before it is
// acknowledged or anyone hears of it; if it cannot be, the join is refused
// with not_saved and the client joins again.
func (p *participant) join(hdr ctlwire.Header, m *Join) error {
	if p.joined {
		return refused("already_joined", "this connection has joined already")
	}
	if m.Name != "" {
		p.setName(m.Name)
	}
	c := p.cls
	c.mu.Lock()
	ended := c.ended
	c.mu.Unlock()
	if ended {
		return refused("session_ended", "the session has ended")
	}
	if err := p.ctl.interaction.recordJoin(p); err != nil {
		return err
	}
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return refused("session_ended", "the session has ended")
	}
	c.parts[p.id] = p
	c.mu.Unlock()
	p.joined = true
	p.log.Info("joined class")
	p.ack(hdr)
	p.ctl.broadcast(c)
	p.ctl.interaction.joined(p)
	return nil
}

// leave: the leave is stored before it is acknowledged; if it cannot be,
// the participant stays in the class and sends leave again.
func (p *participant) leave(hdr ctlwire.Header, _ *Leave) error {
	if p.joined {
		if err := p.ctl.interaction.left(p, "left"); err != nil {
			return err
		}
	}
	p.leaveLocked()
	p.ack(hdr)
	return nil
}

func (p *participant) publish(hdr ctlwire.Header, m *Publish) error {
	ctl, g := p.ctl, p.grant
	ctx, cancel := context.WithTimeout(context.Background(), negotiateTimeout)
	defer cancel()
	var answer string
	if p.pub != nil {
		p.pub.SetScreens(m.Screen)
		a, err := p.pub.Renegotiate(ctx, m.SDP)
		if err != nil {
			return sfuError(err)
		}
		answer = a
	} else {
		source := sfu.SourceMaster
		if g.Role == session.RoleTerminal {
			source = sourceOf(g.ClassroomID)
		} else if _, err := ctl.sessions.Start(g.SessionID); err != nil {
			// The master publishing starts the class, as with WHIP.
			return refused("session_ended", "%v", err)
		}
		pub, a, err := ctl.sfu.PublishSource(ctx, g.SessionID, source, m.SDP)
		if err != nil {
			return sfuError(err)
		}
		// Marked before any track of the offer can be chosen for: the
		// chooser asks when it runs, and no media flows before the
		// answer.
		pub.SetScreens(m.Screen)
		// Through a blip the page restarts ICE on this connection; the
		// others see the room not publishing meanwhile.
		pub.KeepThroughICEFailure(iceRestartGrace, func() { ctl.broadcast(p.cls) })
		p.pub, answer = pub, a
		go p.watchPublisher(pub)
	}
	h := ctlwire.New(TypeAnswer)
	h.ID = hdr.ID
	p.conn.Send(SDPMessage{Header: h, PC: PCPublish, SDP: answer})
	ctl.broadcast(p.cls)
	return nil
}

// watchPublisher: a classroom that loses power has its media connection
// fail within seconds (ICE), long before the control connection's read
// deadline; tell everyone it stopped publishing.
func (p *participant) watchPublisher(pub *sfu.Publisher) {
	<-pub.Done()
	p.mu.Lock()
	if p.pub == pub {
		p.pub = nil
	}
	p.mu.Unlock()
	p.log.Info("publisher closed")
	p.ctl.broadcast(p.cls)
}

func (p *participant) subscribe(hdr ctlwire.Header, _ *Subscribe) error {
	if p.sub != nil {
		select {
		case <-p.sub.Done():
			p.sub = nil // its connection failed: subscribe again
		default:
			return refused("already_subscribed", "this connection already receives media; answer the edge's offers")
		}
	}
	sub, err := p.ctl.sfu.NewSubscriber(p.grant.SessionID, p.filter, func(sdp string) {
		p.conn.Send(SDPMessage{Header: ctlwire.New(TypeOffer), PC: PCSubscribe, SDP: sdp})
	})
	if err != nil {
		return sfuError(err)
	}
	sub.RestartICEOnFailure(iceRestartGrace)
	p.sub = sub
	p.link.Store(sub)
	if p.grant.Role == session.RoleMaster {
		// The master's grid takes each classroom's lowest layer; the
		// classroom on stage comes at the quality the link carries.
		ctl, id := p.ctl, p.grant.SessionID
		sub.SetHoldLow(func(source string) bool {
			return strings.HasPrefix(source, "classroom:") && source != sourceOf(ctl.stageOf(id))
		})
		go p.reportLinks(sub)
	}
	p.ack(hdr)
	return nil
}

// answer is the client's answer to the edge's subscribe offer.
func (p *participant) answer(_ ctlwire.Header, m *SDPMessage) error {
	if p.sub == nil {
		return refused("out_of_order", "no subscribe offer to answer: send subscribe first")
	}
	if err := p.sub.Answer(m.SDP); err != nil {
		return sfuError(err)
	}
	return nil
}

func (p *participant) candidate(_ ctlwire.Header, m *Candidate) error {
	ci := webrtc.ICECandidateInit{Candidate: m.Candidate, SDPMid: m.SDPMid, SDPMLineIndex: m.SDPMLineIndex}
	var err error
	switch {
	case m.PC == PCPublish && p.pub != nil:
		err = p.pub.AddCandidate(ci)
	case m.PC == PCSubscribe && p.sub != nil:
		err = p.sub.AddCandidate(ci)
	default:
		return refused("out_of_order", "no %s connection yet for this candidate", m.PC)
	}
	if err != nil {
		return sfuError(err)
	}
	return nil
}

// hand: a classroom raises or lowers its own hand; the master lowers any.
func (p *participant) hand(hdr ctlwire.Header, m *Hand) error {
	ctl, c, g := p.ctl, p.cls, p.grant
	target := g.ClassroomID
	if g.Role == session.RoleMaster {
		if m.Raised || m.Classroom == "" {
			return refused("forbidden", "the master teacher can only lower a classroom's hand (raised false, classroom_id set)")
		}
		target = m.Classroom
	} else if m.Classroom != "" && m.Classroom != g.ClassroomID {
		return refused("forbidden", "%s can raise or lower only its own classroom's hand", roleHint[g.Role])
	}
	if !ctl.inSession(g.SessionID, target) {
		return refused("not_found", "classroom %q is not part of this session", target)
	}
	c.mu.Lock()
	unchanged := c.hands[target] == m.Raised
	c.mu.Unlock()
	if unchanged {
		p.ack(hdr) // a repeat changes nothing: nothing to tell or log
		return nil
	}
	if err := ctl.interaction.logEvent(p, "hand", target, map[string]any{"raised": m.Raised}); err != nil {
		return err
	}
	c.mu.Lock()
	if m.Raised {
		c.hands[target] = true
	} else {
		delete(c.hands, target)
	}
	c.mu.Unlock()
	if err := ctl.saveClass(c); err != nil {
		return err // sent again, the same hand gives the same state
	}
	p.ack(hdr)
	ctl.broadcast(c)
	ctl.interaction.handChanged(g.SessionID, target, m.Raised)
	return nil
}

// stage puts a classroom on stage (everyone receives it) or back.
func (p *participant) stage(hdr ctlwire.Header, m *Stage) error {
	ctl, c, g := p.ctl, p.cls, p.grant
	if !ctl.inSession(g.SessionID, m.Classroom) {
		return refused("not_found", "classroom %q is not part of this session", m.Classroom)
	}
	c.mu.Lock()
	notOn := !m.On && c.stage != m.Classroom
	c.mu.Unlock()
	if notOn {
		return refused("not_on_stage", "classroom %q is not on stage", m.Classroom)
	}
	if err := ctl.interaction.logEvent(p, "stage", m.Classroom, map[string]any{"on": m.On}); err != nil {
		return err
	}
	c.mu.Lock()
	switch {
	case m.On:
		c.stage = m.Classroom
		delete(c.hands, m.Classroom) // the question is being answered
	case c.stage == m.Classroom:
		c.stage = ""
	default:
		c.mu.Unlock()
		return refused("not_on_stage", "classroom %q is not on stage", m.Classroom)
	}
	stage := c.stage
	c.mu.Unlock()
	if err := ctl.saveClass(c); err != nil {
		return err
	}
	p.log.Info("stage", "classroom", m.Classroom, "on", m.On)
	ctl.sfu.Resync(g.SessionID)
	ctl.cascades.stageChanged(g.SessionID, stage)
	p.ack(hdr)
	ctl.broadcast(c)
	return nil
}

// mute mutes or unmutes a classroom's audio; an assistant only their own.
func (p *participant) mute(hdr ctlwire.Header, m *Mute) error {
	ctl, c, g := p.ctl, p.cls, p.grant
	if g.Role == session.RoleAssistant && m.Classroom != g.ClassroomID {
		return refused("forbidden", "an assistant teacher can mute only their own classroom (%s)", g.ClassroomID)
	}
	if !ctl.inSession(g.SessionID, m.Classroom) {
		return refused("not_found", "classroom %q is not part of this session", m.Classroom)
	}
	c.mu.Lock()
	unchanged := c.muted[m.Classroom] == m.Muted
	c.mu.Unlock()
	if unchanged {
		p.ack(hdr) // a repeat changes nothing: nothing to tell or log
		return nil
	}
	if err := ctl.interaction.logEvent(p, "mute", m.Classroom, map[string]any{"muted": m.Muted}); err != nil {
		return err
	}
	c.mu.Lock()
	if m.Muted {
		c.muted[m.Classroom] = true
	} else {
		delete(c.muted, m.Classroom)
	}
	c.mu.Unlock()
	if err := ctl.saveClass(c); err != nil {
		return err
	}
	ctl.sfu.SetMuted(g.SessionID, sourceOf(m.Classroom), m.Muted)
	p.ack(hdr)
	ctl.broadcast(c)
	return nil
}

func (p *participant) end(hdr ctlwire.Header, _ *End) error {
	p.ack(hdr)
	p.mu.Unlock() // End runs the OnEnd hooks, which close every participant
	_, err := p.ctl.sessions.End(p.grant.SessionID)
	p.mu.Lock()
	if err != nil {
		return refused("not_found", "%v", err)
	}
	return nil
}
