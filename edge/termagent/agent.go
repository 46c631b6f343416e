// Package termagent is the classroom terminal's side of the foundation: it
// finds the edge (DNS-SD or an explicit URL), pairs with a one-time code,
// keeps the credential on disk, and holds the WebSocket control connection,
// coming back by itself with backoff and jitter whenever the edge restarts.
package termagent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/campusedge/campusedge/edge/discovery"
	"github.com/campusedge/campusedge/edge/wire"
)

// StateFile is the credential file under the terminal's data dir.
const StateFile = "terminal.json"

// State is what a paired terminal remembers.
type State struct {
	EdgeURL     string `json:"edge_url"`
	EdgeID      string `json:"edge_id"`
	TerminalID  string `json:"terminal_id"`
	ClassroomID string `json:"classroom_id"`
	Token       string `json:"token"`
}

// LoadState reads DATA/terminal.json; os.ErrNotExist means not paired.
func LoadState(dataDir string) (State, error) {
	var s State
	data, err := os.ReadFile(filepath.Join(dataDir, StateFile))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("%s is damaged (%v): pair again with -pair CODE", filepath.Join(dataDir, StateFile), err)
	}
	if s.Token == "" || s.EdgeURL == "" {
		return s, fmt.Errorf("%s is incomplete: pair again with -pair CODE", filepath.Join(dataDir, StateFile))
	}
	return s, nil
}

// SaveState writes the credential atomically with mode 0600.
func SaveState(dataDir string, s State) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dataDir, StateFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("save credential: %w", err)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("save credential %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save credential: %w", err)
	}
	return nil
}

