package quiz

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

func f64(v float64) *float64 { return &v }

func single() Question {
	return Question{ID: "q1", Kind: Single, Prompt: "2 + 2 = ?", Options: []string{"3", "4", "5"}, Correct: []int{1}}
}

func TestValidateRefusesBadQuestions(t *testing.T) {
	for name, mutate := range map[string]func(q *Question){
		"no id":                  func(q *Question) { q.ID = "" },
		"id with slash":          func(q *Question) { q.ID = "../q" },
		"empty prompt":           func(q *Question) { q.Prompt = "  " },
		"long prompt":            func(q *Question) { q.Prompt = strings.Repeat("x", MaxPromptRunes+1) },
		"bad utf8":               func(q *Question) { q.Prompt = "\xff" },
		"one option":             func(q *Question) { q.Options = q.Options[:1]; q.Correct = []int{0} },
		"too many options":       func(q *Question) { q.Options = make([]string, MaxOptions+1) },
		"empty option":           func(q *Question) { q.Options[2] = "" },
		"correct out of range":   func(q *Question) { q.Correct = []int{3} },
		"negative correct":       func(q *Question) { q.Correct = []int{-1} },
		"two correct for single": func(q *Question) { q.Correct = []int{0, 1} },
		"no correct":             func(q *Question) { q.Correct = nil },
		"numeric answer on choice": func(q *Question) {
			q.Answer = f64(4)
		},
		"unknown kind":   func(q *Question) { q.Kind = "essay" },
		"long deadline":  func(q *Question) { q.Seconds = 3601 },
		"numeric no ans": func(q *Question) { q.Kind, q.Options, q.Correct = Numeric, nil, nil },
		"numeric NaN tolerance": func(q *Question) {
			q.Kind, q.Options, q.Correct, q.Answer, q.Tolerance = Numeric, nil, nil, f64(1), -1
		},
		"multiple duplicate correct": func(q *Question) { q.Kind, q.Correct = Multiple, []int{1, 1} },
	} {
		q := single()
		mutate(&q)
		if err := q.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v, want ErrInvalid", name, err)
		}
	}
	if err := single().Validate(); err != nil {
		t.Fatalf("good question refused: %v", err)
	}
}

func TestDecodeIsStrictAndBounded(t *testing.T) {
	good := `{"id":"q1","kind":"numeric","prompt":"pi to 2 places","answer":3.14,"tolerance":0.005}`
	q, err := DecodeQuestion([]byte(good))
	if err != nil || q.Kind != Numeric || *q.Answer != 3.14 {
		t.Fatalf("DecodeQuestion = %+v, %v", q, err)
	}
	for name, in := range map[string]string{
		"unknown field":  `{"id":"q1","kind":"numeric","prompt":"p","answer":1,"extra":1}`,
		"trailing data":  good + `{}`,
		"not an object":  `[1,2]`,
		"too large":      `{"id":"q1","prompt":"` + strings.Repeat("a", MaxQuestionBytes) + `"}`,
		"wrong type":     `{"id":1}`,
		"invalid result": `{"id":"q1","kind":"single","prompt":"p","options":["a"]}`,
	} {
		if _, err := DecodeQuestion([]byte(in)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: DecodeQuestion = %v, want ErrInvalid", name, err)
		}
	}
	for name, in := range map[string]string{
		"no classroom":  `{"quiz_id":"q1","choices":[1]}`,
		"path student":  `{"quiz_id":"q1","classroom":"c1","student":"a/b","choices":[1]}`,
		"NUL classroom": `{"quiz_id":"q1","classroom":"c\u0000","choices":[1]}`,
		"too large":     `{"quiz_id":"q1","classroom":"c1","choices":[` + strings.Repeat("1,", MaxAnswerBytes) + `1]}`,
	} {
		if _, err := DecodeAnswer([]byte(in)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: DecodeAnswer = %v, want ErrInvalid", name, err)
		}
	}
}

