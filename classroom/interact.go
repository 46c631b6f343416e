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
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/classroom/attendance"
	"github.com/campusedge/campusedge/classroom/learning"
	"github.com/campusedge/campusedge/classroom/quiz"
	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/edge/ctlwire"
)

// Interactive message types (protocol v1, additions to messages.go).
const (
	TypeQuiz        = "quiz"         // master/assistant → edge: push a question; edge → participants: the question
	TypeQuizAnswer  = "quiz_answer"  // terminal (for the room) / assistant (room or one student) → edge
	TypeQuizClose   = "quiz_close"   // master or the pushing assistant → edge
	TypeQuizResults = "quiz_results" // edge → master and assistants: live results (at most every resultsEvery)
	TypeQuizClosed  = "quiz_closed"  // edge → participants: the quiz no longer counts answers
	TypeRoster      = "roster"       // ask for (client) / the expected students with their marks (edge)
	TypeMark        = "mark"         // assistant (own classroom) / master → edge: present, late or absent
	TypeMarks       = "marks"        // edge → master and the classroom's assistant: marks after a change
	TypeHands       = "hands"        // edge → master: raised hands in the order they went up
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

// QuizPush pushes a question (client → edge).
type QuizPush struct {
	ctlwire.Header
	Question json.RawMessage `json:"question"`
}

// quizPushed is a QuizPush whose question passed quiz.DecodeQuestion.
type quizPushed struct{ q quiz.Question }

// QuizOut is a question as participants receive it. Terminals and observers
// get it without the correct answer.
type QuizOut struct {
	ctlwire.Header
	SessionID string        `json:"session_id"`
	Question  quiz.Question `json:"question"`
	// Classroom is the one classroom an assistant pushed it to; "" when the
	// master pushed it to every classroom.
	Classroom string `json:"classroom_id,omitempty"`
	Open      bool   `json:"open"`
}

// QuizAnswer answers a quiz: for the room, or (assistant) for one student.
type QuizAnswer struct {
	ctlwire.Header
	QuizID  string   `json:"quiz_id"`
	Student string   `json:"student_id,omitempty"`
	Choices []int    `json:"choices,omitempty"`
	Value   *float64 `json:"value,omitempty"`
}

// QuizClose closes a quiz.
type QuizClose struct {
	ctlwire.Header
	QuizID string `json:"quiz_id"`
}

// QuizClosed tells participants a quiz stopped counting answers.
type QuizClosed struct {
	ctlwire.Header
	QuizID string `json:"quiz_id"`
}

// QuizResults carries a quiz's live results.
type QuizResults struct {
	ctlwire.Header
	SessionID string       `json:"session_id"`
	Results   quiz.Results `json:"results"`
}

// RosterRequest asks for the classroom's expected students. Group chooses
// the group when the timetable does not say (a homeroom or teaching group).
type RosterRequest struct {
	ctlwire.Header
	Classroom string `json:"classroom_id,omitempty"`
	Group     string `json:"group,omitempty"`
}

// RosterOut is a classroom's roster with the marks so far.
type RosterOut struct {
	ctlwire.Header
	Classroom string `json:"classroom_id"`
	attendance.Class
	Marks map[string]string `json:"marks"`
}

// Mark marks one student.
type Mark struct {
	ctlwire.Header
	Classroom string `json:"classroom_id,omitempty"`
	Student   string `json:"student_id"`
	Status    string `json:"status"`
}

// Hands lists raised hands, first raised first. state.hands is sorted by
// id; this is the queue the teacher answers in.
type Hands struct {
	ctlwire.Header
	Order []string `json:"order"`
}

// Marks is a classroom's marks after a change.
type Marks struct {
	ctlwire.Header
	Classroom string            `json:"classroom_id"`
	Marks     map[string]string `json:"marks"`
}

// decodeInteract decodes the interactive message types; errUnknownType for
// anything else.
func decodeInteract(hdr ctlwire.Header, data []byte) (any, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ctlwire.ErrMalformed, fmt.Sprintf(format, a...))
	}
	switch hdr.Type {
	case TypeQuiz:
		var m QuizPush
		if err := ctlwire.DecodeBody(data, &m); err != nil {
			return nil, err
		}
		if len(m.Question) == 0 {
			return nil, bad("question is required")
		}
		q, err := quiz.DecodeQuestion(m.Question)
		if err != nil {
			return nil, bad("%v", err)
		}
		return &quizPushed{q: q}, nil
	case TypeQuizAnswer:
		var m QuizAnswer
		if err := ctlwire.DecodeBody(data, &m); err != nil {
			return nil, err
		}
		if m.QuizID == "" || len(m.QuizID) > quiz.MaxIDLen || len(m.Student) > quiz.MaxIDLen {
			return nil, bad("quiz_id (and student_id) must be 1-%d bytes", quiz.MaxIDLen)
		}
		if len(m.Choices) > quiz.MaxOptions {
			return nil, bad("at most %d choices", quiz.MaxOptions)
		}
		return &m, nil
	case TypeQuizClose:
		var m QuizClose
		if err := ctlwire.DecodeBody(data, &m); err != nil {
			return nil, err
		}
		if m.QuizID == "" || len(m.QuizID) > quiz.MaxIDLen {
			return nil, bad("quiz_id must be 1-%d bytes", quiz.MaxIDLen)
		}
		return &m, nil
	case TypeRoster:
		var m RosterRequest
		if err := ctlwire.DecodeBody(data, &m); err != nil {
			return nil, err
		}
		if len(m.Classroom) > 64 || len(m.Group) > 64 {
			return nil, bad("classroom_id and group are at most 64 bytes")
		}
		return &m, nil
	case TypeMark:
		var m Mark
		if err := ctlwire.DecodeBody(data, &m); err != nil {
			return nil, err
		}
		if len(m.Classroom) > 64 || m.Student == "" || len(m.Student) > 64 {
			return nil, bad("student_id must be 1-64 bytes, classroom_id at most 64")
		}
		if !attendance.ValidStatus(m.Status) {
			return nil, bad("status must be present, late or absent")
		}
		return &m, nil
	}
	return nil, fmt.Errorf("%w: message type %q is not part of live classes v%d", errUnknownType, hdr.Type, ctlwire.Version)
}