// Discover finds an edge by DNS-SD within timeout. If wantID is set, only
// that edge is accepted (a paired terminal looking for its edge again).
func Discover(ctx context.Context, log *slog.Logger, iface, wantID string, timeout time.Duration) (discovery.Found, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		f, err := discovery.Browse(ctx, discovery.BrowseOptions{Interface: iface, EdgeID: wantID, Logger: log})
		if err != nil {
			return f, fmt.Errorf("no CampusEdge edge answered on the LAN within %s (multicast may not cross this VLAN: pass -edge http://EDGE:8080): %w", timeout, err)
		}
		if wantID == "" || f.Info.EdgeID == wantID {
			return f, nil
		}
		log.Debug("ignoring another school's edge", "edge_id", f.Info.EdgeID, "want", wantID)
		select {
		case <-ctx.Done():
			return f, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// PairError is the edge's refusal, with its error code.
type PairError struct {
	Status  int
	Code    string
	Message string
}

func (e *PairError) Error() string { return fmt.Sprintf("pairing refused (%s): %s", e.Code, e.Message) }

// Pair trades a pairing code for a credential.
func Pair(ctx context.Context, edgeURL, code, name, version string) (State, error) {
	body, _ := json.Marshal(map[string]string{"code": code, "name": name, "version": version})
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(edgeURL, "/")+"/api/v1/pair", bytes.NewReader(body))
	if err != nil {
		return State{}, fmt.Errorf("pair: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return State{}, fmt.Errorf("pair: cannot reach the edge at %s: %w", edgeURL, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return State{}, fmt.Errorf("pair: read answer: %w", err)
	}
	if res.StatusCode != http.StatusCreated {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		return State{}, &PairError{Status: res.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	var r struct {
		TerminalID  string `json:"terminal_id"`
		Token       string `json:"token"`
		EdgeID      string `json:"edge_id"`
		ClassroomID string `json:"classroom_id"`
	}
	if err := json.Unmarshal(data, &r); err != nil || r.Token == "" || r.TerminalID == "" {
		return State{}, fmt.Errorf("pair: the edge sent an unusable answer (%v)", err)
	}
	return State{EdgeURL: strings.TrimRight(edgeURL, "/"), EdgeID: r.EdgeID, TerminalID: r.TerminalID, ClassroomID: r.ClassroomID, Token: r.Token}, nil
}

// Agent holds the control connection of a paired terminal.
type Agent struct {
	State   State
	DataDir string
	Version string
	Name    string
	// Rediscover, when set, is used to find the edge again by DNS-SD after
	// repeated failures at the stored URL (the edge's address changed).
	Rediscover func(ctx context.Context, edgeID string) (string, error)
	Log        *slog.Logger
	// OnConnected and OnDisconnected observe the connection (tests, UI).
	OnConnected    func(w wire.Welcome)
	OnDisconnected func(err error)
	// OnSession, if set, is called after each welcome with a send function
	// valid for that connection (ctx ends with it); OnMessage sees every
	// other message from the edge. Both must not block: long work (a
	// firmware download) runs in its own goroutine.
	OnSession func(ctx context.Context, send func(v any) error)
	OnMessage func(hdr wire.Header, data []byte)
}

// Backoff bounds: first retry after ~0.5 s, never more than 15 s apart, so
// 40 classrooms come back within seconds of an edge restart without all
// knocking at the same instant.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 15 * time.Second
)

// Run keeps the terminal connected until ctx ends. It returns only for ctx
// or for a credential the edge no longer accepts (pair again).
func (a *Agent) Run(ctx context.Context) error {
	failures := 0
	for {
		connected, err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var ue *unauthorizedError
		if errors.As(err, &ue) {
			return fmt.Errorf("the edge no longer accepts this terminal's credential (%s): pair again with -pair CODE", ue.msg)
		}
		if connected {
			failures = 0
		}
		failures++
		if a.OnDisconnected != nil {
			a.OnDisconnected(err)
		}
		if failures%6 == 0 && a.Rediscover != nil {
			if u, derr := a.Rediscover(ctx, a.State.EdgeID); derr == nil && u != a.State.EdgeURL {
				a.Log.Info("edge found at a new address", "url", u)
				a.State.EdgeURL = u
				if err := SaveState(a.DataDir, a.State); err != nil {
					a.Log.Warn("could not save the new edge address", "err", err)
				}
			}
		}
		d := min(backoffMax, backoffMin<<min(failures-1, 10))
		d = d/2 + rand.N(d/2+1) // jitter: spread reconnects of many terminals
		a.Log.Info("control connection lost; retrying", "err", err, "in", d.Round(time.Millisecond), "attempt", failures)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

type unauthorizedError struct{ msg string }

func (e *unauthorizedError) Error() string { return "unauthorized: " + e.msg }

// WSURL turns the edge's base URL into the control channel URL.
func WSURL(edgeURL string) (string, error) {
	u, err := url.Parse(edgeURL)
	if err != nil {
		return "", fmt.Errorf("edge URL %q: %w", edgeURL, err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("edge URL %q must be http or https", edgeURL)
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/api/v1/ws"
	return u.String(), nil
}

// session runs one connection; connected reports whether it got welcomed.
func (a *Agent) session(ctx context.Context) (connected bool, err error) {
	wsURL, err := WSURL(a.State.EdgeURL)
	if err != nil {
		return false, err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.DialContext(dctx, wsURL, nil)
	cancel()
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", wsURL, err)
	}
	defer ws.Close()
	ws.SetReadLimit(wire.MaxMessageBytes)
	stop := context.AfterFunc(ctx, func() { _ = ws.Close() })
	defer stop()

	hello := wire.Hello{Header: wire.New(wire.TypeHello), Token: a.State.Token, Name: a.Name, Version: a.Version}
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteJSON(hello); err != nil {
		return false, fmt.Errorf("send hello: %w", err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := ws.ReadMessage()
	if err != nil {
		return false, fmt.Errorf("await welcome: %w", err)
	}
	hdr, err := wire.Decode(data)
	if err != nil {
		return false, err
	}
	if hdr.Type == wire.TypeError {
		var e wire.Error
		_ = json.Unmarshal(data, &e)
		if e.Code == "unauthorized" {
			return false, &unauthorizedError{msg: e.Message}
		}
		return false, fmt.Errorf("edge refused: %s: %s", e.Code, e.Message)
	}
	var w wire.Welcome
	if hdr.Type != wire.TypeWelcome || json.Unmarshal(data, &w) != nil {
		return false, fmt.Errorf("expected welcome, got %q", hdr.Type)
	}
	if a.State.EdgeID != "" && w.EdgeID != a.State.EdgeID {
		return false, fmt.Errorf("the edge at %s is %s, not this terminal's edge %s", a.State.EdgeURL, w.EdgeID, a.State.EdgeID)
	}
	a.Log.Info("connected", "edge", w.EdgeID, "terminal", w.TerminalID, "classroom", w.Classroom)
	if a.OnConnected != nil {
		a.OnConnected(w)
	}
	hb := time.Duration(max(w.HeartbeatSeconds, 1)) * time.Second
	deadline := 3*hb + 5*time.Second
	_ = ws.SetReadDeadline(time.Now().Add(deadline))
	ws.SetPingHandler(func(p string) error {
		_ = ws.SetReadDeadline(time.Now().Add(deadline))
		return ws.WriteControl(websocket.PongMessage, []byte(p), time.Now().Add(5*time.Second))
	})
	if a.OnSession != nil {
		// gorilla allows one concurrent writer (control frames aside).
		var wmu sync.Mutex
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		a.OnSession(sctx, func(v any) error {
			if sctx.Err() != nil {
				return sctx.Err()
			}
			wmu.Lock()
			defer wmu.Unlock()
			_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
			return ws.WriteJSON(v)
		})
	}
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return true, fmt.Errorf("connection ended: %w", err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(deadline))
		if hdr, err := wire.Decode(data); err == nil {
			a.Log.Debug("control message", "type", hdr.Type)
			if a.OnMessage != nil {
				a.OnMessage(hdr, data)
			}
		}
	}
}
