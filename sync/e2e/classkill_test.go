package e2e

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

var classKills = flag.Int("class-kills", 8, "kill -9 rounds in TestKill9AtClassStartLosesNoAck (more for a longer soak)")

// wsReq is a control-channel client as classterm's page (class.js) is: one
// request at a time, the reply matched by id, a not_saved refusal sent
// again with backoff (at most 8 times).
type wsReq struct {
	ws   *websocket.Conn
	n    int
	msgs chan map[string]any
	done chan struct{}
}

func dialWS(ctx context.Context, baseURL, token string) (*wsReq, map[string]any, error) {
	d := websocket.Dialer{HandshakeTimeout: 3 * time.Second}
	ws, _, err := d.DialContext(ctx, "ws"+strings.TrimPrefix(baseURL, "http")+"/api/v1/ws", nil)
	if err != nil {
		return nil, nil, err
	}
	c := &wsReq{ws: ws, msgs: make(chan map[string]any, 256), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var m map[string]any
			if json.Unmarshal(data, &m) == nil {
				select {
				case c.msgs <- m:
				default: // states nobody reads: dropped
				}
			}
		}
	}()
	w, err := c.request(ctx, map[string]any{"type": "hello", "token": token})
	if err == nil && w["type"] != "welcome" {
		err = fmt.Errorf("hello: %v", w)
	}
	if err != nil {
		_ = ws.Close()
		return nil, nil, err
	}
	return c, w, nil
}

// request sends m and waits for its reply (the message carrying its id),
// sending it again after not_saved.
func (c *wsReq) request(ctx context.Context, m map[string]any) (map[string]any, error) {
	return c.requestTries(ctx, m, 8)
}

// requestOnce is request without retries.
func (c *wsReq) requestOnce(ctx context.Context, m map[string]any) (map[string]any, error) {
	return c.requestTries(ctx, m, 0)
}

func (c *wsReq) requestTries(ctx context.Context, m map[string]any, retries int) (map[string]any, error) {
	for attempt := 0; ; attempt++ {
		c.n++
		id := fmt.Sprintf("r%d", c.n)
		m["id"], m["v"] = id, 1
		_ = c.ws.SetWriteDeadline(time.Now().Add(3 * time.Second))
		if err := c.ws.WriteJSON(m); err != nil {
			return nil, err
		}
		r, err := c.reply(ctx, id)
		if err != nil {
			return nil, err
		}
		if r["type"] == "error" && r["code"] == "not_saved" && attempt < retries {
			time.Sleep(time.Duration(200<<min(attempt, 4)) * time.Millisecond)
			continue
		}
		return r, nil
	}
}

func (c *wsReq) reply(ctx context.Context, id string) (map[string]any, error) {
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case m := <-c.msgs:
			if m["id"] == id {
				return m, nil
			}
		case <-c.done:
			return nil, errors.New("connection closed")
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
			return nil, errors.New("no reply")
		}
	}
}

