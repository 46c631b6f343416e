package classroom

// A class survives its edge: the live state of every session is written
// through to classroom/livestate (before the change is acknowledged), and
// Mount puts it back at start. What is kept, by document kind:
//
//	session  the session and its grants (classroom/session.Persisted)
//	class    stage, raised hands, muted classrooms (classDoc)
//	hands    the order hands went up in
//	quiz     one pushed quiz: question, audience, when, open (quizDoc)
//	answer   one counted answer of a quiz (quiz.Answer)
//	marks    the assistant's attendance marks of one classroom
//	present  a classroom role that is joined (presentDoc): after a restart
//	         its leave is recorded only if it does not come back within
//	         the reconnect grace
//	upstream the cascade's upstream (UpstreamRequest, with the other
//	         edge's token and TURN credentials: the pull needs them again)
//	code     a classroom's assistant code shown during the session (the
//	         screen shows it again, the assistant's page rejoins with it)
//
// Media are not state: publishers and subscribers reconnect by themselves
// (class.js, reconnect.js, classterm) and the edge's SFU starts empty.

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/campusedge/campusedge/classroom/livestate"
	"github.com/campusedge/campusedge/classroom/quiz"
	"github.com/campusedge/campusedge/classroom/session"
)

// Document kinds in the live-state store.
const (
	docSession  = "session"
	docClass    = "class"
	docHands    = "hands"
	docQuiz     = "quiz"
	docAnswer   = "answer"
	docMarks    = "marks"
	docPresent  = "present"
	docUpstream = "upstream"
	docCode     = "code"
)

// DefaultReconnectGrace is how long a classroom that vanished (its control
// connection closed, or the edge restarted) has to come back before its
// leave is recorded: a Wi-Fi blip or an edge restart (~2-5 s) is a
// reconnect, not a leave and a join.
const DefaultReconnectGrace = 20 * time.Second

// classDoc is the control state of a session.
type classDoc struct {
	Stage string   `json:"stage,omitempty"`
	Hands []string `json:"hands,omitempty"`
	Muted []string `json:"muted,omitempty"`
}

// quizDoc is one pushed quiz.
type quizDoc struct {
	Question quiz.Question `json:"question"`
	Audience string        `json:"audience,omitempty"`
	PushedAt time.Time     `json:"pushed_at"`
	Open     bool          `json:"open"`
	Seq      int           `json:"seq"` // push order in the session
}

// presentDoc is one joined classroom role.
type presentDoc struct {
	Participant string    `json:"participant"`
	Name        string    `json:"name,omitempty"`
	Since       time.Time `json:"since"`
}

// stateStore is what the live code writes through (livestate.Store); nil
// keeps everything in memory.
type stateStore interface {
	Put(sessionID, kind, name string, v any) error
	Delete(sessionID, kind, name string) error
	DeleteSession(sessionID string) error
}

// sessionPersister adapts the live-state store to session.Persister.
type sessionPersister struct{ st stateStore }

func (sp sessionPersister) Save(r session.Persisted) error {
	return sp.st.Put(r.Session.ID, docSession, "", r)
}
func (sp sessionPersister) Drop(id string) error { return sp.st.DeleteSession(id) }

func answerName(quizID, classroom, student string) string {
	return quizID + "\x1f" + classroom + "\x1f" + student
}

func presentName(role session.Role, classroom string) string {
	return string(role) + "\x1f" + classroom
}

// saveClass writes the control state of c; the caller holds no c.mu.
func (ctl *control) saveClass(c *class) error {
	if ctl.state == nil {
		return nil
	}
	c.mu.Lock()
	d := classDoc{Stage: c.stage, Hands: slices.Sorted(maps.Keys(c.hands)), Muted: slices.Sorted(maps.Keys(c.muted))}
	ended := c.ended
	c.mu.Unlock()
	if ended {
		return nil
	}
	if err := ctl.state.Put(c.id, docClass, "", d); err != nil {
		ctl.log.Error("class state not stored; the request is refused with not_saved", "session", c.id, "err", err)
		return notSaved("class state", err)
	}
	return nil
}

// put writes one document of x's sessions; a failure is logged and
// returned as a not_saved refusal.
func (x *interaction) put(sessionID, kind, name string, v any) error {
	if x.state == nil {
		return nil
	}
	if err := x.state.Put(sessionID, kind, name, v); err != nil {
		x.log.Error("live state not stored; the request is refused with not_saved", "session", sessionID, "kind", kind, "err", err)
		return notSaved(kind, err)
	}
	return nil
}

func (x *interaction) del(sessionID, kind, name string) {
	if x.state == nil {
		return
	}
	if err := x.state.Delete(sessionID, kind, name); err != nil {
		x.log.Warn("live state not removed", "session", sessionID, "kind", kind, "err", err)
	}
}

// restore puts back the live state saved before the edge stopped, then
// makes every later change durable. Sessions that ended, are too old or
// cannot be read are dropped from the store.
func (l *Live) restore(st *livestate.Store, grace time.Duration) error {
	all, err := st.Load()
	if err != nil {
		return fmt.Errorf("reading the live state: %w", err)
	}
	for id, docs := range all {
		ok, err := l.restoreSession(id, docs, grace)
		if err != nil {
			l.log.Warn("live state of a session could not be restored; dropping it", "session", id, "err", err)
		}
		if !ok {
			if err := st.DeleteSession(id); err != nil {
				l.log.Warn("live state of a finished session not removed", "session", id, "err", err)
			}
		}
	}
	l.Sessions.SetPersister(sessionPersister{st: st})
	return nil
}

