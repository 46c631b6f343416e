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

	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/ctlwire"
	"github.com/campusedge/campusedge/edge/token"
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

var roleHint = map[session.Role]string{
	session.RoleMaster:    "the master teacher",
	session.RoleAssistant: "an assistant teacher",
	session.RoleTerminal:  "a classroom terminal",
	session.RoleObserver:  "an observer",
	session.RoleCascade:   "another edge's cascade",
}

// control is the class-control part of live classes: the control state
// of each session (who is in, hands, stage, mutes), the control
// connections that claim a session token, and what a change tells the
// others. It hands quizzes and attendance to interaction and what is on
// stage to the session's cascade.
type control struct {
	sessions    *session.Manager
	sfu         *sfu.SFU
	log         *slog.Logger
	edgeID      string // sent in the welcome
	interaction *interaction
	cascades    *cascades
	state       stateStore // stage, hands, mutes across a restart (resume.go); nil: memory only
	budgets     *budgets   // control connections per token (limits.go)

	mu      sync.Mutex
	classes map[string]*class // by session id
	// byToken are the open connections by their hello token's hash, so
	// that a revoked token's connections close (revoke.go).
	byToken map[[32]byte]map[*participant]struct{}
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
	ctl   *control
	cls   *class
	conn  *api.ControlConn
	grant session.Grant
	id    string
	log   *slog.Logger
	tok   [32]byte // hash of the hello token (revoke.go)
	// tokKey names the token (budgets); release gives back its
	// control-connection place.
	tokKey  string
	release func()

	name atomic.Pointer[string] // read by broadcasts from other connections

	mu     sync.Mutex // guards below (requests of one connection arrive in order)
	joined bool
	pub    *sfu.Publisher
	sub    *sfu.Subscriber

	// link is sub, for the master's link reports (links.go), which must
	// not wait on mu while a request of this connection negotiates.
	link atomic.Pointer[sfu.Subscriber]
}

// classFor returns the control state of session id, made on first use.
// A session that has ended (or was forgotten) gets a detached state marked
// ended that nobody can join: kept in ctl.classes it would outlive the
// class, since the end (control.ended) has already cleared the map. The
// session's state is read under ctl.mu, and End marks it ended before
// control.ended takes ctl.mu, so no state is made after the clear.
func (ctl *control) classFor(id string) *class {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	c, ok := ctl.classes[id]
	if !ok {
		c = &class{id: id, parts: map[string]*participant{}, hands: map[string]bool{}, muted: map[string]bool{}}
		if s, err := ctl.sessions.Get(id); err != nil || s.State == session.StateEnded {
			c.ended = true
			return c
		}
		ctl.classes[id] = c
	}
	return c
}

// Claim takes control connections whose hello carries a session token.
func (ctl *control) Claim(hello ctlwire.Hello, conn *api.ControlConn) (api.ControlSession, bool) {
	g, err := ctl.sessions.Lookup(hello.Token)
	if err != nil {
		return nil, false
	}
	s, err := ctl.sessions.Get(g.SessionID)
	if err != nil {
		return nil, false
	}
	p := &participant{ctl: ctl, conn: conn, grant: g, id: newParticipantID(), tok: token.Hash(hello.Token), tokKey: tokenKey(hello.Token)}
	release, ok := ctl.budgets.conn(p.tokKey)
	if !ok {
		conn.SendError(hello.ID, "too_many_connections", fmt.Sprintf("this token already holds %d control connections; close one first", MaxConnsPerToken))
		conn.Close()
		return p, true // p.cls nil: nothing of it is served
	}
	p.release = release
	ctl.track(p)
	p.setName(hello.Name)
	p.log = ctl.log.With("session", g.SessionID, "participant", p.id, "role", string(g.Role), "classroom", g.ClassroomID)
	h := ctlwire.New(ctlwire.TypeWelcome)
	h.ID = hello.ID
	conn.Send(Welcome{Header: h, Role: string(g.Role), SessionID: g.SessionID, Classroom: g.ClassroomID,
		ParticipantID: p.id, EdgeID: ctl.edgeID, HeartbeatSeconds: 10, Layers: ctl.sfu.ChoosesLayers(),
		SVC: ctl.sfu.ForwardsSVC()})
	if s.State == session.StateEnded {
		conn.Send(Ended{Header: ctlwire.New(TypeEnded)})
		conn.Close()
		return p, true
	}
	p.cls = ctl.classFor(g.SessionID)
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
	spec := messages[hdr.Type] // decodeMessage knows the type
	if !slices.Contains(spec.roles, p.grant.Role) {
		p.conn.SendError(hdr.ID, "forbidden", fmt.Sprintf("%s cannot send %q; %s", roleHint[p.grant.Role], hdr.Type, allowedHint(p.grant.Role)))
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if hdr.Type != TypeJoin && !p.joined {
		p.conn.SendError(hdr.ID, "not_joined", "send a join message first")
		return
	}
	if err := spec.handle(p, hdr, msg); err != nil {
		var ce *ctlError
		if errors.As(err, &ce) {
			p.conn.SendError(hdr.ID, ce.code, ce.msg)
		} else {
			p.conn.SendError(hdr.ID, "internal", err.Error())
		}
	}
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
	p.ctl.broadcast(p.cls)
}

// Closed runs when the connection ends (closed, or silent past the read
// deadline): the participant leaves and its media stops.
func (p *participant) Closed() {
	p.ctl.untrack(p)
	if p.release != nil {
		p.release()
	}
	if p.cls == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.joined {
		// Also a terminal that vanished: noticed here. Its leave waits out
		// the reconnect grace: a room back within it reconnected.
		p.ctl.interaction.disconnected(p)
	}
	p.leaveLocked()
	p.log.Info("control connection closed")
}

func (ctl *control) inSession(sessionID, classroomID string) bool {
	s, err := ctl.sessions.Get(sessionID)
	return err == nil && slices.Contains(s.Classrooms, classroomID)
}

// broadcast sends the class's state to every joined participant.
func (ctl *control) broadcast(c *class) {
	s, err := ctl.sessions.Get(c.id)
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
		st.Participants[i].Publishing = ctl.sfu.Publishing(c.id, st.Participants[i].source())
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
func (ctl *control) ended(id string) {
	ctl.mu.Lock()
	c := ctl.classes[id]
	delete(ctl.classes, id)
	ctl.mu.Unlock()
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

// participantsOf returns the joined participants of a session.
func (ctl *control) participantsOf(sessionID string) []*participant {
	ctl.mu.Lock()
	c := ctl.classes[sessionID]
	ctl.mu.Unlock()
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*participant, 0, len(c.parts))
	for _, p := range c.parts {
		out = append(out, p)
	}
	return out
}

// stageOf is the classroom on stage in a session ("" if none, or no
// control state).
func (ctl *control) stageOf(sessionID string) string {
	ctl.mu.Lock()
	c := ctl.classes[sessionID]
	ctl.mu.Unlock()
	if c == nil {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stage
}

// count is how many sessions have control state, for the gauges.
func (ctl *control) count() int {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	return len(ctl.classes)
}
