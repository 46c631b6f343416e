package classroom_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/metricstest"
)

// count returns how many received messages match pred (consumed or not).
func (c *ctl) count(pred func(msg) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.got {
		if pred(m) {
			n++
		}
	}
	return n
}

func joined(t *testing.T, ctx context.Context, e *edge, token, name string) *ctl {
	t.Helper()
	c, w := dialCtl(t, ctx, e, token)
	if w.str("type") != "welcome" {
		t.Fatalf("%s: %v", name, w)
	}
	if r := c.request(t, map[string]any{"type": "join", "name": name}); r.str("type") != "ack" {
		t.Fatalf("%s join: %v", name, r)
	}
	return c
}

func results(m msg) map[string]any { r, _ := m["results"].(map[string]any); return r }

func num(m map[string]any, k string) float64 { f, _ := m[k].(float64); return f }

func getJSON(t *testing.T, ctx context.Context, e *edge, path string, v any) int {
	t.Helper()
	resp, b := e.Do(t, ctx, "GET", path, e.admin, "", nil)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

type records struct {
	Records []struct {
		Kind      string          `json:"kind"`
		Classroom string          `json:"classroom_id"`
		Student   string          `json:"student_id"`
		Seq       uint64          `json:"seq"`
		ID        string          `json:"id"`
		Data      json.RawMessage `json:"data"`
	} `json:"records"`
}

// TestQuizOverControlChannel: the master pushes a question, terminals answer
// for their rooms and the assistant for one student; the master's live
// results match; closing makes later answers late (stored, not counted);
// every answer is a learning record with an outbox sequence; roles hold.
func TestQuizOverControlChannel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createClass(t, ctx, "Physics 8", 2)
	a, b := s.Classrooms[0], s.Classrooms[1]
	master := joined(t, ctx, e, s.Tokens.Master, "master")
	asst := joined(t, ctx, e, s.Tokens.Classrooms[a].Assistant, "assistant A")
	termA := joined(t, ctx, e, s.Tokens.Classrooms[a].Terminal, "Room A")
	termB := joined(t, ctx, e, s.Tokens.Classrooms[b].Terminal, "Room B")
	obs := joined(t, ctx, e, s.Tokens.Observer, "observer")

	q := map[string]any{"id": "q1", "kind": "single", "prompt": "2+2?", "options": []string{"3", "4", "5"}, "correct": []int{1}}
	// Role rules.
	if r := termA.request(t, map[string]any{"type": "quiz", "question": q}); errCode(r) != "forbidden" {
		t.Fatalf("terminal pushed a quiz: %v", r)
	}
	if r := obs.request(t, map[string]any{"type": "quiz", "question": q}); errCode(r) != "forbidden" {
		t.Fatalf("observer pushed a quiz: %v", r)
	}
	bad := map[string]any{"id": "qx", "kind": "single", "prompt": "?", "options": []string{"only"}, "correct": []int{0}}
	if r := master.request(t, map[string]any{"type": "quiz", "question": bad}); errCode(r) != "bad_message" {
		t.Fatalf("invalid question accepted: %v", r)
	}
	if r := master.request(t, map[string]any{"type": "quiz", "question": q}); r.str("type") != "ack" {
		t.Fatalf("push: %v", r)
	}
	if r := master.request(t, map[string]any{"type": "quiz", "question": q}); errCode(r) != "already_exists" {
		t.Fatalf("same quiz id twice: %v", r)
	}
	isQuiz := func(m msg) bool { return m.str("type") == "quiz" }
	for name, c := range map[string]*ctl{"A": termA, "B": termB, "observer": obs} {
		got := c.wait(t, "quiz on "+name, isQuiz)
		qq, _ := got["question"].(map[string]any)
		if qq["prompt"] != "2+2?" || qq["correct"] != nil {
			t.Fatalf("%s got %v (the room must not see the correct answer)", name, got)
		}
	}
	if qq, _ := asst.wait(t, "quiz on assistant", isQuiz)["question"].(map[string]any); qq["correct"] == nil {
		t.Fatalf("the assistant should see the correct answer: %v", qq)
	}

	if r := obs.request(t, map[string]any{"type": "quiz_answer", "quiz_id": "q1", "choices": []int{1}}); errCode(r) != "forbidden" {
		t.Fatalf("observer answered: %v", r)
	}
	if r := termA.request(t, map[string]any{"type": "quiz_answer", "quiz_id": "q1", "student_id": "s1", "choices": []int{1}}); errCode(r) != "forbidden" {
		t.Fatalf("terminal answered per student: %v", r)
	}
	if r := termA.request(t, map[string]any{"type": "quiz_answer", "quiz_id": "q1", "choices": []int{7}}); errCode(r) != "invalid_answer" {
		t.Fatalf("option 7 accepted: %v", r)
	}
	if r := termA.request(t, map[string]any{"type": "quiz_answer", "quiz_id": "nope", "choices": []int{1}}); errCode(r) != "not_found" {
		t.Fatalf("unknown quiz: %v", r)
	}
	for _, ans := range []struct {
		c *ctl
		m map[string]any
	}{
		{termA, map[string]any{"type": "quiz_answer", "quiz_id": "q1", "choices": []int{1}}},
		{termB, map[string]any{"type": "quiz_answer", "quiz_id": "q1", "choices": []int{0}}},
		{asst, map[string]any{"type": "quiz_answer", "quiz_id": "q1", "student_id": "s1", "choices": []int{1}}},
	} {
		if r := ans.c.request(t, ans.m); r.str("type") != "ack" {
			t.Fatalf("answer: %v", r)
		}
	}
	last := time.Now()
	want := func(m msg) bool {
		r := results(m)
		return m.str("type") == "quiz_results" && num(r, "answered") == 3 && num(r, "correct") == 2
	}
	r := results(master.wait(t, "results with 3 answers", want))
	if d := time.Since(last); d > 3*time.Second {
		t.Fatalf("results took %v after the last answer", d)
	}
	opts, _ := r["options"].([]any)
	rooms, _ := r["classrooms"].(map[string]any)
	if fmt.Sprint(opts) != "[1 2 0]" || num(rooms[a].(map[string]any), "answered") != 2 || num(rooms[b].(map[string]any), "correct") != 0 {
		t.Fatalf("results %v", r)
	}
	asst.wait(t, "results on the assistant", want)
	if n := termA.count(func(m msg) bool { return m.str("type") == "quiz_results" }); n != 0 {
		t.Fatalf("a terminal received %d results messages", n)
	}

	// A burst of per-student answers is throttled into few results messages.
	before := master.count(func(m msg) bool { return m.str("type") == "quiz_results" })
	start := time.Now()
	for i := range 15 {
		asst.send(t, map[string]any{"type": "quiz_answer", "v": 1, "quiz_id": "q1", "student_id": fmt.Sprintf("b%d", i), "choices": []int{i % 3}})
	}
	master.wait(t, "results with 18 answers", func(m msg) bool {
		return m.str("type") == "quiz_results" && num(results(m), "answered") == 18
	})
	elapsed := time.Since(start)
	sent := master.count(func(m msg) bool { return m.str("type") == "quiz_results" }) - before
	if limit := int(elapsed/(250*time.Millisecond)) + 2; sent > limit {
		t.Fatalf("%d results messages in %v: not throttled to one per 250 ms (limit %d)", sent, elapsed, limit)
	}

	// Close: the rooms are told; a late answer is stored but not counted.
	if r := termA.request(t, map[string]any{"type": "quiz_close", "quiz_id": "q1"}); errCode(r) != "forbidden" {
		t.Fatalf("terminal closed a quiz: %v", r)
	}
	if r := master.request(t, map[string]any{"type": "quiz_close", "quiz_id": "q1"}); r.str("type") != "ack" {
		t.Fatalf("close: %v", r)
	}
	termB.wait(t, "quiz_closed", func(m msg) bool { return m.str("type") == "quiz_closed" && m.str("quiz_id") == "q1" })
	if r := termB.request(t, map[string]any{"type": "quiz_answer", "quiz_id": "q1", "choices": []int{1}}); errCode(r) != "quiz_closed" {
		t.Fatalf("late answer: %v", r)
	}
	final := results(master.wait(t, "closed results", func(m msg) bool {
		return m.str("type") == "quiz_results" && results(m)["open"] == false
	}))
	if num(final, "answered") != 18 {
		t.Fatalf("the late answer changed the results: %v", final)
	}

	// An assistant's own quiz reaches only their classroom.
	q2 := map[string]any{"id": "q2", "kind": "numeric", "prompt": "g?", "answer": 9.8, "tolerance": 0.1}
	if r := asst.request(t, map[string]any{"type": "quiz", "question": q2}); r.str("type") != "ack" {
		t.Fatalf("assistant push: %v", r)
	}
	termA.wait(t, "q2 on A", func(m msg) bool { return isQuiz(m) && m.str("classroom_id") == a })
	if r := termB.request(t, map[string]any{"type": "quiz_answer", "quiz_id": "q2", "value": 9.8}); errCode(r) != "forbidden" {
		t.Fatalf("room B answered room A's quiz: %v", r)
	}

	// A question at the size limits is stored too.
	long := map[string]any{"id": "big", "kind": "multiple", "prompt": strings.Repeat("<é>", 300), "options": slices.Repeat([]string{strings.Repeat("&", 150)}, 10), "correct": []int{0}}
	if r := master.request(t, map[string]any{"type": "quiz", "question": long}); r.str("type") != "ack" {
		t.Fatalf("push the long question: %v", r)
	}
	if r := master.request(t, map[string]any{"type": "quiz_close", "quiz_id": "big"}); r.str("type") != "ack" {
		t.Fatalf("close: %v", r)
	}

	// Stored: the question and every answer (the late one marked), each
	// with an outbox sequence; the outbox holds them for the city.
	var recs records
	getJSON(t, ctx, e, "/api/v1/sessions/"+s.ID+"/records?kind=quiz", &recs)
	answers, lates, questions := 0, 0, 0
	for _, r := range recs.Records {
		if r.Seq == 0 || r.ID == "" {
			t.Fatalf("record without outbox seq/id: %+v", r)
		}
		switch r.Kind {
		case "quiz.question":
			questions++
		case "quiz.answer":
			answers++
			var d struct{ Late bool }
			if err := json.Unmarshal(r.Data, &d); err != nil {
				t.Fatal(err)
			}
			if d.Late {
				lates++
				if r.Classroom != b {
					t.Fatalf("late answer from %s, want %s", r.Classroom, b)
				}
			}
		}
	}
	if questions != 3 || answers != 19 || lates != 1 {
		t.Fatalf("stored %d questions, %d answers (%d late); want 3, 19 (1 late)", questions, answers, lates)
	}
	var st struct {
		Backlog uint64 `json:"backlog"`
	}
	getJSON(t, ctx, e, "/api/v1/sync", &st)
	if st.Backlog < 22 {
		t.Fatalf("outbox backlog %d, want at least the 22 quiz records", st.Backlog)
	}
	_, metrics := e.Do(t, ctx, "GET", "/metrics", "", "", nil)
	if v := metricstest.Value(metrics, `campusedge_learning_records_total{kind="quiz.answer"}`); v != 19 {
		t.Errorf("metric quiz.answer records %v, want 19", v)
	}

	// Session log: hands, stage, mute and the end are records too.
	if r := termB.request(t, map[string]any{"type": "hand", "raised": true}); r.str("type") != "ack" {
		t.Fatalf("hand: %v", r)
	}
	if r := master.request(t, map[string]any{"type": "stage", "classroom_id": b, "on": true}); r.str("type") != "ack" {
		t.Fatalf("stage: %v", r)
	}
	if r := master.request(t, map[string]any{"type": "end"}); r.str("type") != "ack" {
		t.Fatalf("end: %v", r)
	}
	var events []string
	waitFor(t, 5*time.Second, "session log", func() bool {
		var logs records
		getJSON(t, ctx, e, "/api/v1/sessions/"+s.ID+"/records?kind=session", &logs)
		events = events[:0]
		for _, r := range logs.Records {
			var d struct{ Event string }
			_ = json.Unmarshal(r.Data, &d)
			events = append(events, d.Event+":"+r.Classroom)
		}
		return len(events) == 3
	})
	if fmt.Sprint(events) != "[hand:"+b+" stage:"+b+" ended:]" {
		t.Fatalf("session log %v", events)
	}
}