// interact holds the quizzes and attendance of every session.
type interact struct {
	l      *Live
	store  LearningStore      // nil: records are only logged
	roster *attendance.Source // nil: no roster on this edge

	records      *prometheus.CounterVec // stored learning records by kind
	recordErrors prometheus.Counter     // records that could not be stored

	mu       sync.Mutex
	sessions map[string]*sessionInteract
}

type sessionInteract struct {
	quizzes map[string]*liveQuiz
	order   []string                     // quiz ids in push order
	classes map[string]*attendance.Class // resolved roster by classroom
	marks   map[string]map[string]string // classroom → student → status
	// hands is the raise order; entries whose hand was lowered by going on
	// stage linger until raised again (clients keep those in state.hands).
	hands []string
	// pageTokens are the terminal and assistant tokens minted for paired
	// classroom pages, by classroom.
	pageTokens map[string][2]string
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
	// everyRoom is set once every classroom of the audience has answered;
	// that moment's results go out at once, not at the end of the interval.
	everyRoom bool
}

func newInteract(l *Live, store LearningStore, roster *attendance.Source) *interact {
	return &interact{l: l, store: store, roster: roster, sessions: map[string]*sessionInteract{},
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "campusedge_learning_records_total",
			Help: "Learning records (quiz answers, attendance, session log) stored and queued for the city, by kind."}, []string{"kind"}),
		recordErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "campusedge_learning_record_errors_total",
			Help: "Learning records that could not be stored (see the log)."}),
	}
}

// sessionLocked returns the interactive state of session id, made on
// first use. A request that arrives as its session ends (or after) gets a
// detached state that is dropped with the request: kept in x.sessions it
// would never be removed, since sessionEnded has run. End marks the
// session ended before sessionEnded takes x.mu, so checking here under
// x.mu leaves no window.
func (x *interact) sessionLocked(id string) *sessionInteract {
	s := x.sessions[id]
	if s == nil {
		s = &sessionInteract{quizzes: map[string]*liveQuiz{}, classes: map[string]*attendance.Class{}, marks: map[string]map[string]string{}}
		if st, err := x.l.Sessions.Get(id); err != nil || st.State == session.StateEnded {
			return s
		}
		x.sessions[id] = s
	}
	return s
}

// counts returns the sessions with interactive state and the quizzes they
// hold, for the gauges.
func (x *interact) counts() (sessions, quizzes int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, s := range x.sessions {
		quizzes += len(s.quizzes)
	}
	return len(x.sessions), quizzes
}