// next waits for a message of type typ the edge sends by itself.
func (c *wsReq) next(ctx context.Context, typ string) (map[string]any, error) {
	for {
		select {
		case m := <-c.msgs:
			if m["type"] == typ {
				return m, nil
			}
		case <-c.done:
			return nil, errors.New("connection closed")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// acked is what the edge acknowledged, keyed as the hub's record shows it.
type acked struct {
	mu   sync.Mutex
	keys map[string]string // key -> what, for the report
}

func (a *acked) add(key, what string) {
	a.mu.Lock()
	a.keys[key] = what
	a.mu.Unlock()
}

// TestKill9AtClassStartLosesNoAck: a real edged, enrolled with a real
// cityhub, is killed with SIGKILL at a random moment while a class starts
// in 40 classrooms: each room's terminal joins and answers the master's
// quiz, each room's assistant joins and marks two students. Every join,
// mark, answer and quiz push the edge acknowledged before a kill is,
// after the restarts, in the hub's records (cityhub export-records): zero
// lost. -class-kills sets the rounds (8 by default, for CI time).
func TestKill9AtClassStartLosesNoAck(t *testing.T) {
	const rooms = 40
	e, _, _ := startSyncedEdge(t)
	var csvRows strings.Builder
	csvRows.WriteString("student_id,name,homeroom,groups\n")
	for i := range rooms {
		fmt.Fprintf(&csvRows, "s%02da,学生%02d甲,K%02d,\ns%02db,学生%02d乙,K%02d,\n", i, i, i, i, i, i)
	}
	req, _ := http.NewRequest(http.MethodPut, e.url+"/api/v1/attendance/roster", strings.NewReader(csvRows.String()))
	req.Header.Set("Authorization", "Bearer "+e.admin)
	req.Header.Set("Content-Type", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("roster import: %v %v", err, resp)
	}
	resp.Body.Close()
	var ids []string
	for i := range rooms {
		b := e.must(http.MethodPost, "/api/v1/classrooms", fmt.Sprintf(`{"name":"初一(%d)班","room_code":"K%02d"}`, i, i), http.StatusCreated)
		var c struct{ ID string }
		_ = json.Unmarshal([]byte(b), &c)
		ids = append(ids, c.ID)
	}
	ack := &acked{keys: map[string]string{}}
	kills := *classKills
	for round := 0; round <= kills; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		n := e.classStart(t, ctx, round, ids, ack, round < kills)
		cancel()
		t.Logf("round %d: %d acknowledged so far", round, n)
	}
	// Drain, stop, and read what the hub holds.
	deadline := time.Now().Add(60 * time.Second)
	for s := getStatus(t, e.url, e.admin); s.Backlog != 0 || s.Link != "up"; s = getStatus(t, e.url, e.admin) {
		if time.Now().After(deadline) {
			t.Fatalf("backlog not drained: %+v", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.p.stop(t)
	e.hub.stop(t)
	rows, err := csv.NewReader(strings.NewReader(cli(t, "cityhub", "-data", e.hubDir, "export-records", "s9"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, r := range rows[1:] {
		var rec struct {
			Kind      string `json:"kind"`
			Session   string `json:"session_id"`
			Classroom string `json:"classroom_id"`
			Student   string `json:"student_id"`
			Data      struct {
				Participant string              `json:"participant"`
				QuizID      string              `json:"quiz_id"`
				Question    struct{ ID string } `json:"question"`
			} `json:"data"`
		}
		if json.Unmarshal([]byte(r[6]), &rec) != nil {
			continue
		}
		extra := map[string]string{"attendance.join": rec.Data.Participant, "quiz.answer": rec.Data.QuizID, "quiz.question": rec.Data.Question.ID}[rec.Kind]
		have[recordKey(rec.Kind, rec.Session, rec.Classroom, rec.Student, extra)] = true
	}
	lost := 0
	counts := map[string]int{}
	for k, what := range ack.keys {
		counts[what]++
		if !have[k] {
			lost++
			if lost <= 10 {
				t.Errorf("acknowledged %s never reached the hub: %s", what, k)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged operations lost over %d kills", lost, len(ack.keys), kills)
	}
	t.Logf("%d kills: every acknowledged operation reached the hub: %v (hub holds %d records)", kills, counts, len(rows)-1)
}

func recordKey(kind, session, classroom, student, extra string) string {
	return strings.Join([]string{kind, session, classroom, student, extra}, "|")
}

// classStart starts a class in every room and, with kill, kills edged at a
// random moment (50 ms to 1.5 s in) and starts it again. It returns how
// many operations the edge has acknowledged so far.
func (e *edgeAPI) classStart(t *testing.T, ctx context.Context, round int, ids []string, ack *acked, kill bool) int {
	body, _ := json.Marshal(map[string]any{"title": fmt.Sprintf("第%d节 语文", round+1), "classrooms": ids})
	b := e.must(http.MethodPost, "/api/v1/sessions", string(body), http.StatusCreated)
	var s struct {
		ID     string
		Tokens struct {
			Master     string `json:"master"`
			Classrooms map[string]struct {
				Assistant string `json:"assistant"`
				Terminal  string `json:"terminal"`
			} `json:"classrooms"`
		} `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(b), &s); err != nil {
		t.Fatal(err)
	}
	url := e.url
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	qid := fmt.Sprintf("q%d", round)
	joinAs := func(token string) (*wsReq, bool) {
		c, w, err := dialWS(ctx, url, token)
		if err != nil {
			return nil, false
		}
		r, err := c.request(ctx, map[string]any{"type": "join", "name": "room"})
		if err != nil || r["type"] != "ack" {
			_ = c.ws.Close()
			return nil, false
		}
		if g, _ := w["classroom_id"].(string); g != "" {
			pid, _ := w["participant_id"].(string)
			ack.add(recordKey("attendance.join", s.ID, g, "", pid), "join")
		}
		return c, true
	}
	wg.Add(1)
	go func() { // the master pushes a quiz once the rooms are arriving
		defer wg.Done()
		c, ok := joinAs(s.Tokens.Master)
		if !ok {
			return
		}
		defer c.ws.Close()
		time.Sleep(100 * time.Millisecond)
		r, err := c.request(ctx, map[string]any{"type": "quiz", "question": map[string]any{"id": qid, "kind": "single", "prompt": "2+2?", "options": []string{"3", "4"}, "correct": []int{1}}})
		if err == nil && r["type"] == "ack" {
			ack.add(recordKey("quiz.question", s.ID, "", "", qid), "quiz push")
		}
		if !kill {
			time.Sleep(3 * time.Second) // answers arrive; then the class ends
		}
	}()
	for i, cid := range ids {
		tok := s.Tokens.Classrooms[cid]
		wg.Add(2)
		go func() { // the room's terminal joins and answers
			defer wg.Done()
			c, ok := joinAs(tok.Terminal)
			if !ok {
				return
			}
			defer c.ws.Close()
			if _, err := c.next(ctx, "quiz"); err != nil {
				return
			}
			r, err := c.request(ctx, map[string]any{"type": "quiz_answer", "quiz_id": qid, "choices": []int{i % 2}})
			if err == nil && r["type"] == "ack" {
				ack.add(recordKey("quiz.answer", s.ID, cid, "", qid), "answer")
			}
		}()
		go func() { // the room's assistant joins and marks two students
			defer wg.Done()
			c, ok := joinAs(tok.Assistant)
			if !ok {
				return
			}
			defer c.ws.Close()
			for j, st := range []string{fmt.Sprintf("s%02da", i), fmt.Sprintf("s%02db", i)} {
				r, err := c.request(ctx, map[string]any{"type": "mark", "student_id": st, "status": []string{"present", "late"}[j]})
				if err != nil {
					return
				}
				if r["type"] == "ack" {
					ack.add(recordKey("attendance.mark", s.ID, cid, st, ""), "mark")
				} else {
					t.Errorf("mark %s: %v", st, r)
				}
			}
		}()
	}
	if kill {
		time.Sleep(time.Duration(50+rand.IntN(1450)) * time.Millisecond)
		e.kill9AndRestart()
		cancel()
	}
	wg.Wait()
	ack.mu.Lock()
	defer ack.mu.Unlock()
	return len(ack.keys)
}
