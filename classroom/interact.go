package classroom

// The class's interactive part on the control channel: quizzes with live
// results, and attendance (joins, leaves, the assistant teacher's marks from
// the roster). Messages are specified in docs/LIVE.md ("Quizzes",
// "Attendance"); records go to the learning store (classroom/learning) and
// from there, in the same transaction, to the sync outbox.

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/classroom/attendance"
	"github.com/campusedge/campusedge/classroom/learning"
	"github.com/campusedge/campusedge/classroom/quiz"
	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/ctlwire"
	"github.com/campusedge/campusedge/edge/fsutil"
)

// resultsEvery throttles quiz_results per quiz: forty classrooms answering
// at once make one message per interval, not forty.
const resultsEvery = 250 * time.Millisecond

// maxQuizzesPerSession bounds what a session can make the edge hold.
const maxQuizzesPerSession = 200

// recordTimeout bounds one learning-record write.
const recordTimeout = 5 * time.Second

// LearningStore is where learning records go (learning.Store).
type LearningStore interface {
	Add(ctx context.Context, r learning.Record) (learning.Record, error)
	Session(id, kindPrefix string, limit int) ([]learning.Record, error)
}

// interaction holds the quizzes and attendance of every session, and
// serves their HTTP side (interact_http.go).
type interaction struct {
	sessions *session.Manager
	control  *control // the joined participants each message goes to
	log      *slog.Logger
	store    LearningStore      // nil: records are only logged
	roster   *attendance.Source // nil: no roster on this edge
	// classroomName names a classroom for its pages (interact_http.go);
	// the paired terminal itself is resolved by the API's guard.
	classroomName func(id string) string
	codes         *roomCodes  // the assistant codes big screens show
	srv           *api.Server // for the audit log

	records      *prometheus.CounterVec // stored learning records by kind
	recordErrors prometheus.Counter     // records that could not be stored
	budgets      *budgets               // durable records per token per minute (limits.go)

	mu        sync.Mutex
	bySession map[string]*sessionInteract
}

type sessionInteract struct {
	quizzes map[string]*liveQuiz
	order   []string                     // quiz ids in push order
	classes map[string]*attendance.Class // resolved roster by classroom
	marks   map[string]map[string]string // classroom → student → status
	// hands is the raise order; entries whose hand was lowered by going on
	// stage linger until raised again (clients keep those in state.hands).
	hands []string
	// pageTokens are the terminal tokens minted for paired classroom
	// pages, by paired terminal (each screen its own, so that unpairing
	// one revokes only its token: revoke.go).
	pageTokens map[string]string
	// assistants are the assistant tokens minted for signed-in assistants,
	// by classroom and staff id: each person gets their own.
	assistants map[string]string
}

// liveQuiz is one pushed quiz and its throttled results.
type liveQuiz struct {
	session  string
	tally    *quiz.Tally
	audience string // "" = every classroom (master's quiz), else one classroom

	mu      sync.Mutex
	pending bool
	last    time.Time
	timer   *time.Timer
	// revealed: the teacher showed the results to the big screens.
	revealed bool
	// everyRoom is set once every classroom of the audience has answered;
	// that moment's results go out at once, not at the end of the interval.
	everyRoom bool
}

func newInteraction(sessions *session.Manager, store LearningStore, roster *attendance.Source, log *slog.Logger) *interaction {
	return &interaction{sessions: sessions, log: log, store: store, roster: roster, bySession: map[string]*sessionInteract{}, codes: newRoomCodes(),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "campusedge_learning_records_total",
			Help: "Learning records (quiz answers, attendance, session log) stored and queued for the city, by kind."}, []string{"kind"}),
		recordErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "campusedge_learning_record_errors_total",
			Help: "Learning records that could not be stored (see the log)."}),
	}
}

// sessionLocked returns the interactive state of session id, made on
// first use. A request that arrives as its session ends (or after) gets a
// detached state that is dropped with the request: kept in x.bySession it
// would never be removed, since sessionEnded has run. End marks the
// session ended before sessionEnded takes x.mu, so checking here under
// x.mu leaves no window.
func (x *interaction) sessionLocked(id string) *sessionInteract {
	s := x.bySession[id]
	if s == nil {
		s = &sessionInteract{quizzes: map[string]*liveQuiz{}, classes: map[string]*attendance.Class{}, marks: map[string]map[string]string{}}
		if st, err := x.sessions.Get(id); err != nil || st.State == session.StateEnded {
			return s
		}
		x.bySession[id] = s
	}
	return s
}

