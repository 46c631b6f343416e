package appliance_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/campusedge/campusedge/edge/api"
)

// TestUnpairClosesConnectionAndToken: a paired terminal connected on the
// control channel, and in a class with the class token the edge gave it,
// is unpaired by a signed-in admin; both connections close within 1 s,
// its token gets 401 afterwards (on the API and on a new control
// connection), the class token is refused too, and the audit log names
// who did it.
func TestUnpairClosesConnectionAndToken(t *testing.T) {
	e, callers := startPermEdge(t)
	var pr api.PairResponse
	var code struct{ Code string }
	e.must("POST", "/api/v1/classrooms/"+e.classroom+"/pairing-codes", nil, callers["admin token"], 201, &code)
	e.must("POST", "/api/v1/pair", map[string]string{"code": code.Code, "name": "agent", "version": "test"}, caller{name: "anonymous"}, 201, &pr)
	screen := caller{name: "terminal", bearer: pr.Token}
	// The screen's page joins the class in progress with the class token
	// the edge gives this terminal.
	var cur struct {
		Terminal string `json:"terminal_token"`
	}
	e.must("GET", "/api/v1/classroom/current", nil, screen, 200, &cur)
	if cur.Terminal == "" {
		t.Fatal("no class token for the paired screen")
	}
	class := dialTerminal(t, e, cur.Terminal)
	defer class.Close()
	_ = class.SetReadDeadline(time.Now().Add(5 * time.Second))
	var cw map[string]any
	if err := class.ReadJSON(&cw); err != nil || cw["type"] != "welcome" || cw["role"] != "terminal" || cw["session_id"] != e.session {
		t.Fatalf("class connection: %v %v", cw, err)
	}
	_ = class.SetReadDeadline(time.Time{})
	classClosed := make(chan time.Time, 1)
	go func() {
		for {
			if _, _, err := class.ReadMessage(); err != nil {
				classClosed <- time.Now()
				return
			}
		}
	}()

	ws := dialTerminal(t, e, pr.Token)
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var welcome map[string]any
	if err := ws.ReadJSON(&welcome); err != nil || welcome["type"] != "welcome" || welcome["role"] != "terminal" {
		t.Fatalf("terminal hello: %v %v", welcome, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	closed := make(chan time.Time, 1)
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				closed <- time.Now()
				return
			}
		}
	}()

	start := time.Now()
	var out struct {
		ConnectionsClosed int `json:"connections_closed"`
	}
	e.must("DELETE", "/api/v1/terminals/"+pr.TerminalID, nil, callers["admin"], 200, &out)
	select {
	case at := <-closed:
		d := at.Sub(start)
		t.Logf("control connection closed %v after the unpair call began", d)
		if d > time.Second {
			t.Errorf("control connection closed after %v, want within 1 s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("control connection still open 5 s after unpairing")
	}
	select {
	case at := <-classClosed:
		if d := at.Sub(start); d > time.Second {
			t.Errorf("the class connection closed after %v, want within 1 s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the class connection with the screen's class token still open 5 s after unpairing")
	}
	if out.ConnectionsClosed != 2 {
		t.Errorf("connections_closed %d, want 2 (the terminal's own and its class connection)", out.ConnectionsClosed)
	}
	// The class token is revoked too.
	ws3 := dialTerminal(t, e, cur.Terminal)
	defer ws3.Close()
	_ = ws3.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m3 map[string]any
	if err := ws3.ReadJSON(&m3); err != nil || m3["type"] != "error" || m3["code"] != "unauthorized" {
		t.Errorf("control connection with the revoked class token: %v %v", m3, err)
	}
	if code, body := e.do("GET", "/api/v1/classroom/current", nil, screen); code != http.StatusUnauthorized {
		t.Errorf("the unpaired token got %d %s, want 401", code, body)
	}
	// A new control connection with the old token is refused.
	ws2 := dialTerminal(t, e, pr.Token)
	defer ws2.Close()
	_ = ws2.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m map[string]any
	if err := ws2.ReadJSON(&m); err != nil || m["type"] != "error" || m["code"] != "unauthorized" {
		t.Errorf("control connection with the unpaired token: %v %v", m, err)
	}
	// The audit log has it, by the signed-in admin.
	var audit struct {
		Entries []struct{ Actor, Action, Target string }
	}
	e.must("GET", "/api/v1/audit", nil, callers["admin token"], 200, &audit)
	found := false
	for _, a := range audit.Entries {
		found = found || (a.Action == "terminal.unpair" && a.Target == pr.TerminalID && a.Actor == "a.admin")
	}
	if !found {
		t.Errorf("no terminal.unpair entry by a.admin in %+v", audit.Entries)
	}
}

func dialTerminal(t *testing.T, e *permEdge, tok string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(e.url, "http")+"/api/v1/ws", h)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteJSON(map[string]any{"type": "hello", "v": 1, "name": "agent"}); err != nil {
		t.Fatal(err)
	}
	return ws
}
