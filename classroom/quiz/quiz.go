// Package quiz is the in-class quiz of a dual-teacher lesson: a teacher
// pushes a question to every classroom of a session, rooms or individual
// students answer, and the teacher watches the distribution and accuracy
// fill in live. It holds the rules (what a valid question and answer are,
// which answer counts) and the running tally; transport (the control
// channel) and storage (learning records) belong to the callers.
//
// The rule for late and duplicate answers, stated once here and in
// docs/API.md:
//
//   - A quiz is open from Push until Close (the teacher closes it, or its
//     deadline passes). An answer that arrives after that is refused with
//     ErrClosed; the caller still records it as a late answer for the
//     learning record, but it never changes the results.
//   - Each respondent has one answer: a classroom answering for the room is
//     one respondent, each student answering individually is another. A
//     second answer from the same respondent while the quiz is open replaces
//     the first (students change their minds); the results move with it.
//   - Order is the edge's arrival order (its sequence), never the terminals'
//     clocks.
package quiz

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/campusedge/campusedge/edge/textnorm"
)

// Kind is the shape of a question.
type Kind string

// The question kinds a classroom terminal can show.
const (
	Single   Kind = "single"   // one option
	Multiple Kind = "multiple" // a set of options; correct only if exactly the correct set
	Numeric  Kind = "numeric"  // a number, correct within a tolerance
)

// Limits on outside input. Generous for a classroom question, small enough
// that a hostile terminal cannot make the edge hold much.
const (
	MaxQuestionBytes = 16 << 10
	MaxAnswerBytes   = 2 << 10
	MaxPromptRunes   = 1000
	MaxOptions       = 10
	MaxOptionRunes   = 200
	MaxIDLen         = 64
)

// Question is what a teacher pushes.
type Question struct {
	ID      string   `json:"id"`
	Kind    Kind     `json:"kind"`
	Prompt  string   `json:"prompt"`
	Options []string `json:"options,omitempty"` // single and multiple
	// Correct lists the indices of the correct options (single: exactly
	// one; multiple: one or more). Empty for numeric.
	Correct []int `json:"correct,omitempty"`
	// Answer and Tolerance define a correct numeric answer:
	// |value - Answer| <= Tolerance.
	Answer    *float64 `json:"answer,omitempty"`
	Tolerance float64  `json:"tolerance,omitempty"`
	// Seconds is how long the quiz stays open; 0 means until the teacher
	// closes it.
	Seconds int `json:"seconds,omitempty"`
}

// Answer is one respondent's answer.
type Answer struct {
	QuizID    string `json:"quiz_id"`
	Classroom string `json:"classroom"`
	// Student is empty when the classroom answers for the room.
	Student string   `json:"student,omitempty"`
	Choices []int    `json:"choices,omitempty"` // single and multiple
	Value   *float64 `json:"value,omitempty"`   // numeric
}

// Respondent identifies who answered: a room, or a student in a room.
type Respondent struct {
	Classroom, Student string
}