// counts returns the sessions with interactive state and the quizzes they
// hold, for the gauges.
func (x *interaction) counts() (sessions, quizzes int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, s := range x.bySession {
		quizzes += len(s.quizzes)
	}
	return len(x.bySession), quizzes
}

// record stores a learning record and returns once it is durable. A
// failure is logged and returned as a not_saved refusal: the request that
// makes the record is not acknowledged and changes nothing, the class goes
// on, and the client sends it again (class.js and classterm do, with
// backoff). Acknowledging first would lose what a power cut or a full disk
// catches between the ack and the write.
func (x *interaction) record(p *participant, r learning.Record, data any) error {
	if x.store == nil {
		return nil
	}
	// What a client can make the edge write as often as it likes (class
	// events, joins and leaves) is budgeted per token: a flood is not logged,
	// while quiz answers and marks (bounded by quizzes and students) are.
	switch r.Kind {
	case learning.KindSessionLog, learning.KindAttendanceJoin, learning.KindAttendanceLeave:
		if x.budgets != nil && p != nil && p.tokKey != "" && !x.budgets.record(p.tokKey, time.Now()) {
			p.log.Debug("record over the token's budget not stored", "kind", r.Kind)
			return nil
		}
	}
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	r.Data = b
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	if _, err := x.store.Add(ctx, r); err != nil {
		x.recordErrors.Inc()
		p.log.Error("learning record not stored; the request is refused with not_saved and the client retries", "kind", r.Kind, "err", err)
		return notSaved(r.Kind, err)
	}
	x.records.WithLabelValues(r.Kind).Inc()
	return nil
}

// notSaved is the refusal of a request whose record could not be stored.
func notSaved(kind string, err error) error {
	why := "the edge's store failed"
	if fsutil.IsNoSpace(err) {
		why = "the edge's data disk is full"
	}
	return refused(CodeNotSaved, "the %s record was not saved (%s: %v); nothing changed: send the same request again in a few seconds", kind, why, err)
}

// CodeNotSaved is the error code of a request refused because its record
// could not be stored; sending it again is always right.
const CodeNotSaved = "not_saved"

// inAudience: does a quiz for audience reach p?
func inAudience(p *participant, audience string) bool {
	return audience == "" || p.grant.Role == session.RoleMaster || p.grant.ClassroomID == audience
}

// seesResults: master, and the assistants of the audience.
func seesResults(p *participant, audience string) bool {
	return p.grant.Role == session.RoleMaster || p.grant.Role == session.RoleAssistant && inAudience(p, audience)
}

// questionFor hides the correct answer from terminals and observers: the
// room's screen shows the question, not its answer.
func questionFor(p *participant, q quiz.Question) quiz.Question {
	if p.grant.Role == session.RoleMaster || p.grant.Role == session.RoleAssistant {
		return q
	}
	q.Correct, q.Answer, q.Tolerance = nil, nil, 0
	return q
}

func (x *interaction) quiz(sessionID, id string) *liveQuiz {
	x.mu.Lock()
	defer x.mu.Unlock()
	if s := x.bySession[sessionID]; s != nil {
		return s.quizzes[id]
	}
	return nil
}

// class resolves (once per session and classroom, unless a group is named
// again) the roster of a classroom.
func (x *interaction) class(sessionID, cid, group string, force bool) (*attendance.Class, error) {
	x.mu.Lock()
	if cl := x.sessionLocked(sessionID).classes[cid]; cl != nil && !force {
		x.mu.Unlock()
		return cl, nil
	}
	x.mu.Unlock()
	if x.roster == nil {
		return nil, refused("no_roster", "this edge keeps no roster")
	}
	c, err := x.roster.Class(cid, group, time.Now())
	switch {
	case errors.Is(err, attendance.ErrNoRoster):
		return nil, refused("no_roster", "%v", err)
	case errors.Is(err, attendance.ErrNoGroup):
		return nil, refused("no_group", "%v", err)
	case err != nil:
		return nil, err
	}
	x.mu.Lock()
	x.sessionLocked(sessionID).classes[cid] = &c
	x.mu.Unlock()
	return &c, nil
}

func (x *interaction) marksOf(sessionID, cid string) map[string]string {
	x.mu.Lock()
	defer x.mu.Unlock()
	m := maps.Clone(x.sessionLocked(sessionID).marks[cid])
	if m == nil {
		m = map[string]string{}
	}
	return m
}