// TestAttendance: the roster CSV import refuses bad rows by number and
// imports nothing; the assistant marks students of the group from the
// roster; a classroom's join and its abrupt disappearance are recorded.
func TestAttendance(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createClass(t, ctx, "Maths 7", 2)
	a := s.Classrooms[0]

	put := func(csv string) (int, string) {
		resp, b := e.Do(t, ctx, "PUT", "/api/v1/attendance/roster", e.admin, "text/csv", []byte(csv))
		return resp.StatusCode, string(b)
	}
	code, body := put("student_id,name,homeroom,groups\ns1,Li Wei,7A,math-7-1\ns1,Dup,7A,\nbad id,X,7A,\n")
	var refusal struct {
		Error struct {
			Code string
			Rows []struct{ Row int }
		}
	}
	_ = json.Unmarshal([]byte(body), &refusal)
	if code != http.StatusBadRequest || refusal.Error.Code != "invalid_rows" || len(refusal.Error.Rows) != 2 || refusal.Error.Rows[0].Row != 3 || refusal.Error.Rows[1].Row != 4 {
		t.Fatalf("bad roster: %d %s", code, body)
	}
	if resp, b := e.Do(t, ctx, "GET", "/api/v1/attendance/roster", e.admin, "", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a refused import stored something: %d %s", resp.StatusCode, b)
	}
	asst := joined(t, ctx, e, s.Tokens.Classrooms[a].Assistant, "assistant")
	if r := asst.request(t, map[string]any{"type": "roster"}); errCode(r) != "no_roster" {
		t.Fatalf("roster without one: %v", r)
	}
	if code, body := put("student_id,name,homeroom,groups\ns1,Li Wei,7A,math-7-1\ns2,Wang Fang,7B,math-7-1\ns3,Zhang San,7B,\n"); code != http.StatusOK {
		t.Fatalf("good roster: %d %s", code, body)
	}
	// Neither timetable nor a homeroom names this room: the group is asked for.
	if r := asst.request(t, map[string]any{"type": "roster"}); errCode(r) != "no_group" {
		t.Fatalf("roster without a group: %v", r)
	}
	r := asst.request(t, map[string]any{"type": "roster", "group": "math-7-1"})
	if r.str("type") != "roster" || r.str("group") != "math-7-1" || fmt.Sprint(len(r["students"].([]any))) != "2" {
		t.Fatalf("teaching group roster: %v", r)
	}
	term := joined(t, ctx, e, s.Tokens.Classrooms[a].Terminal, "Room A")
	// A terminal (the big screen, seen by the whole class) gets no roster
	// at all (issue 12), so it neither reads another group's nor swaps the
	// room's class by naming a group (issue 14 finding 4).
	if r := term.request(t, map[string]any{"type": "roster", "group": "7B"}); errCode(r) != "forbidden" {
		t.Fatalf("terminal chose a group: %v", r)
	}
	if r := term.request(t, map[string]any{"type": "roster"}); errCode(r) != "forbidden" {
		t.Fatalf("a terminal read the roster: %v", r)
	}
	if r := asst.request(t, map[string]any{"type": "roster"}); r.str("group") != "math-7-1" {
		t.Fatalf("the room's class after a terminal's requests: %v", r)
	}
	if r := term.request(t, map[string]any{"type": "mark", "student_id": "s1", "status": "present"}); errCode(r) != "forbidden" {
		t.Fatalf("terminal marked: %v", r)
	}
	if r := asst.request(t, map[string]any{"type": "mark", "student_id": "s3", "status": "present"}); errCode(r) != "not_found" {
		t.Fatalf("marked a student of another group: %v", r)
	}
	if r := asst.request(t, map[string]any{"type": "mark", "student_id": "s1", "status": "maybe"}); errCode(r) != "bad_message" {
		t.Fatalf("bad status: %v", r)
	}
	for st, status := range map[string]string{"s1": "present", "s2": "late"} {
		if r := asst.request(t, map[string]any{"type": "mark", "student_id": st, "status": status}); r.str("type") != "ack" {
			t.Fatalf("mark %s: %v", st, r)
		}
	}
	// Per-student answers name students of the room's roster.
	q := map[string]any{"id": "qa", "kind": "single", "prompt": "?", "options": []string{"a", "b"}, "correct": []int{0}}
	if r := asst.request(t, map[string]any{"type": "quiz", "question": q}); r.str("type") != "ack" {
		t.Fatalf("push: %v", r)
	}
	if r := asst.request(t, map[string]any{"type": "quiz_answer", "quiz_id": "qa", "student_id": "s3", "choices": []int{0}}); errCode(r) != "not_found" {
		t.Fatalf("answer for a student of another group: %v", r)
	}
	if r := asst.request(t, map[string]any{"type": "quiz_answer", "quiz_id": "qa", "student_id": "s2", "choices": []int{0}}); r.str("type") != "ack" {
		t.Fatalf("answer for s2: %v", r)
	}
	asst.wait(t, "marks", func(m msg) bool {
		mk, _ := m["marks"].(map[string]any)
		return m.str("type") == "marks" && mk["s1"] == "present" && mk["s2"] == "late"
	})

	// The terminal vanishes (no leave): the edge records the leave when it
	// notices the connection end.
	_ = term.ws.Close()
	type att struct {
		Classrooms map[string]struct {
			Joins, Leaves int
			Present       bool
			Marks         map[string]string
			Events        []struct {
				Kind string          `json:"kind"`
				Data json.RawMessage `json:"data"`
			}
		} `json:"classrooms"`
	}
	var got att
	waitFor(t, 10*time.Second, "leave recorded", func() bool {
		got = att{}
		getJSON(t, ctx, e, "/api/v1/sessions/"+s.ID+"/attendance", &got)
		return got.Classrooms[a].Leaves >= 1
	})
	ca := got.Classrooms[a]
	if ca.Joins != 2 || ca.Leaves != 1 || !ca.Present || ca.Marks["s1"] != "present" || ca.Marks["s2"] != "late" {
		t.Fatalf("attendance %+v", ca)
	}
	last := ca.Events[len(ca.Events)-1]
	var ld struct{ Reason, Role string }
	_ = json.Unmarshal(last.Data, &ld)
	if last.Kind != "attendance.leave" || ld.Reason != "disconnected" || ld.Role != "terminal" {
		t.Fatalf("leave event %s %s", last.Kind, last.Data)
	}
}

