package classroom

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/ctlwire"
)

// sourceOf is the SFU source a classroom's camera and mic publish under.
func sourceOf(classroomID string) string { return "classroom:" + classroomID }

// sourceRemote is the source of another school's on-stage classroom, sent
// up a cascade: it is on stage by definition, so everyone receives it.
func sourceRemote(school string) string { return "remote:" + school }

func validSchool(s string) bool {
	if len(s) < 1 || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// permissions says which role may send which request. Anything not listed
// is refused with a "forbidden" error naming the role.
var permissions = map[string][]session.Role{
	TypeJoin:      {session.RoleMaster, session.RoleAssistant, session.RoleTerminal, session.RoleObserver},
	TypeLeave:     {session.RoleMaster, session.RoleAssistant, session.RoleTerminal, session.RoleObserver},
	TypeSubscribe: {session.RoleMaster, session.RoleAssistant, session.RoleTerminal, session.RoleObserver},
	TypeAnswer:    {session.RoleMaster, session.RoleAssistant, session.RoleTerminal, session.RoleObserver},
	TypeCandidate: {session.RoleMaster, session.RoleAssistant, session.RoleTerminal, session.RoleObserver},
	TypePublish:   {session.RoleMaster, session.RoleTerminal},
	TypeHand:      {session.RoleMaster, session.RoleAssistant, session.RoleTerminal}, // master only lowers
	TypeStage:     {session.RoleMaster},
	TypeMute:      {session.RoleMaster, session.RoleAssistant}, // assistant: own classroom only
	TypeEnd:       {session.RoleMaster},
	// interact.go: quizzes and attendance.
	TypeQuiz:       {session.RoleMaster, session.RoleAssistant},   // assistant: to own classroom
	TypeQuizAnswer: {session.RoleAssistant, session.RoleTerminal}, // terminal: for the room
	TypeQuizClose:  {session.RoleMaster, session.RoleAssistant},
	TypeRoster:     {session.RoleMaster, session.RoleAssistant, session.RoleTerminal},
	TypeMark:       {session.RoleMaster, session.RoleAssistant},
}

var roleHint = map[session.Role]string{
	session.RoleMaster:    "the master teacher",
	session.RoleAssistant: "an assistant teacher",
	session.RoleTerminal:  "a classroom terminal",
	session.RoleObserver:  "an observer",
	session.RoleCascade:   "another edge's cascade",
}

// class is the control state of one session: who is in, raised hands, the
// classroom on stage, muted classrooms.
type class struct {
	id string

	mu    sync.Mutex
	parts map[string]*participant
	hands map[string]bool
	stage string
	muted map[string]bool
	ended bool
}

// participant is one control connection with a session token.
type participant struct {
	l     *Live
	cls   *class
	conn  *api.ControlConn
	grant session.Grant
	id    string
	log   *slog.Logger

	name atomic.Pointer[string] // read by broadcasts from other connections

	mu     sync.Mutex // guards below (requests of one connection arrive in order)
	joined bool
	pub    *sfu.Publisher
	sub    *sfu.Subscriber
}

// classFor returns the control state of session id, made on first use.
// A session that has ended (or was forgotten) gets a detached state marked
// ended that nobody can join: kept in l.classes it would outlive the class,
// since the end (Live.ended) has already cleared the map. The session's
// state is read under l.mu, and End marks it ended before Live.ended takes
// l.mu, so no state is made after the clear.
func (l *Live) classFor(id string) *class {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.classes[id]
	if !ok {
		c = &class{id: id, parts: map[string]*participant{}, hands: map[string]bool{}, muted: map[string]bool{}}
		if s, err := l.Sessions.Get(id); err != nil || s.State == session.StateEnded {
			c.ended = true
			return c
		}
		l.classes[id] = c
	}
	return c
}

// Claim takes control connections whose hello carries a session token.
func (l *Live) Claim(hello ctlwire.Hello, conn *api.ControlConn) (api.ControlSession, bool) {
	g, err := l.Sessions.Lookup(hello.Token)
	if err != nil {
		return nil, false
	}
	s, err := l.Sessions.Get(g.SessionID)
	if err != nil {
		return nil, false
	}
	p := &participant{l: l, conn: conn, grant: g, id: newParticipantID()}
	p.setName(hello.Name)
	p.log = l.log.With("session", g.SessionID, "participant", p.id, "role", string(g.Role), "classroom", g.ClassroomID)
	h := ctlwire.New(ctlwire.TypeWelcome)
	h.ID = hello.ID
	conn.Send(Welcome{Header: h, Role: string(g.Role), SessionID: g.SessionID, Classroom: g.ClassroomID,
		ParticipantID: p.id, EdgeID: l.edgeID, HeartbeatSeconds: 10})
	if s.State == session.StateEnded {
		conn.Send(Ended{Header: ctlwire.New(TypeEnded)})
		conn.Close()
		return p, true
	}
	p.cls = l.classFor(g.SessionID)
	p.log.Info("control connection")
	return p, true
}

// Handle serves one message; messages of a connection are handled in order.
func (p *participant) Handle(hdr ctlwire.Header, data []byte) {
	if p.cls == nil {
		return // the session had ended at hello
	}
	msg, err := decodeMessage(hdr, data)
	if err != nil {
		code := "bad_message"
		if errors.Is(err, errUnknownType) {
			code = "unknown_type"
		}
		p.conn.SendError(hdr.ID, code, err.Error())
		return
	}
	if !slices.Contains(permissions[hdr.Type], p.grant.Role) {
		p.conn.SendError(hdr.ID, "forbidden", fmt.Sprintf("%s cannot send %q; %s", roleHint[p.grant.Role], hdr.Type, allowedHint(p.grant.Role)))
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if hdr.Type != TypeJoin && !p.joined {
		p.conn.SendError(hdr.ID, "not_joined", "send a join message first")
		return
	}
	if err := p.do(hdr, msg); err != nil {
		var ce *ctlError
		if errors.As(err, &ce) {
			p.conn.SendError(hdr.ID, ce.code, ce.msg)
		} else {
			p.conn.SendError(hdr.ID, "internal", err.Error())
		}
	}
}

func allowedHint(r session.Role) string {
	var can []string
	for t, roles := range permissions {
		if slices.Contains(roles, r) {
			can = append(can, t)
		}
	}
	sort.Strings(can)
	return "this role may send: " + strings.Join(can, ", ")
}

// ctlError is a refusal with an API error code.
type ctlError struct{ code, msg string }

func (e *ctlError) Error() string { return e.code + ": " + e.msg }

func refused(code, format string, a ...any) error {
	return &ctlError{code: code, msg: fmt.Sprintf(format, a...)}
}

func sfuError(err error) error {
	switch {
	case errors.Is(err, sfu.ErrBusy):
		return refused("already_publishing", "someone already publishes this source in the session")
	case errors.Is(err, sfu.ErrBadOffer):
		return refused("bad_sdp", "%v", err)
	case errors.Is(err, sfu.ErrNotFound):
		return refused("out_of_order", "%v", err)
	case errors.Is(err, sfu.ErrClosed):
		return refused("shutting_down", "the edge is shutting down")
	case errors.Is(err, context.DeadlineExceeded):
		return refused("timeout", "negotiation took too long")
	}
	return err
}

func (p *participant) ack(hdr ctlwire.Header) {
	h := ctlwire.New(TypeAck)
	h.ID = hdr.ID
	p.conn.Send(Ack{Header: h, For: hdr.Type})
}

// do runs one permitted request with p.mu held.
func (p *participant) do(hdr ctlwire.Header, msg any) error {
	l, c, g := p.l, p.cls, p.grant
	switch m := msg.(type) {
	case *Join:
		if p.joined {
			return refused("already_joined", "this connection has joined already")
		}
		if m.Name != "" {
			p.setName(m.Name)
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
		l.broadcast(c)
		l.x.joined(p)
	case *Leave:
		if p.joined {
			l.x.left(p, "left")
		}
		p.leaveLocked()
		p.ack(hdr)
	case *Publish:
		return p.publish(hdr, m)
	case *Subscribe:
		if p.sub != nil {
			select {
			case <-p.sub.Done():
				p.sub = nil // its connection failed: subscribe again
			default:
				return refused("already_subscribed", "this connection already receives media; answer the edge's offers")
			}
		}
		sub, err := l.SFU.NewSubscriber(g.SessionID, p.filter, func(sdp string) {
			p.conn.Send(SDPMessage{Header: ctlwire.New(TypeOffer), PC: PCSubscribe, SDP: sdp})
		})
		if err != nil {
			return sfuError(err)
		}
		p.sub = sub
		p.ack(hdr)
	case *SDPMessage: // answer to the edge's subscribe offer
		if p.sub == nil {
			return refused("out_of_order", "no subscribe offer to answer: send subscribe first")
		}
		if err := p.sub.Answer(m.SDP); err != nil {
			return sfuError(err)
		}
	case *Candidate:
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
	case *Hand:
		target := g.ClassroomID
		if g.Role == session.RoleMaster {
			if m.Raised || m.Classroom == "" {
				return refused("forbidden", "the master teacher can only lower a classroom's hand (raised false, classroom_id set)")
			}
			target = m.Classroom
		} else if m.Classroom != "" && m.Classroom != g.ClassroomID {
			return refused("forbidden", "%s can raise or lower only its own classroom's hand", roleHint[g.Role])
		}
		if !l.inSession(g.SessionID, target) {
			return refused("not_found", "classroom %q is not part of this session", target)
		}
		c.mu.Lock()
		if m.Raised {
			c.hands[target] = true
		} else {
			delete(c.hands, target)
		}
		c.mu.Unlock()
		p.ack(hdr)
		l.broadcast(c)
		l.x.handChanged(g.SessionID, target, m.Raised)
		l.x.logEvent(p, "hand", target, map[string]any{"raised": m.Raised})
	case *Stage:
		if !l.inSession(g.SessionID, m.Classroom) {
			return refused("not_found", "classroom %q is not part of this session", m.Classroom)
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
		c.mu.Unlock()
		c.mu.Lock()
		stage := c.stage
		c.mu.Unlock()
		p.log.Info("stage", "classroom", m.Classroom, "on", m.On)
		l.SFU.Resync(g.SessionID)
		l.stageChanged(g.SessionID, stage)
		p.ack(hdr)
		l.broadcast(c)
		l.x.logEvent(p, "stage", m.Classroom, map[string]any{"on": m.On})
	case *Mute:
		if g.Role == session.RoleAssistant && m.Classroom != g.ClassroomID {
			return refused("forbidden", "an assistant teacher can mute only their own classroom (%s)", g.ClassroomID)
		}
		if !l.inSession(g.SessionID, m.Classroom) {
			return refused("not_found", "classroom %q is not part of this session", m.Classroom)
		}
		c.mu.Lock()
		if m.Muted {
			c.muted[m.Classroom] = true
		} else {
			delete(c.muted, m.Classroom)
		}
		c.mu.Unlock()
		l.SFU.SetMuted(g.SessionID, sourceOf(m.Classroom), m.Muted)
		p.ack(hdr)
		l.broadcast(c)
		l.x.logEvent(p, "mute", m.Classroom, map[string]any{"muted": m.Muted})
	case *End:
		p.ack(hdr)
		p.mu.Unlock() // End runs the OnEnd hooks, which close every participant
		_, err := l.Sessions.End(g.SessionID)
		p.mu.Lock()
		if err != nil {
			return refused("not_found", "%v", err)
		}
	default:
		return p.doInteract(hdr, msg) // interact.go
	}
	return nil
}

func (p *participant) publish(hdr ctlwire.Header, m *Publish) error {
	l, g := p.l, p.grant
	ctx, cancel := context.WithTimeout(context.Background(), negotiateTimeout)
	defer cancel()
	var answer string
	if p.pub != nil {
		a, err := p.pub.Renegotiate(ctx, m.SDP)
		if err != nil {
			return sfuError(err)
		}
		answer = a
	} else {
		source := sfu.SourceMaster
		if g.Role == session.RoleTerminal {
			source = sourceOf(g.ClassroomID)
		} else if _, err := l.Sessions.Start(g.SessionID); err != nil {
			// The master publishing starts the class, as with WHIP.
			return refused("session_ended", "%v", err)
		}
		pub, a, err := l.SFU.PublishSource(ctx, g.SessionID, source, m.SDP)
		if err != nil {
			return sfuError(err)
		}
		p.pub, answer = pub, a
		go func() {
			// A classroom that loses power: its media connection fails
			// within seconds (ICE), long before the control connection's
			// read deadline; tell everyone it stopped publishing.
			<-pub.Done()
			p.mu.Lock()
			if p.pub == pub {
				p.pub = nil
			}
			p.mu.Unlock()
			p.log.Info("publisher closed")
			l.broadcast(p.cls)
		}()
	}
	h := ctlwire.New(TypeAnswer)
	h.ID = hdr.ID
	p.conn.Send(SDPMessage{Header: h, PC: PCPublish, SDP: answer})
	l.broadcast(p.cls)
	return nil
}

// filter decides what p receives: the master sees every classroom; a
// classroom (terminal, assistant) and an observer get the lesson plus the
// classroom on stage, never their own camera back.
func (p *participant) filter(source string) bool {
	if strings.HasPrefix(source, "remote:") {
		return true // another school's classroom on stage: everyone hears it
	}
	if p.grant.Role == session.RoleMaster {
		return strings.HasPrefix(source, "classroom:")
	}
	if source == sfu.SourceMaster {
		return true
	}
	p.cls.mu.Lock()
	stage := p.cls.stage
	p.cls.mu.Unlock()
	return stage != "" && source == sourceOf(stage) && stage != p.grant.ClassroomID
}

func (p *participant) leaveLocked() {
	if p.pub != nil {
		p.pub.Close()
		p.pub = nil
	}
	if p.sub != nil {
		p.sub.Close()
		p.sub = nil
	}
	if !p.joined {
		return
	}
	p.joined = false
	p.cls.mu.Lock()
	delete(p.cls.parts, p.id)
	p.cls.mu.Unlock()
	p.log.Info("left class")
	p.l.broadcast(p.cls)
}

// Closed runs when the connection ends (closed, or silent past the read
// deadline): the participant leaves and its media stops.
func (p *participant) Closed() {
	if p.cls == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.joined {
		p.l.x.left(p, "disconnected") // also a terminal that vanished: noticed here
	}
	p.leaveLocked()
	p.log.Info("control connection closed")
}

func (l *Live) inSession(sessionID, classroomID string) bool {
	s, err := l.Sessions.Get(sessionID)
	return err == nil && slices.Contains(s.Classrooms, classroomID)
}

// broadcast sends the class's state to every joined participant.
func (l *Live) broadcast(c *class) {
	s, err := l.Sessions.Get(c.id)
	if err != nil {
		return
	}
	c.mu.Lock()
	st := State{Header: ctlwire.New(TypeState), SessionID: s.ID, Title: s.Title, SessionState: string(s.State),
		Participants: []Participant{}, Stage: c.stage, Hands: []string{}, Muted: []string{}}
	parts := make([]*participant, 0, len(c.parts))
	for _, p := range c.parts {
		parts = append(parts, p)
	}
	for h := range c.hands {
		st.Hands = append(st.Hands, h)
	}
	for m := range c.muted {
		st.Muted = append(st.Muted, m)
	}
	c.mu.Unlock()
	for _, p := range parts {
		// Read without p.mu: broadcast runs while some participant holds
		// its own lock; these fields are only informative.
		st.Participants = append(st.Participants, Participant{ID: p.id, Role: string(p.grant.Role), Classroom: p.grant.ClassroomID, Name: p.nameSnapshot()})
	}
	for i := range st.Participants {
		st.Participants[i].Publishing = l.SFU.Publishing(c.id, st.Participants[i].source())
	}
	sort.Slice(st.Participants, func(i, j int) bool { return st.Participants[i].ID < st.Participants[j].ID })
	sort.Strings(st.Hands)
	sort.Strings(st.Muted)
	for _, p := range parts {
		p.conn.Send(st)
	}
}

func (p *participant) setName(n string) {
	if len([]rune(n)) > maxNameRunes {
		n = string([]rune(n)[:maxNameRunes])
	}
	p.name.Store(&n)
}

func (p *participant) nameSnapshot() string {
	if n := p.name.Load(); n != nil {
		return *n
	}
	return ""
}

func newParticipantID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "p-" + hex.EncodeToString(b)
}

func (pt Participant) source() string {
	switch pt.Role {
	case string(session.RoleMaster):
		return sfu.SourceMaster
	case string(session.RoleTerminal):
		return sourceOf(pt.Classroom)
	}
	return ""
}

// ended tells every participant of session id that the class is over and
// closes their connections.
func (l *Live) ended(id string) {
	l.mu.Lock()
	c := l.classes[id]
	delete(l.classes, id)
	l.mu.Unlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	c.ended = true
	parts := make([]*participant, 0, len(c.parts))
	for _, p := range c.parts {
		parts = append(parts, p)
	}
	c.mu.Unlock()
	for _, p := range parts {
		p.conn.Send(Ended{Header: ctlwire.New(TypeEnded)})
		p.conn.Close()
	}
}