// changed schedules the quiz's results: at once if none went out in the
// last resultsEvery, or if this answer completed the set of classrooms
// (the teacher is waiting for exactly that picture), else at the end of the
// interval.
func (x *interaction) changed(lq *liveQuiz) {
	lq.mu.Lock()
	done := lq.everyRoom
	lq.mu.Unlock()
	complete := !done && x.everyRoomAnswered(lq) // once per quiz, then the throttle rules
	lq.mu.Lock()
	if complete && !lq.everyRoom {
		lq.everyRoom = true
		lq.mu.Unlock()
		x.flush(lq)
		return
	}
	defer lq.mu.Unlock()
	if lq.pending {
		return
	}
	lq.pending = true
	wait := resultsEvery - time.Since(lq.last)
	if wait < 0 {
		wait = 0
	}
	time.AfterFunc(wait, func() { x.flush(lq) })
}

// everyRoomAnswered reports whether each classroom the quiz went to has at
// least one counted answer.
func (x *interaction) everyRoomAnswered(lq *liveQuiz) bool {
	rooms := []string{lq.audience}
	if lq.audience == "" {
		s, err := x.sessions.Get(lq.session)
		if err != nil || len(s.Classrooms) == 0 {
			return false
		}
		rooms = s.Classrooms
	}
	answered := lq.tally.Results().Classrooms
	for _, c := range rooms {
		if answered[c] == nil {
			return false
		}
	}
	return true
}

// flush sends the quiz's results to the master and the audience's
// assistants and, once the teacher revealed them, to the audience's big
// screens (the class's results only: counts per option and accuracy).
func (x *interaction) flush(lq *liveQuiz) {
	lq.mu.Lock()
	lq.pending = false
	lq.last = time.Now()
	revealed := lq.revealed
	lq.mu.Unlock()
	r := QuizResults{Header: ctlwire.New(TypeQuizResults), SessionID: lq.session, Results: lq.tally.Results()}
	for _, o := range x.control.participantsOf(lq.session) {
		if seesResults(o, lq.audience) || revealed && o.grant.Role == session.RoleTerminal && inAudience(o, lq.audience) {
			o.conn.Send(r)
		}
	}
}

// closeQuiz stops counting answers, tells the audience and sends the final
// results.
func (x *interaction) closeQuiz(lq *liveQuiz) {
	lq.mu.Lock()
	if lq.timer != nil {
		lq.timer.Stop()
	}
	lq.mu.Unlock()
	if !lq.tally.Close() {
		return
	}
	id := lq.tally.Question().ID
	for _, o := range x.control.participantsOf(lq.session) {
		if inAudience(o, lq.audience) {
			o.conn.Send(QuizClosed{Header: ctlwire.New(TypeQuizClosed), QuizID: id})
		}
	}
	x.flush(lq)
}

// recordJoin stores a classroom's join (an attendance record) before the
// join is acknowledged.
func (x *interaction) recordJoin(p *participant) error {
	g := p.grant
	if g.Role != session.RoleTerminal && g.Role != session.RoleAssistant {
		return nil
	}
	return x.record(p, learning.Record{Kind: learning.KindAttendanceJoin, Session: g.SessionID, Classroom: g.ClassroomID},
		map[string]any{"role": string(g.Role), "participant": p.id, "name": p.nameSnapshot()})
}

// joined: a participant (re)joining sees the open quizzes and, if a
// teacher, their results and the raised hands.
func (x *interaction) joined(p *participant) {
	g := p.grant
	x.mu.Lock()
	var open []*liveQuiz
	var hands []string
	if s := x.bySession[g.SessionID]; s != nil {
		for _, id := range s.order {
			open = append(open, s.quizzes[id])
		}
		hands = slices.Clone(s.hands)
	}
	x.mu.Unlock()
	if g.Role == session.RoleMaster && hands != nil {
		p.conn.Send(Hands{Header: ctlwire.New(TypeHands), Order: hands})
	}
	for _, lq := range open {
		r := lq.tally.Results()
		if r.Open && inAudience(p, lq.audience) {
			p.conn.Send(QuizOut{Header: ctlwire.New(TypeQuiz), SessionID: g.SessionID, Question: questionFor(p, lq.tally.Question()), Classroom: lq.audience, Open: true})
		}
		if seesResults(p, lq.audience) {
			p.conn.Send(QuizResults{Header: ctlwire.New(TypeQuizResults), SessionID: g.SessionID, Results: r})
		}
	}
}