// restoreSession puts back one session; false means it is not resumed.
func (l *Live) restoreSession(id string, docs livestate.Docs, grace time.Duration) (bool, error) {
	raw, ok := docs[docSession][""]
	if !ok {
		return false, errors.New("no session document (it ended while a change was written)")
	}
	var p session.Persisted
	if err := json.Unmarshal(raw, &p); err != nil {
		return false, fmt.Errorf("session document: %w", err)
	}
	if p.Session.ID != id {
		return false, fmt.Errorf("session document names %q", p.Session.ID)
	}
	if ok, err := l.Sessions.Restore(p); !ok || err != nil {
		return false, err
	}
	log := l.log.With("session", id)
	if raw, ok := docs[docClass][""]; ok {
		var d classDoc
		if err := json.Unmarshal(raw, &d); err != nil {
			log.Warn("stored class state unreadable; the class resumes without stage, hands and mutes", "err", err)
		} else {
			l.control.restoreClass(id, d)
			for _, m := range d.Muted {
				l.SFU.SetMuted(id, sourceOf(m), true)
			}
		}
	}
	l.interaction.restoreSession(id, docs, grace, log)
	if raw, ok := docs[docUpstream][""]; ok {
		var req UpstreamRequest
		if err := json.Unmarshal(raw, &req); err != nil || req.validate() != nil {
			log.Warn("stored cascade upstream unreadable; PUT it again", "err", err)
		} else {
			log.Info("cascade: pulling the lesson again after a restart", "url", req.URL)
			l.cascades.start(id, req)
			l.cascades.stageChanged(id, l.control.stageOf(id))
		}
	}
	log.Info("live session resumed after a restart", "title", p.Session.Title, "state", string(p.Session.State))
	return true, nil
}

func (ctl *control) restoreClass(id string, d classDoc) {
	c := ctl.classFor(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stage = d.Stage
	for _, h := range d.Hands {
		c.hands[h] = true
	}
	for _, m := range d.Muted {
		c.muted[m] = true
	}
}

// restoreSession puts back a session's quizzes (with their answers and
// remaining time), hand order and marks, and arms a reconnect grace for
// every classroom that was present.
func (x *interaction) restoreSession(id string, docs livestate.Docs, grace time.Duration, log *slog.Logger) {
	for cid, raw := range docs[docCode] {
		var code string
		if json.Unmarshal(raw, &code) == nil {
			x.codes.restore(id, cid, code)
		}
	}
	var quizzes []quizDoc
	for name, raw := range docs[docQuiz] {
		var d quizDoc
		if err := json.Unmarshal(raw, &d); err != nil || d.Question.ID != name {
			log.Warn("stored quiz unreadable; skipped", "quiz", name, "err", err)
			continue
		}
		quizzes = append(quizzes, d)
	}
	sort.Slice(quizzes, func(i, j int) bool { return quizzes[i].Seq < quizzes[j].Seq })
	answers := map[string][]quiz.Answer{}
	for _, raw := range docs[docAnswer] {
		var a quiz.Answer
		if json.Unmarshal(raw, &a) == nil {
			answers[a.QuizID] = append(answers[a.QuizID], a)
		}
	}
	x.mu.Lock()
	s := x.sessionLocked(id)
	if raw, ok := docs[docHands][""]; ok {
		_ = json.Unmarshal(raw, &s.hands)
	}
	for cid, raw := range docs[docMarks] {
		var m map[string]string
		if json.Unmarshal(raw, &m) == nil {
			s.marks[cid] = m
		}
	}
	var open []*liveQuiz
	for _, d := range quizzes {
		t, err := quiz.NewTally(d.Question)
		if err != nil {
			log.Warn("stored quiz invalid; skipped", "quiz", d.Question.ID, "err", err)
			continue
		}
		for _, a := range answers[d.Question.ID] {
			_, _, _ = t.Add(a) // an answer counted before is counted again; a bad one was never stored
		}
		if !d.Open {
			t.Close()
		}
		lq := &liveQuiz{session: id, tally: t, audience: d.Audience, pushedAt: d.PushedAt, seq: d.Seq}
		s.quizzes[d.Question.ID] = lq
		s.order = append(s.order, d.Question.ID)
		if d.Seq >= s.nextSeq {
			s.nextSeq = d.Seq + 1
		}
		if d.Open {
			open = append(open, lq)
		}
	}
	x.mu.Unlock()
	for _, lq := range open {
		if secs := lq.tally.Question().Seconds; secs > 0 {
			left := max(time.Until(lq.pushedAt.Add(time.Duration(secs)*time.Second)), 0)
			lq.mu.Lock()
			lq.timer = time.AfterFunc(left, func() { x.closeQuiz(lq) })
			lq.mu.Unlock()
		}
	}
	now := time.Now()
	for name, raw := range docs[docPresent] {
		var d presentDoc
		role, cid, ok := splitPresent(name)
		if !ok || json.Unmarshal(raw, &d) != nil {
			continue
		}
		// The edge was down: the room is given the grace from now to come
		// back before it is recorded as gone (at the time the edge noticed).
		x.armLeave(id, role, cid, d.Participant, "edge_restart", now, grace)
	}
}

func splitPresent(name string) (session.Role, string, bool) {
	for i := 0; i < len(name); i++ {
		if name[i] == 0x1f {
			return session.Role(name[:i]), name[i+1:], true
		}
	}
	return "", "", false
}