// TestHandsInOrder: the master gets raised hands in the order they went
// up (state.hands is sorted by id), also after joining late.
func TestHandsInOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createClass(t, ctx, "Hands", 3)
	ids := slices.Clone(s.Classrooms)
	slices.Sort(ids)
	order := []string{ids[2], ids[0], ids[1]} // not sorted
	master := joined(t, ctx, e, s.Tokens.Master, "master")
	for _, cid := range order {
		c := joined(t, ctx, e, s.Tokens.Classrooms[cid].Terminal, cid)
		if r := c.request(t, map[string]any{"type": "hand", "raised": true}); r.str("type") != "ack" {
			t.Fatalf("hand: %v", r)
		}
	}
	isOrder := func(want []string) func(msg) bool {
		return func(m msg) bool { return m.str("type") == "hands" && fmt.Sprint(m["order"]) == fmt.Sprint(want) }
	}
	master.wait(t, "hands in order", isOrder(order))
	if r := master.request(t, map[string]any{"type": "hand", "raised": false, "classroom_id": order[1]}); r.str("type") != "ack" {
		t.Fatalf("lower: %v", r)
	}
	master.wait(t, "hands after lowering", isOrder([]string{order[0], order[2]}))
	late := joined(t, ctx, e, s.Tokens.Master, "master again")
	late.wait(t, "hands on join", isOrder([]string{order[0], order[2]}))
}