// left: a classroom leaving (or vanishing: the edge noticed its connection
// end) is an attendance record, stored before a leave is acknowledged.
func (x *interaction) left(p *participant, why string) error {
	g := p.grant
	if g.Role != session.RoleTerminal && g.Role != session.RoleAssistant {
		return nil
	}
	return x.record(p, learning.Record{Kind: learning.KindAttendanceLeave, Session: g.SessionID, Classroom: g.ClassroomID},
		map[string]any{"role": string(g.Role), "participant": p.id, "reason": why})
}

// handChanged keeps the order hands went up in and sends it to the master.
func (x *interaction) handChanged(sessionID, cid string, raised bool) {
	x.mu.Lock()
	s := x.sessionLocked(sessionID)
	s.hands = slices.DeleteFunc(s.hands, func(h string) bool { return h == cid })
	if raised {
		s.hands = append(s.hands, cid)
	}
	order := slices.Clone(s.hands)
	x.mu.Unlock()
	for _, o := range x.control.participantsOf(sessionID) {
		if o.grant.Role == session.RoleMaster {
			o.conn.Send(Hands{Header: ctlwire.New(TypeHands), Order: order})
		}
	}
}

// logEvent stores a session-log record (hands, stage, mute) before the
// change is made and acknowledged: a change the city would never hear of
// is refused (not_saved) and sent again.
func (x *interaction) logEvent(p *participant, event, classroomID string, data map[string]any) error {
	data["event"], data["by"] = event, string(p.grant.Role)
	return x.record(p, learning.Record{Kind: learning.KindSessionLog, Session: p.grant.SessionID, Classroom: classroomID}, data)
}

// sessionEnded closes the session's quizzes and forgets its state (the
// records stay in the store).
func (x *interaction) sessionEnded(id string) {
	if x.store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
		if _, err := x.store.Add(ctx, learning.Record{Kind: learning.KindSessionLog, Session: id, Data: json.RawMessage(`{"event":"ended"}`)}); err != nil {
			x.recordErrors.Inc()
			x.log.Error("session log not stored", "session", id, "err", err)
		} else {
			x.records.WithLabelValues(learning.KindSessionLog).Inc()
		}
		cancel()
	}
	x.mu.Lock()
	s := x.bySession[id]
	delete(x.bySession, id)
	x.mu.Unlock()
	if s == nil {
		return
	}
	for _, lq := range s.quizzes {
		lq.mu.Lock()
		if lq.timer != nil {
			lq.timer.Stop()
		}
		lq.mu.Unlock()
		lq.tally.Close()
	}
}

// assistantToken returns (minting it once per session, classroom and
// person) the assistant token of a signed-in assistant; minted reports a
// new one.
func (x *interaction) assistantToken(m *session.Manager, sessionID, cid, staffID string) (tok string, minted bool, err error) {
	key := cid + "\x00" + staffID
	x.mu.Lock()
	s := x.sessionLocked(sessionID)
	if t, ok := s.assistants[key]; ok {
		x.mu.Unlock()
		return t, false, nil
	}
	x.mu.Unlock()
	tok, err = m.Issue(sessionID, session.RoleAssistant, cid)
	if err != nil {
		return "", false, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if s.assistants == nil {
		s.assistants = map[string]string{}
	}
	if t, ok := s.assistants[key]; ok {
		return t, false, nil // another request minted one meanwhile; the spare expires with the session
	}
	s.assistants[key] = tok
	return tok, true, nil
}

// pageToken returns (minting it once per session and paired terminal)
// the terminal token a paired classroom page uses. It is kept in memory only,
// like the sessions. The big screen gets no assistant token: assistants
// get their own (assistantToken).
func (x *interaction) pageToken(m *session.Manager, sessionID, cid, terminalID string) (string, error) {
	x.mu.Lock()
	s := x.sessionLocked(sessionID)
	if t, ok := s.pageTokens[terminalID]; ok {
		x.mu.Unlock()
		return t, nil
	}
	x.mu.Unlock()
	terminal, err := m.Issue(sessionID, session.RoleTerminal, cid)
	if err != nil {
		return "", err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	s = x.sessionLocked(sessionID)
	if s.pageTokens == nil {
		s.pageTokens = map[string]string{}
	}
	if t, ok := s.pageTokens[terminalID]; ok { // another poll won the race
		return t, nil
	}
	s.pageTokens[terminalID] = terminal
	return terminal, nil
}
