package classroom

import (
	"encoding/json"

	"github.com/campusedge/campusedge/classroom/attendance"
	"github.com/campusedge/campusedge/classroom/quiz"
	"github.com/campusedge/campusedge/edge/ctlwire"
)

// Interactive message types (protocol v1, additions to messages.go).
const (
	TypeQuiz        = "quiz"         // master/assistant → edge: push a question; edge → participants: the question
	TypeQuizAnswer  = "quiz_answer"  // terminal (for the room) / assistant (room or one student) → edge
	TypeQuizClose   = "quiz_close"   // master or the pushing assistant → edge
	TypeQuizReveal  = "quiz_reveal"  // master or the pushing assistant → edge: show the class's results on the big screens
	TypeQuizResults = "quiz_results" // edge → master and assistants: live results (at most every resultsEvery)
	TypeQuizClosed  = "quiz_closed"  // edge → participants: the quiz no longer counts answers
	TypeRoster      = "roster"       // ask for (client) / the expected students with their marks (edge)
	TypeMark        = "mark"         // assistant (own classroom) / master → edge: present, late or absent
	TypeMarks       = "marks"        // edge → master and the classroom's assistant: marks after a change
	TypeHands       = "hands"        // edge → master: raised hands in the order they went up
)

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

// QuizReveal asks the edge to show a quiz's results (the class's, never
// per student) to its classrooms' big screens from now on.
type QuizReveal struct {
	ctlwire.Header
	QuizID string `json:"quiz_id"`
}

func (m *QuizReveal) check() error { return (&QuizClose{QuizID: m.QuizID}).check() }

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

// decodeQuizPush decodes a quiz push and its question: the handler gets the
// question as quiz.DecodeQuestion made it.
func decodeQuizPush(data []byte) (*quizPushed, error) {
	var m QuizPush
	if err := ctlwire.DecodeBody(data, &m); err != nil {
		return nil, err
	}
	if len(m.Question) == 0 {
		return nil, malformed("question is required")
	}
	q, err := quiz.DecodeQuestion(m.Question)
	if err != nil {
		return nil, malformed("%v", err)
	}
	return &quizPushed{q: q}, nil
}

func (m *QuizAnswer) check() error {
	if m.QuizID == "" || len(m.QuizID) > quiz.MaxIDLen || len(m.Student) > quiz.MaxIDLen {
		return malformed("quiz_id (and student_id) must be 1-%d bytes", quiz.MaxIDLen)
	}
	if len(m.Choices) > quiz.MaxOptions {
		return malformed("at most %d choices", quiz.MaxOptions)
	}
	return nil
}

func (m *QuizClose) check() error {
	if m.QuizID == "" || len(m.QuizID) > quiz.MaxIDLen {
		return malformed("quiz_id must be 1-%d bytes", quiz.MaxIDLen)
	}
	return nil
}

func (m *RosterRequest) check() error {
	if len(m.Classroom) > 64 || len(m.Group) > 64 {
		return malformed("classroom_id and group are at most 64 bytes")
	}
	return nil
}

func (m *Mark) check() error {
	if len(m.Classroom) > 64 || m.Student == "" || len(m.Student) > 64 {
		return malformed("student_id must be 1-64 bytes, classroom_id at most 64")
	}
	if !attendance.ValidStatus(m.Status) {
		return malformed("status must be present, late or absent")
	}
	return nil
}