func TestTallyRule(t *testing.T) {
	tl, err := NewTally(single())
	if err != nil {
		t.Fatal(err)
	}
	add := func(room, student string, choice int) (bool, bool, error) {
		return tl.Add(Answer{QuizID: "q1", Classroom: room, Student: student, Choices: []int{choice}})
	}
	if ok, rep, err := add("r1", "", 1); !ok || rep || err != nil {
		t.Fatalf("room answer: correct=%v replaced=%v err=%v", ok, rep, err)
	}
	if ok, _, err := add("r2", "s1", 0); ok || err != nil {
		t.Fatalf("wrong student answer: correct=%v err=%v", ok, err)
	}
	// The same student changes their mind: replaces, results follow.
	if ok, rep, err := add("r2", "s1", 1); !ok || !rep || err != nil {
		t.Fatalf("changed answer: correct=%v replaced=%v err=%v", ok, rep, err)
	}
	// A room answer and a student answer in one room are two respondents.
	if _, rep, err := add("r2", "", 2); rep || err != nil {
		t.Fatalf("room answer beside student answer: replaced=%v err=%v", rep, err)
	}
	// Invalid answers change nothing.
	for _, a := range []Answer{
		{QuizID: "q1", Classroom: "r3", Choices: []int{0, 1}},
		{QuizID: "q1", Classroom: "r3", Choices: []int{7}},
		{QuizID: "q1", Classroom: "r3", Value: f64(4)},
		{QuizID: "other", Classroom: "r3", Choices: []int{1}},
	} {
		if _, _, err := tl.Add(a); !errors.Is(err, ErrInvalid) {
			t.Errorf("Add(%+v) = %v, want ErrInvalid", a, err)
		}
	}
	r := tl.Results()
	want := Results{QuizID: "q1", Kind: Single, Open: true, Answered: 3, Correct: 2, Options: []int{0, 2, 1}}
	if r.Answered != want.Answered || r.Correct != want.Correct || fmt.Sprint(r.Options) != fmt.Sprint(want.Options) || !r.Open {
		t.Fatalf("Results = %+v, want %+v", r, want)
	}
	if r.Accuracy < 0.666 || r.Accuracy > 0.667 {
		t.Errorf("accuracy %v, want 2/3", r.Accuracy)
	}
	if r.Classrooms["r1"].Answered != 1 || r.Classrooms["r2"].Answered != 2 || r.Classrooms["r2"].Correct != 1 || r.Classrooms["r3"] != nil {
		t.Errorf("per classroom %v", r.Classrooms)
	}
	if !tl.Close() || tl.Close() {
		t.Error("Close should report open once")
	}
	if _, _, err := add("r4", "", 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("late answer: %v, want ErrClosed", err)
	}
	if r2 := tl.Results(); r2.Answered != 3 || r2.Open {
		t.Fatalf("a late answer changed the results: %+v", r2)
	}
}

func TestNumericAndMultiple(t *testing.T) {
	q := Question{ID: "n", Kind: Numeric, Prompt: "g in m/s²", Answer: f64(9.81), Tolerance: 0.05}
	tl, err := NewTally(q)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range []float64{9.8, 9.81, 10, 9.7} {
		if _, _, err := tl.Add(Answer{QuizID: "n", Classroom: "r", Student: fmt.Sprint("s", i), Value: f64(v)}); err != nil {
			t.Fatal(err)
		}
	}
	if r := tl.Results(); r.Correct != 2 || r.Values["9.81"] != 1 || r.Values["10"] != 1 || len(r.Values) != 4 {
		t.Fatalf("numeric results %+v", r)
	}
	m := Question{ID: "m", Kind: Multiple, Prompt: "primes", Options: []string{"2", "4", "5", "9"}, Correct: []int{0, 2}}
	tm, err := NewTally(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		choices []int
		correct bool
	}{{[]int{2, 0}, true}, {[]int{0}, false}, {[]int{0, 2, 3}, false}} {
		ok, _, err := tm.Add(Answer{QuizID: "m", Classroom: fmt.Sprintf("r%d-%d", c.choices[0], len(c.choices)), Choices: c.choices})
		if err != nil || ok != c.correct {
			t.Errorf("choices %v: correct=%v err=%v, want %v", c.choices, ok, err, c.correct)
		}
	}
}

