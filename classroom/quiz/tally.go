package quiz

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
)

// maxValues bounds the distinct numeric values a tally lists; the rest are
// counted as "other" so that forty rooms of guesses cannot grow it without
// bound.
const maxValues = 20

// Tally keeps the live results of one quiz. It is safe for concurrent use:
// answers from every classroom's connection arrive at once.
type Tally struct {
	mu      sync.Mutex
	q       Question
	open    bool
	answers map[Respondent]entry
	// Running counts, updated per answer, so Results costs O(options +
	// classrooms) however many students answered.
	options []int          // per option, choice questions
	values  map[string]int // numeric values, at most maxValues keys
	other   int            // numeric values beyond maxValues
	correct int
	rooms   map[string]*RoomResult
}

type entry struct {
	a       Answer
	correct bool
	key     string // numeric: the values key it counts under ("" = other)
}

// RoomResult is one classroom's share of the results.
type RoomResult struct {
	Answered int `json:"answered"`
	Correct  int `json:"correct"`
}

// Results is what the teacher page shows.
type Results struct {
	QuizID   string  `json:"quiz_id"`
	Kind     Kind    `json:"kind"`
	Open     bool    `json:"open"`
	Answered int     `json:"answered"`
	Correct  int     `json:"correct"`
	Accuracy float64 `json:"accuracy"` // Correct / Answered; 0 with no answers
	// Options counts each option's choosers (choice questions).
	Options []int `json:"options,omitempty"`
	// Values counts numeric answers by value; Other counts the values past
	// the first 20 distinct ones.
	Values     map[string]int         `json:"values,omitempty"`
	Other      int                    `json:"other,omitempty"`
	Classrooms map[string]*RoomResult `json:"classrooms"`
}

// NewTally opens a quiz for q, which must be valid.
func NewTally(q Question) (*Tally, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	t := &Tally{q: q, open: true, answers: map[Respondent]entry{}, rooms: map[string]*RoomResult{}}
	if q.Kind == Numeric {
		t.values = map[string]int{}
	} else {
		t.options = make([]int, len(q.Options))
	}
	return t, nil
}

// Question returns the quiz's question.
func (t *Tally) Question() Question { return t.q }

// Close ends the quiz: later answers get ErrClosed. It reports whether the
// quiz was open.
func (t *Tally) Close() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := t.open
	t.open = false
	return was
}

// Add applies an answer under the package's rule: refused when the quiz is
// closed or the answer invalid; otherwise it replaces the respondent's
// earlier answer, if any. replaced says whether it did. correct says whether
// the answer is right.
func (t *Tally) Add(a Answer) (correct, replaced bool, err error) {
	if a.QuizID != t.q.ID {
		return false, false, invalid("answer for quiz %q sent to quiz %q", a.QuizID, t.q.ID)
	}
	if err := checkID("classroom", a.Classroom, true); err != nil {
		return false, false, err
	}
	if err := checkID("student", a.Student, false); err != nil {
		return false, false, err
	}
	correct, err = t.q.check(a)
	if err != nil {
		return false, false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.open {
		return correct, false, fmt.Errorf("%w: answers to %q are no longer counted", ErrClosed, t.q.ID)
	}
	who := Respondent{a.Classroom, a.Student}
	if old, ok := t.answers[who]; ok {
		t.count(old, -1)
		replaced = true
	}
	e := entry{a: a, correct: correct}
	if t.q.Kind == Numeric {
		k := strconv.FormatFloat(*a.Value, 'g', -1, 64)
		if _, ok := t.values[k]; ok || len(t.values) < maxValues {
			e.key = k
		}
	}
	t.answers[who] = e
	t.count(e, +1)
	return correct, replaced, nil
}

// count adds (d=+1) or removes (d=-1) one answer from the running counts.
func (t *Tally) count(e entry, d int) {
	if e.correct {
		t.correct += d
	}
	room := t.rooms[e.a.Classroom]
	if room == nil {
		room = &RoomResult{}
		t.rooms[e.a.Classroom] = room
	}
	room.Answered += d
	if e.correct {
		room.Correct += d
	}
	if t.q.Kind != Numeric {
		for _, c := range e.a.Choices {
			t.options[c] += d
		}
		return
	}
	if e.key == "" {
		t.other += d
		return
	}
	t.values[e.key] += d
	if t.values[e.key] == 0 {
		delete(t.values, e.key)
	}
}

// Results returns a snapshot of the live results.
func (t *Tally) Results() Results {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := Results{QuizID: t.q.ID, Kind: t.q.Kind, Open: t.open, Answered: len(t.answers), Correct: t.correct,
		Options: slices.Clone(t.options), Other: t.other, Classrooms: make(map[string]*RoomResult, len(t.rooms))}
	if r.Answered > 0 {
		r.Accuracy = float64(r.Correct) / float64(r.Answered)
	}
	if t.values != nil {
		r.Values = make(map[string]int, len(t.values))
		for k, v := range t.values {
			r.Values[k] = v
		}
	}
	for id, room := range t.rooms {
		if room.Answered > 0 {
			c := *room
			r.Classrooms[id] = &c
		}
	}
	return r
}