// Validation errors. Every error from Decode and Validate wraps ErrInvalid,
// so an API maps them all to one 400 code and shows the message.
var (
	ErrInvalid = errors.New("invalid quiz input")
	ErrClosed  = errors.New("quiz is closed")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// decodeStrict decodes one JSON object with unknown fields refused and
// nothing after it, so a typo in a field name is an error, not a silent
// default.
func decodeStrict(data []byte, limit int, v any) error {
	if len(data) > limit {
		return invalid("%d bytes, more than the %d allowed", len(data), limit)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("not the JSON expected: %v", err)
	}
	if dec.More() {
		return invalid("unexpected data after the JSON object")
	}
	return nil
}

// DecodeQuestion parses, normalises and validates a question from outside.
func DecodeQuestion(data []byte) (Question, error) {
	var q Question
	if err := decodeStrict(data, MaxQuestionBytes, &q); err != nil {
		return Question{}, err
	}
	q.Normalize()
	return q, q.Validate()
}

// Normalize makes a choice question typed as a Chinese input method types
// it into the question meant: a single option holding a list
// (`1/2，1/3，一样大`) is split on `,` `，` `、` `;` `；` and new lines, and
// full-width digits and punctuation in options fold to ASCII (`１/２` and
// `1/2` are one answer). Prompts keep their text.
func (q *Question) Normalize() {
	if q.Kind != Single && q.Kind != Multiple {
		return
	}
	if len(q.Options) == 1 {
		if parts := textnorm.Split(q.Options[0]); len(parts) > 1 {
			q.Options = parts
		}
	}
	for i, o := range q.Options {
		q.Options[i] = textnorm.Fold(o)
	}
}

// DecodeAnswer parses an answer from outside; it is checked against its
// question by Tally.Add.
func DecodeAnswer(data []byte) (Answer, error) {
	var a Answer
	if err := decodeStrict(data, MaxAnswerBytes, &a); err != nil {
		return Answer{}, err
	}
	if err := checkID("quiz_id", a.QuizID, true); err != nil {
		return Answer{}, err
	}
	if err := checkID("classroom", a.Classroom, true); err != nil {
		return Answer{}, err
	}
	if err := checkID("student", a.Student, false); err != nil {
		return Answer{}, err
	}
	return a, nil
}

// checkID accepts short printable ids without path or control characters.
func checkID(field, id string, required bool) error {
	if id == "" {
		if required {
			return invalid("%s is missing", field)
		}
		return nil
	}
	if len(id) > MaxIDLen {
		return invalid("%s is longer than %d bytes", field, MaxIDLen)
	}
	for _, r := range id {
		if !(r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return invalid("%s %q may hold only letters, digits, '-', '_' and '.'", field, id)
		}
	}
	return nil
}

func checkText(field, s string, maxRunes int) error {
	if !utf8.ValidString(s) {
		return invalid("%s is not valid UTF-8", field)
	}
	if strings.TrimSpace(s) == "" {
		return invalid("%s is empty", field)
	}
	if n := utf8.RuneCountInString(s); n > maxRunes {
		return invalid("%s has %d characters, more than %d", field, n, maxRunes)
	}
	return nil
}

// Validate checks a question completely: a pushed question must be
// answerable and gradable.
func (q Question) Validate() error {
	if err := checkID("id", q.ID, true); err != nil {
		return err
	}
	if err := checkText("prompt", q.Prompt, MaxPromptRunes); err != nil {
		return err
	}
	if q.Seconds < 0 || q.Seconds > 3600 {
		return invalid("seconds must be between 0 (until closed) and 3600")
	}
	switch q.Kind {
	case Single, Multiple:
		if len(q.Options) < 2 || len(q.Options) > MaxOptions {
			return invalid("a %s question needs 2 to %d options, not %d", q.Kind, MaxOptions, len(q.Options))
		}
		for i, o := range q.Options {
			if err := checkText(fmt.Sprintf("option %d", i), o, MaxOptionRunes); err != nil {
				return err
			}
		}
		if q.Answer != nil || q.Tolerance != 0 {
			return invalid("answer and tolerance are for numeric questions")
		}
		if err := checkChoices(q.Correct, len(q.Options)); err != nil {
			return fmt.Errorf("correct: %w", err)
		}
		if q.Kind == Single && len(q.Correct) != 1 {
			return invalid("a single-choice question has exactly one correct option, not %d", len(q.Correct))
		}
	case Numeric:
		if len(q.Options) > 0 || len(q.Correct) > 0 {
			return invalid("options and correct are for choice questions")
		}
		if q.Answer == nil || !finite(*q.Answer) {
			return invalid("a numeric question needs a finite answer")
		}
		if !finite(q.Tolerance) || q.Tolerance < 0 {
			return invalid("tolerance must be a finite number >= 0")
		}
	default:
		return invalid("kind %q is not one of single, multiple, numeric", q.Kind)
	}
	return nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// checkChoices accepts 1..n distinct indices in [0, n).
func checkChoices(c []int, n int) error {
	if len(c) == 0 {
		return invalid("no option chosen")
	}
	if len(c) > n {
		return invalid("%d choices for %d options", len(c), n)
	}
	seen := make([]bool, n)
	for _, i := range c {
		if i < 0 || i >= n {
			return invalid("option %d does not exist (0 to %d)", i, n-1)
		}
		if seen[i] {
			return invalid("option %d chosen twice", i)
		}
		seen[i] = true
	}
	return nil
}

// check validates a against q and reports whether it is correct.
func (q Question) check(a Answer) (correct bool, err error) {
	switch q.Kind {
	case Single, Multiple:
		if a.Value != nil {
			return false, invalid("a %s question is answered with choices, not a value", q.Kind)
		}
		if err := checkChoices(a.Choices, len(q.Options)); err != nil {
			return false, err
		}
		if q.Kind == Single && len(a.Choices) != 1 {
			return false, invalid("a single-choice question takes exactly one choice")
		}
		if len(a.Choices) != len(q.Correct) {
			return false, nil
		}
		for _, c := range a.Choices {
			if !containsInt(q.Correct, c) {
				return false, nil
			}
		}
		return true, nil
	default: // Numeric; Validate admitted no other kind
		if len(a.Choices) > 0 || a.Value == nil {
			return false, invalid("a numeric question is answered with a value")
		}
		if !finite(*a.Value) {
			return false, invalid("the value must be a finite number")
		}
		return math.Abs(*a.Value-*q.Answer) <= q.Tolerance, nil
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