// TestRunningCountsMatchRecount: many goroutines answer and re-answer at
// random; the running counts must equal a recount from the final answers.
func TestRunningCountsMatchRecount(t *testing.T) {
	q := Question{ID: "m", Kind: Multiple, Prompt: "p", Options: []string{"a", "b", "c", "d"}, Correct: []int{1, 3}}
	tl, err := NewTally(q)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range 2000 {
				var ch []int
				for o := range 4 {
					if rng.IntN(2) == 0 {
						ch = append(ch, o)
					}
				}
				if len(ch) == 0 {
					ch = []int{rng.IntN(4)}
				}
				a := Answer{QuizID: "m", Classroom: fmt.Sprint("room", rng.IntN(40)), Student: fmt.Sprint("s", rng.IntN(5)), Choices: ch}
				if _, _, err := tl.Add(a); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	r := tl.Results()
	// Recount from the stored answers.
	opts := make([]int, 4)
	correct := 0
	for _, e := range tl.answers {
		for _, c := range e.a.Choices {
			opts[c]++
		}
		if ok, _ := q.check(e.a); ok {
			correct++
		}
	}
	if r.Answered != len(tl.answers) || r.Correct != correct || fmt.Sprint(r.Options) != fmt.Sprint(opts) {
		t.Fatalf("running %+v; recount answered=%d correct=%d options=%v", r, len(tl.answers), correct, opts)
	}
	sum := 0
	for _, room := range r.Classrooms {
		sum += room.Answered
	}
	if sum != r.Answered {
		t.Fatalf("per-classroom answered sum %d != %d", sum, r.Answered)
	}
}

func FuzzDecodeQuestion(f *testing.F) {
	f.Add([]byte(`{"id":"q1","kind":"single","prompt":"2+2","options":["3","4"],"correct":[1]}`))
	f.Add([]byte(`{"id":"q1","kind":"multiple","prompt":"p","options":["a","b","c"],"correct":[0,2],"seconds":30}`))
	f.Add([]byte(`{"id":"q1","kind":"numeric","prompt":"p","answer":1e308,"tolerance":0}`))
	f.Add([]byte(`{"id":"q1","kind":"single","prompt":"p","options":["a","b"],"correct":[5]}`))
	f.Add([]byte(`{"id":"q1","kind":"single","prompt":"哪个大？","options":["1/2，1/3、一样大"],"correct":[2]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		q, err := DecodeQuestion(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		// A question that decodes must open a quiz and grade its own
		// correct answer as correct.
		tl, err := NewTally(q)
		if err != nil {
			t.Fatalf("decoded question refused by NewTally: %v", err)
		}
		a := Answer{QuizID: q.ID, Classroom: "r", Choices: q.Correct, Value: q.Answer}
		if ok, _, err := tl.Add(a); err != nil || !ok {
			t.Fatalf("the question's own answer: correct=%v err=%v (%+v)", ok, err, q)
		}
	})
}

func FuzzAddAnswer(f *testing.F) {
	f.Add([]byte(`{"quiz_id":"q1","classroom":"r1","choices":[1]}`))
	f.Add([]byte(`{"quiz_id":"q1","classroom":"r1","student":"s-1","choices":[0,1]}`))
	f.Add([]byte(`{"quiz_id":"q1","classroom":"r1","value":4}`))
	f.Add([]byte(`{"quiz_id":"q1","classroom":"r1","choices":[-1]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := DecodeAnswer(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		tl, err := NewTally(single())
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = tl.Add(a)
		r := tl.Results()
		if err != nil && r.Answered != 0 {
			t.Fatalf("a refused answer was counted: %+v", r)
		}
		if err == nil && (r.Answered != 1 || r.Options[a.Choices[0]] != 1) {
			t.Fatalf("an accepted answer was not counted: %+v", r)
		}
	})
}

// A quiz typed with a Chinese input method: full-width commas in one
// field, full-width digits.
func TestQuestionTypedWithFullWidthCommas(t *testing.T) {
	for _, opts := range []string{`["1/2，1/3，一样大"]`, `["１/２、１/３、一样大"]`, `["1/2\n1/3\n一样大"]`, `["1/2","1/3","一样大"]`} {
		q, err := DecodeQuestion([]byte(`{"id":"q1","kind":"single","prompt":"哪个大？","options":` + opts + `,"correct":[2]}`))
		if err != nil || len(q.Options) != 3 || q.Options[0] != "1/2" || q.Options[1] != "1/3" || q.Options[2] != "一样大" {
			t.Errorf("%s: %q %v", opts, q.Options, err)
		}
	}
}
