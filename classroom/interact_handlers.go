package classroom

// The handlers of the quiz and attendance messages (registry.go routes
// them here). Each runs with the sender's p.mu held.

import (
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/campusedge/campusedge/classroom/attendance"
	"github.com/campusedge/campusedge/classroom/learning"
	"github.com/campusedge/campusedge/classroom/quiz"
	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/edge/ctlwire"
)

// pushQuiz: a teacher pushes a question — the master's to every
// classroom, an assistant's to their own.
func (x *interaction) pushQuiz(p *participant, hdr ctlwire.Header, m *quizPushed) error {
	g := p.grant
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
	// Stored before anyone sees it; if it cannot be, the quiz is withdrawn
	// (its id free again) and the teacher's page pushes it again.
	if err := x.record(p, learning.Record{Kind: learning.KindQuizQuestion, Session: g.SessionID, Classroom: audience},
		map[string]any{"question": m.q, "by": string(g.Role)}); err != nil {
		x.mu.Lock()
		if s.quizzes[m.q.ID] == lq {
			delete(s.quizzes, m.q.ID)
			s.order = slices.DeleteFunc(s.order, func(id string) bool { return id == m.q.ID })
		}
		x.mu.Unlock()
		return err
	}
	p.log.Info("quiz pushed", "quiz", m.q.ID, "kind", m.q.Kind, "audience", audience)
	p.ack(hdr)
	for _, o := range x.control.participantsOf(g.SessionID) {
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
	return nil
}

// answerQuiz: a terminal answers for its room, an assistant for the room
// or one student. An answer after the close is stored as late and refused.
func (x *interaction) answerQuiz(p *participant, hdr ctlwire.Header, m *QuizAnswer) error {
	g := p.grant
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
	data := map[string]any{"quiz_id": m.QuizID, "choices": m.Choices, "value": m.Value, "correct": correct,
		"late": late, "replaced": replaced, "by": string(g.Role), "participant": p.id}
	// An answer not stored is refused (not_saved): the tally has counted it,
	// and the same answer sent again replaces it there and is stored; the
	// teacher's results wait for the stored one.
	if err := x.record(p, learning.Record{Kind: learning.KindQuizAnswer, Session: g.SessionID, Classroom: g.ClassroomID, Student: m.Student}, data); err != nil {
		return err
	}
	if !late {
		x.changed(lq)
	}
	if late {
		return refused("quiz_closed", "quiz %q is closed: the answer was recorded as late and does not count", m.QuizID)
	}
	p.ack(hdr)
	return nil
}

// closeQuizRequest: the master closes any quiz, an assistant the ones
// they pushed.
func (x *interaction) closeQuizRequest(p *participant, hdr ctlwire.Header, m *QuizClose) error {
	g := p.grant
	lq := x.quiz(g.SessionID, m.QuizID)
	if lq == nil {
		return refused("not_found", "no quiz %q in this session", m.QuizID)
	}
	if g.Role == session.RoleAssistant && lq.audience != g.ClassroomID {
		return refused("forbidden", "an assistant teacher closes only the quizzes they pushed")
	}
	p.ack(hdr)
	x.closeQuiz(lq)
	return nil
}

// revealQuiz: the teacher shows the class's results of a quiz on the big
// screens (they see none until then); later updates follow.
func (x *interaction) revealQuiz(p *participant, hdr ctlwire.Header, m *QuizReveal) error {
	g := p.grant
	lq := x.quiz(g.SessionID, m.QuizID)
	if lq == nil {
		return refused("not_found", "no quiz %q in this session", m.QuizID)
	}
	if g.Role == session.RoleAssistant && lq.audience != g.ClassroomID {
		return refused("forbidden", "an assistant teacher reveals only the quizzes they pushed")
	}
	lq.mu.Lock()
	lq.revealed = true
	lq.mu.Unlock()
	p.ack(hdr)
	x.flush(lq)
	return nil
}

// sendRoster answers a roster request with the classroom's students and
// the marks so far.
func (x *interaction) sendRoster(p *participant, hdr ctlwire.Header, m *RosterRequest) error {
	g := p.grant
	cid, err := p.targetClassroom(m.Classroom)
	if err != nil {
		return err
	}
	// Only a teacher chooses which group sits in the room: a terminal that
	// could name one would read any group's roster and swap the class whose
	// attendance the teacher marks.
	if m.Group != "" && g.Role != session.RoleMaster && g.Role != session.RoleAssistant {
		return refused("forbidden", "%s does not choose the group; the timetable or a teacher does", roleHint[g.Role])
	}
	cl, err := x.class(g.SessionID, cid, m.Group, m.Group != "")
	if err != nil {
		return err
	}
	h := ctlwire.New(TypeRoster)
	h.ID = hdr.ID
	p.conn.Send(RosterOut{Header: h, Classroom: cid, Class: *cl, Marks: x.marksOf(g.SessionID, cid)})
	return nil
}

// mark stores one student's mark and sends the classroom's marks to the
// master and that classroom's assistant.
func (x *interaction) mark(p *participant, hdr ctlwire.Header, m *Mark) error {
	g := p.grant
	cid, err := p.targetClassroom(m.Classroom)
	if err != nil {
		return err
	}
	cl, err := x.class(g.SessionID, cid, "", false)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(cl.Students, func(s attendance.Student) bool { return s.ID == m.Student }) {
		return refused("not_found", "student %q is not on the roster of group %s", m.Student, cl.Group)
	}
	if err := x.record(p, learning.Record{Kind: learning.KindAttendanceMark, Session: g.SessionID, Classroom: cid, Student: m.Student},
		map[string]any{"status": m.Status, "group": cl.Group, "by": string(g.Role)}); err != nil {
		return err
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
	for _, o := range x.control.participantsOf(g.SessionID) {
		if o.grant.Role == session.RoleMaster || o.grant.Role == session.RoleAssistant && o.grant.ClassroomID == cid {
			o.conn.Send(Marks{Header: ctlwire.New(TypeMarks), Classroom: cid, Marks: marks})
		}
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
		if !p.ctl.inSession(g.SessionID, named) {
			return "", refused("not_found", "classroom %q is not part of this session", named)
		}
		return named, nil
	}
	if named != "" && named != g.ClassroomID {
		return "", refused("forbidden", "%s acts only for its own classroom", roleHint[g.Role])
	}
	return g.ClassroomID, nil
}