// record stores a learning record; a failure is logged (the class goes on)
// and returned.
func (x *interact) record(p *participant, r learning.Record, data any) error {
	if x.store == nil {
		return nil
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
		p.log.Error("learning record not stored", "kind", r.Kind, "err", err)
		return err
	}
	x.records.WithLabelValues(r.Kind).Inc()
	return nil
}

// participants returns the joined participants of a session.
func (l *Live) participantsOf(sessionID string) []*participant {
	l.mu.Lock()
	c := l.classes[sessionID]
	l.mu.Unlock()
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

// doInteract runs one interactive request with p.mu held.
func (p *participant) doInteract(hdr ctlwire.Header, msg any) error {
	x, g := p.l.x, p.grant
	switch m := msg.(type) {
	case *quizPushed:
		audience := ""
		if g.Role == session.RoleAssistant {
			audience = g.ClassroomID
		}
		t, err := quiz.NewTally(m.q)
		if err != nil {
			return refused("bad_message", "%v", err)
		}
		lq := &liveQuiz{session: g.SessionID, tally: t, audience: audience}
		x.mu.Lock()
		s := x.sessionLocked(g.SessionID)
		switch {
		case s.quizzes[m.q.ID] != nil:
			x.mu.Unlock()
			return refused("already_exists", "quiz %q was pushed already in this session; give the new one another id", m.q.ID)
		case len(s.quizzes) >= maxQuizzesPerSession:
			x.mu.Unlock()
			return refused("limit", "a session holds at most %d quizzes", maxQuizzesPerSession)
		}
		s.quizzes[m.q.ID] = lq
		s.order = append(s.order, m.q.ID)
		x.mu.Unlock()
		_ = x.record(p, learning.Record{Kind: learning.KindQuizQuestion, Session: g.SessionID, Classroom: audience},
			map[string]any{"question": m.q, "by": string(g.Role)})
		p.log.Info("quiz pushed", "quiz", m.q.ID, "kind", m.q.Kind, "audience", audience)
		p.ack(hdr)
		for _, o := range p.l.participantsOf(g.SessionID) {
			if inAudience(o, audience) {
				o.conn.Send(QuizOut{Header: ctlwire.New(TypeQuiz), SessionID: g.SessionID, Question: questionFor(o, m.q), Classroom: audience, Open: true})
			}
		}
		x.flush(lq)
		if m.q.Seconds > 0 {
			lq.mu.Lock()
			lq.timer = time.AfterFunc(time.Duration(m.q.Seconds)*time.Second, func() { x.closeQuiz(lq) })
			lq.mu.Unlock()
		}
	case *QuizAnswer:
		if g.Role == session.RoleTerminal && m.Student != "" {
			return refused("forbidden", "a classroom terminal answers for the room; per-student answers come from the assistant teacher")
		}
		lq := x.quiz(g.SessionID, m.QuizID)
		if lq == nil {
			return refused("not_found", "no quiz %q in this session", m.QuizID)
		}
		if !inAudience(p, lq.audience) {
			return refused("forbidden", "quiz %q was pushed to another classroom", m.QuizID)
		}
		if m.Student != "" && x.roster != nil {
			// With a roster for the room, a per-student answer must name one
			// of its students; without one the id is taken as given.
			if cl, err := x.class(g.SessionID, g.ClassroomID, "", false); err == nil && !slices.ContainsFunc(cl.Students, func(s attendance.Student) bool { return s.ID == m.Student }) {
				return refused("not_found", "student %q is not on the roster of group %s", m.Student, cl.Group)
			}
		}
		a := quiz.Answer{QuizID: m.QuizID, Classroom: g.ClassroomID, Student: m.Student, Choices: m.Choices, Value: m.Value}
		correct, replaced, err := lq.tally.Add(a)
		late := errors.Is(err, quiz.ErrClosed)
		if err != nil && !late {
			return refused("invalid_answer", "%v", err)
		}
		if !late {
			x.changed(lq)
		}
		data := map[string]any{"quiz_id": m.QuizID, "choices": m.Choices, "value": m.Value, "correct": correct,
			"late": late, "replaced": replaced, "by": string(g.Role), "participant": p.id}
		if err := x.record(p, learning.Record{Kind: learning.KindQuizAnswer, Session: g.SessionID, Classroom: g.ClassroomID, Student: m.Student}, data); err != nil {
			return refused("internal", "the answer could not be stored: %v", err)
		}
		if late {
			return refused("quiz_closed", "quiz %q is closed: the answer was recorded as late and does not count", m.QuizID)
		}
		p.ack(hdr)
	case *QuizClose:
		lq := x.quiz(g.SessionID, m.QuizID)
		if lq == nil {
			return refused("not_found", "no quiz %q in this session", m.QuizID)
		}
		if g.Role == session.RoleAssistant && lq.audience != g.ClassroomID {
			return refused("forbidden", "an assistant teacher closes only the quizzes they pushed")
		}
		p.ack(hdr)
		x.closeQuiz(lq)
	case *RosterRequest:
		cid, err := p.targetClassroom(m.Classroom)
		if err != nil {
			return err
		}
		cl, err := x.class(g.SessionID, cid, m.Group, m.Group != "")
		if err != nil {
			return err
		}
		h := ctlwire.New(TypeRoster)
		h.ID = hdr.ID
		p.conn.Send(RosterOut{Header: h, Classroom: cid, Class: *cl, Marks: x.marksOf(g.SessionID, cid)})
	case *Mark:
		cid, err := p.targetClassroom(m.Classroom)
		if err != nil {
			return err
		}
		cl, err := x.class(g.SessionID, cid, "", false)
		if err != nil {
			return err
		}
		var st *attendance.Student
		for i := range cl.Students {
			if cl.Students[i].ID == m.Student {
				st = &cl.Students[i]
			}
		}
		if st == nil {
			return refused("not_found", "student %q is not on the roster of group %s", m.Student, cl.Group)
		}
		if err := x.record(p, learning.Record{Kind: learning.KindAttendanceMark, Session: g.SessionID, Classroom: cid, Student: m.Student},
			map[string]any{"status": m.Status, "group": cl.Group, "by": string(g.Role)}); err != nil {
			return refused("internal", "the mark could not be stored: %v", err)
		}
		x.mu.Lock()
		s := x.sessionLocked(g.SessionID)
		if s.marks[cid] == nil {
			s.marks[cid] = map[string]string{}
		}
		s.marks[cid][m.Student] = m.Status
		marks := maps.Clone(s.marks[cid])
		x.mu.Unlock()
		p.ack(hdr)
		for _, o := range p.l.participantsOf(g.SessionID) {
			if o.grant.Role == session.RoleMaster || o.grant.Role == session.RoleAssistant && o.grant.ClassroomID == cid {
				o.conn.Send(Marks{Header: ctlwire.New(TypeMarks), Classroom: cid, Marks: marks})
			}
		}
	default:
		return fmt.Errorf("no handler for %T", msg)
	}
	return nil
}

// targetClassroom: the master names a classroom; others act on their own.
func (p *participant) targetClassroom(named string) (string, error) {
	g := p.grant
	if g.Role == session.RoleMaster {
		if named == "" {
			return "", refused("bad_message", "the master teacher names the classroom (classroom_id)")
		}
		if !p.l.inSession(g.SessionID, named) {
			return "", refused("not_found", "classroom %q is not part of this session", named)
		}
		return named, nil
	}
	if named != "" && named != g.ClassroomID {
		return "", refused("forbidden", "%s acts only for its own classroom", roleHint[g.Role])
	}
	return g.ClassroomID, nil
}

func (x *interact) quiz(sessionID, id string) *liveQuiz {
	x.mu.Lock()
	defer x.mu.Unlock()
	if s := x.sessions[sessionID]; s != nil {
		return s.quizzes[id]
	}
	return nil
}

// class resolves (once per session and classroom, unless a group is named
// again) the roster of a classroom.
func (x *interact) class(sessionID, cid, group string, force bool) (*attendance.Class, error) {
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

func (x *interact) marksOf(sessionID, cid string) map[string]string {
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
func (x *interact) changed(lq *liveQuiz) {
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
func (x *interact) everyRoomAnswered(lq *liveQuiz) bool {
	rooms := []string{lq.audience}
	if lq.audience == "" {
		s, err := x.l.Sessions.Get(lq.session)
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
// assistants.
func (x *interact) flush(lq *liveQuiz) {
	lq.mu.Lock()
	lq.pending = false
	lq.last = time.Now()
	lq.mu.Unlock()
	r := QuizResults{Header: ctlwire.New(TypeQuizResults), SessionID: lq.session, Results: lq.tally.Results()}
	for _, o := range x.l.participantsOf(lq.session) {
		if seesResults(o, lq.audience) {
			o.conn.Send(r)
		}
	}
}

// closeQuiz stops counting answers, tells the audience and sends the final
// results.
func (x *interact) closeQuiz(lq *liveQuiz) {
	lq.mu.Lock()
	if lq.timer != nil {
		lq.timer.Stop()
	}
	lq.mu.Unlock()
	if !lq.tally.Close() {
		return
	}
	id := lq.tally.Question().ID
	for _, o := range x.l.participantsOf(lq.session) {
		if inAudience(o, lq.audience) {
			o.conn.Send(QuizClosed{Header: ctlwire.New(TypeQuizClosed), QuizID: id})
		}
	}
	x.flush(lq)
}

// joined: a classroom's join is an attendance record; a participant
// (re)joining sees the open quizzes and, if a teacher, their results.
func (x *interact) joined(p *participant) {
	g := p.grant
	if g.Role == session.RoleTerminal || g.Role == session.RoleAssistant {
		_ = x.record(p, learning.Record{Kind: learning.KindAttendanceJoin, Session: g.SessionID, Classroom: g.ClassroomID},
			map[string]any{"role": string(g.Role), "participant": p.id, "name": p.nameSnapshot()})
	}
	x.mu.Lock()
	var open []*liveQuiz
	var hands []string
	if s := x.sessions[g.SessionID]; s != nil {
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
// end) is an attendance record.
func (x *interact) left(p *participant, why string) {
	g := p.grant
	if g.Role == session.RoleTerminal || g.Role == session.RoleAssistant {
		_ = x.record(p, learning.Record{Kind: learning.KindAttendanceLeave, Session: g.SessionID, Classroom: g.ClassroomID},
			map[string]any{"role": string(g.Role), "participant": p.id, "reason": why})
	}
}

// handChanged keeps the order hands went up in and sends it to the master.
func (x *interact) handChanged(sessionID, cid string, raised bool) {
	x.mu.Lock()
	s := x.sessionLocked(sessionID)
	s.hands = slices.DeleteFunc(s.hands, func(h string) bool { return h == cid })
	if raised {
		s.hands = append(s.hands, cid)
	}
	order := slices.Clone(s.hands)
	x.mu.Unlock()
	for _, o := range x.l.participantsOf(sessionID) {
		if o.grant.Role == session.RoleMaster {
			o.conn.Send(Hands{Header: ctlwire.New(TypeHands), Order: order})
		}
	}
}

// logEvent stores a session-log record (hands, stage, mute) after the
// change went out, so the class never waits on the disk for it.
func (x *interact) logEvent(p *participant, event, classroomID string, data map[string]any) {
	data["event"], data["by"] = event, string(p.grant.Role)
	_ = x.record(p, learning.Record{Kind: learning.KindSessionLog, Session: p.grant.SessionID, Classroom: classroomID}, data)
}

// sessionEnded closes the session's quizzes and forgets its state (the
// records stay in the store).
func (x *interact) sessionEnded(id string) {
	if x.store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
		if _, err := x.store.Add(ctx, learning.Record{Kind: learning.KindSessionLog, Session: id, Data: json.RawMessage(`{"event":"ended"}`)}); err != nil {
			x.recordErrors.Inc()
			x.l.log.Error("session log not stored", "session", id, "err", err)
		} else {
			x.records.WithLabelValues(learning.KindSessionLog).Inc()
		}
		cancel()
	}
	x.mu.Lock()
	s := x.sessions[id]
	delete(x.sessions, id)
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

// pageTokens returns (minting them once per session and classroom) the
// terminal and assistant tokens a paired classroom page uses. They are
// kept in memory only, like the sessions.
func (x *interact) pageTokens(m *session.Manager, sessionID, cid string) (terminal, assistant string, err error) {
	x.mu.Lock()
	s := x.sessionLocked(sessionID)
	if s.pageTokens == nil {
		s.pageTokens = map[string][2]string{}
	}
	if t, ok := s.pageTokens[cid]; ok {
		x.mu.Unlock()
		return t[0], t[1], nil
	}
	x.mu.Unlock()
	terminal, err = m.Issue(sessionID, session.RoleTerminal, cid)
	if err != nil {
		return "", "", err
	}
	assistant, err = m.Issue(sessionID, session.RoleAssistant, cid)
	if err != nil {
		return "", "", err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	s = x.sessionLocked(sessionID)
	if t, ok := s.pageTokens[cid]; ok { // another poll won the race
		return t[0], t[1], nil
	}
	s.pageTokens[cid] = [2]string{terminal, assistant}
	return terminal, assistant, nil
}
