package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/gorilla/websocket"
)

// bins holds the binaries TestMain builds once for all tests.
type bins struct{ edged, classterm, cityhub string }

var built bins // set once in TestMain before any test runs, read-only after

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "campusedge-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// A race-built test run builds the binaries with -race too, so that a
	// data race in edged makes it exit 66 and fails the exit-status checks
	// (and the avahi tests' "DATA RACE" check).
	bs, err := bintest.Build(context.Background(), dir, bintest.LikeThisTest(), bintest.Cmd("edged"), bintest.Cmd("classterm"), bintest.Cmd("cityhub"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	built = bins{edged: bs[0], classterm: bs[1], cityhub: bs[2]}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running binary whose stderr is captured line by line; its
// methods fail the test instead of returning errors.
type proc struct{ *bintest.Process }

func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	return &proc{bintest.Launch(t, bin, args...)}
}

func (p *proc) logs() string { return p.Logs() }

// waitLine waits for a log line matching re.
func (p *proc) waitLine(t *testing.T, re *regexp.Regexp, within time.Duration) []string {
	t.Helper()
	m, err := p.WaitLine(re, within)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// wait waits for exit and returns the exit code.
func (p *proc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	code, err := p.Wait(within)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

var listeningRE = bintest.ListeningRE

// edge is a running edged.
type edge struct {
	*proc
	data, url, token string
}

func startEdge(t *testing.T, data, listen string) *edge {
	t.Helper()
	// HTTPS on a free port: a restart reuses a fixed -listen port, and the
	// default HTTPS port (8443) would collide with other packages' tests.
	p := start(t, built.edged, "-data", data, "-listen", listen, "-https-listen", "127.0.0.1:0", "-mdns=false")
	m := p.waitLine(t, listeningRE, 10*time.Second)
	tok, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	return &edge{proc: p, data: data, url: "http://" + m[1], token: strings.TrimSpace(string(tok))}
}

// call does one API call; token "" sends none.
func call(t *testing.T, method, url, token string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, url, data, err)
		}
	}
	return res.StatusCode
}

type classroom struct {
	ID, Name string
	RoomCode string `json:"room_code"`
}

func (e *edge) classroom(t *testing.T, name, room string) classroom {
	t.Helper()
	var c classroom
	if code := call(t, "POST", e.url+"/api/v1/classrooms", e.token, map[string]string{"name": name, "room_code": room}, &c); code != 201 {
		t.Fatalf("create classroom: %d", code)
	}
	return c
}

func (e *edge) pairingCode(t *testing.T, classroomID string) string {
	t.Helper()
	var r struct{ Code string }
	if code := call(t, "POST", e.url+"/api/v1/classrooms/"+classroomID+"/pairing-codes", e.token, nil, &r); code != 201 {
		t.Fatalf("pairing code: %d", code)
	}
	return r.Code
}

type terminal struct {
	ID          string `json:"id"`
	ClassroomID string `json:"classroom_id"`
	Online      bool   `json:"online"`
	Version     string `json:"version"`
	Addr        string `json:"addr"`
	LastSeen    string `json:"last_seen"`
}

// watcher is an admin control connection: the console's view of events.
type watcher struct {
	ws     *websocket.Conn
	online map[string]bool
}

func (e *edge) watch(t *testing.T) *watcher {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(strings.Replace(e.url, "http", "ws", 1)+"/api/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	if err := ws.WriteJSON(map[string]any{"type": "hello", "v": 1, "token": e.token}); err != nil {
		t.Fatal(err)
	}
	return &watcher{ws: ws, online: map[string]bool{}}
}

// until reads snapshot and events until cond holds on the online map.
func (w *watcher) until(t *testing.T, within time.Duration, what string, cond func(online map[string]bool) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond(w.online) {
		_ = w.ws.SetReadDeadline(deadline)
		var m struct {
			Type      string     `json:"type"`
			Kind      string     `json:"kind"`
			Terminal  *terminal  `json:"terminal"`
			Terminals []terminal `json:"terminals"`
			Code      string     `json:"code"`
			Message   string     `json:"message"`
		}
		if err := w.ws.ReadJSON(&m); err != nil {
			t.Fatalf("waiting for %s: %v (state %v)", what, err, w.online)
		}
		switch m.Type {
		case "snapshot":
			for _, tm := range m.Terminals {
				w.online[tm.ID] = tm.Online
			}
		case "event":
			if m.Kind == "terminal" {
				w.online[m.Terminal.ID] = m.Terminal.Online
			}
		case "error":
			t.Fatalf("watcher refused: %s %s", m.Code, m.Message)
		}
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}