// TestClassroomCurrent: a paired terminal's token finds the session of its
// classroom with tokens that work on the control channel, the same on every
// poll; nothing for a stranger or after the end.
func TestClassroomCurrent(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createClass(t, ctx, "Current", 2)
	cid := s.Classrooms[1]
	_, b := e.Do(t, ctx, "POST", "/api/v1/classrooms/"+cid+"/pairing-codes", e.admin, "", nil)
	var pc struct{ Code string }
	_ = json.Unmarshal(b, &pc)
	resp, b := e.Do(t, ctx, "POST", "/api/v1/pair", "", "application/json", []byte(`{"code":"`+pc.Code+`","name":"screen"}`))
	var paired struct{ Token string }
	if err := json.Unmarshal(b, &paired); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("pair: %d %s", resp.StatusCode, b)
	}
	type current struct {
		Classroom string `json:"classroom_id"`
		Name      string `json:"classroom_name"`
		Session   *struct{ ID string }
		Terminal  string `json:"terminal_token"`
		Assistant string `json:"assistant_token"`
		Code      string `json:"assistant_code"`
		QR        string `json:"assistant_qr"`
	}
	get := func(tok string) (int, current) {
		resp, b := e.Do(t, ctx, "GET", "/api/v1/classroom/current", tok, "", nil)
		var c current
		_ = json.Unmarshal(b, &c)
		return resp.StatusCode, c
	}
	if code, _ := get("not-a-token"); code != http.StatusUnauthorized {
		t.Fatalf("stranger: %d", code)
	}
	if code, _ := get(s.Tokens.Master); code != http.StatusUnauthorized {
		t.Fatalf("a session token is not a paired terminal's: %d", code)
	}
	// The big screen gets its terminal token and the code for the
	// assistant's device, never the assistant token (the whole class sees
	// the big screen; issue 14, finding 10).
	code, c := get(paired.Token)
	if code != http.StatusOK || c.Session == nil || c.Session.ID != s.ID || c.Classroom != cid || c.Name != "Room 1" || c.Terminal == "" || c.Assistant != "" || len(c.Code) != 6 || !strings.HasPrefix(c.QR, "data:image/png;base64,") {
		t.Fatalf("current: %d %+v", code, c)
	}
	if _, again := get(paired.Token); again.Terminal != c.Terminal || again.Code != c.Code {
		t.Fatal("token or code changed between polls")
	}
	for role, tok := range map[string]string{"terminal": c.Terminal} {
		_, w := dialCtl(t, ctx, e, tok)
		if w.str("role") != role || w.str("classroom_id") != cid || w.str("session_id") != s.ID {
			t.Fatalf("%s token: %v", role, w)
		}
	}
	if resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions/"+s.ID+"/end", e.admin, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("end: %d %s", resp.StatusCode, b)
	}
	if _, c := get(paired.Token); c.Session != nil {
		t.Fatalf("an ended session is still current: %+v", c)
	}
}
