package classroom_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The quiz benchmark is opt-in:
//
//	go test -run TestBenchQuiz -v ./classroom/ -quiz.bench
//
// A real edge in this process, a master teacher and 40 classroom terminals
// on real WebSockets. Per round the master pushes a question; once every
// terminal shows it, all 40 answer at once; the figure is the time from the
// last answer leaving its terminal to the master receiving results that
// count all 40. The peer in the same run: 40 clients sending one message
// each at once to a bare WebSocket echo server on the same loopback, timed
// from the last send to the last echo received (no edge work at all).
var (
	quizBench       = flag.Bool("quiz.bench", false, "run the quiz benchmark (TestBenchQuiz)")
	quizBenchRooms  = flag.Int("quiz.rooms", 40, "classrooms answering in -quiz.bench")
	quizBenchRounds = flag.Int("quiz.rounds", 40, "quizzes pushed in -quiz.bench")
)

type benchConn struct {
	ws  *websocket.Conn
	wmu sync.Mutex
	in  chan benchMsg
}

type benchMsg struct {
	at time.Time
	m  map[string]any
}

func dialBench(t *testing.T, ctx context.Context, url, token string) *benchConn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	c := &benchConn{ws: ws, in: make(chan benchMsg, 1024)}
	go func() {
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				close(c.in)
				return
			}
			at := time.Now()
			var m map[string]any
			if json.Unmarshal(data, &m) == nil {
				c.in <- benchMsg{at, m}
			}
		}
	}()
	if token != "" {
		c.send(t, map[string]any{"type": "hello", "v": 1, "token": token})
		c.next(t, "welcome", func(m map[string]any) bool { return m["type"] == "welcome" })
		c.send(t, map[string]any{"type": "join", "v": 1, "id": "j"})
		c.next(t, "join ack", func(m map[string]any) bool { return m["id"] == "j" })
	}
	return c
}

func (c *benchConn) send(t *testing.T, v any) time.Time {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteJSON(v); err != nil {
		t.Errorf("send: %v", err)
	}
	return time.Now()
}

func (c *benchConn) next(t *testing.T, what string, pred func(map[string]any) bool) benchMsg {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-c.in:
			if !ok {
				t.Fatalf("connection closed waiting for %s", what)
			}
			if pred(m.m) {
				return m
			}
		case <-timeout:
			t.Fatalf("no %s within 10 s", what)
		}
	}
}

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func TestBenchQuiz(t *testing.T) {
	if !*quizBench {
		t.Skip("opt-in: -quiz.bench")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	e := startEdge(t, ctx)
	n := *quizBenchRooms
	s := e.createClass(t, ctx, "Quiz benchmark", n)
	wsURL := "ws" + strings.TrimPrefix(e.url, "http") + "/api/v1/ws"
	master := dialBench(t, ctx, wsURL, s.Tokens.Master)
	rooms := make([]*benchConn, n)
	for i, cid := range s.Classrooms {
		rooms[i] = dialBench(t, ctx, wsURL, s.Tokens.Classrooms[cid].Terminal)
	}
	var lat []time.Duration
	for r := range *quizBenchRounds {
		id := fmt.Sprintf("q%d", r)
		master.send(t, map[string]any{"type": "quiz", "v": 1, "question": map[string]any{"id": id, "kind": "single", "prompt": "?", "options": []string{"a", "b", "c", "d"}, "correct": []int{r % 4}}})
		for _, c := range rooms {
			c.next(t, "quiz", func(m map[string]any) bool { return m["type"] == "quiz" })
		}
		time.Sleep(300 * time.Millisecond) // past the push's own results flush
		var wg sync.WaitGroup
		sent := make([]time.Time, n)
		start := make(chan struct{})
		for i, c := range rooms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				sent[i] = c.send(t, map[string]any{"type": "quiz_answer", "v": 1, "quiz_id": id, "choices": []int{i % 4}})
			}()
		}
		close(start)
		wg.Wait()
		last := slices.MaxFunc(sent, func(a, b time.Time) int { return a.Compare(b) })
		got := master.next(t, "results of "+id, func(m map[string]any) bool {
			res, _ := m["results"].(map[string]any)
			return m["type"] == "quiz_results" && res["quiz_id"] == id && res["answered"] == float64(n)
		})
		lat = append(lat, got.at.Sub(last))
		for _, c := range rooms { // drain acks
			c.next(t, "ack", func(m map[string]any) bool { return m["type"] == "ack" || m["type"] == "error" })
		}
	}

	// Peer: a bare WebSocket echo server on the same loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := websocket.Upgrader{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			mt, data, err := ws.ReadMessage()
			if err != nil || ws.WriteMessage(mt, data) != nil {
				return
			}
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	echo := make([]*benchConn, n)
	for i := range echo {
		echo[i] = dialBench(t, ctx, "ws://"+ln.Addr().String()+"/", "")
	}
	var peer []time.Duration
	for range *quizBenchRounds {
		var wg sync.WaitGroup
		sent := make([]time.Time, n)
		recv := make([]time.Time, n)
		start := make(chan struct{})
		for i, c := range echo {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				sent[i] = c.send(t, map[string]any{"type": "quiz_answer", "v": 1, "quiz_id": "q", "choices": []int{i % 4}})
				recv[i] = c.next(t, "echo", func(map[string]any) bool { return true }).at
			}()
		}
		close(start)
		wg.Wait()
		cmp := func(a, b time.Time) int { return a.Compare(b) }
		peer = append(peer, slices.MaxFunc(recv, cmp).Sub(slices.MaxFunc(sent, cmp)))
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("quiz: %d classrooms × %d rounds; last answer → teacher's results: p50 %v p99 %v (results are throttled to one message per 250 ms per quiz)",
		n, len(lat), pct(lat, .5).Round(100*time.Microsecond), pct(lat, .99).Round(100*time.Microsecond))
	t.Logf("peer: bare WebSocket echo, %d clients at once, last send → last echo: p50 %v p99 %v",
		n, pct(peer, .5).Round(10*time.Microsecond), pct(peer, .99).Round(10*time.Microsecond))
	t.Logf("ratio p50 %.1fx, p99 %.1fx", float64(pct(lat, .5))/float64(pct(peer, .5)), float64(pct(lat, .99))/float64(pct(peer, .99)))
	if p := pct(lat, .99); p > 3*time.Second {
		t.Errorf("p99 %v: results must be on the teacher's screen within 3 s", p)
	}
}
