// Package termagent is the classroom terminal's side of the foundation: it
// finds the edge (DNS-SD or an explicit URL), pairs with a one-time code,
// keeps the credential on disk, and holds the WebSocket control connection,
// coming back by itself with backoff and jitter whenever the edge restarts.
package termagent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/ctlwire"
	"github.com/campusedge/campusedge/edge/discovery"
	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/pairing"
)

// StateFile is the credential file under the terminal's data dir.
const StateFile = "terminal.json"

// State is what a paired terminal remembers.
type State struct {
	EdgeURL string `json:"edge_url"`
	// EdgePin is the pin (see Pin) of the edge's TLS key, learnt at
	// pairing and bound to the pairing code; every https connection must
	// present this key.
	EdgePin     string `json:"edge_pin,omitempty"`
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
	if strings.HasPrefix(s.EdgeURL, "https:") && s.EdgePin == "" {
		return s, fmt.Errorf("%s has an https edge but no key pin: pair again with -pair CODE", filepath.Join(dataDir, StateFile))
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
	// Temp file, fsync, rename, directory fsync: a power cut keeps the old
	// credential or the new one.
	if err := fsutil.WriteFileAtomic(filepath.Join(dataDir, StateFile), data, 0o600); err != nil {
		return fmt.Errorf("save credential: %w", err)
	}
	return nil
}

// Discover finds an edge within timeout as Find does with its defaults
// (mDNS, then unicast DNS-SD from /etc/resolv.conf, then the well-known
// name). If wantID is set, only that edge is accepted (a paired terminal
// looking for its edge again).
func Discover(ctx context.Context, log *slog.Logger, iface, wantID string, timeout time.Duration) (discovery.Found, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := Find(ctx, FindOptions{Iface: iface, WantID: wantID, Log: log})
	return r.Found, err
}

// PairError is the edge's refusal, with its error code.
type PairError struct {
	Status  int
	Code    string
	Message string
}

func (e *PairError) Error() string { return fmt.Sprintf("pairing refused (%s): %s", e.Code, e.Message) }

// Pair trades a pairing code for a credential. Over https it runs the
// code-bound key exchange (PairPAKE) and keeps the edge's pin; over http
// (HTTPSURL allows that for loopback only) it uses the plain request.
func Pair(ctx context.Context, edgeURL, code, name, version string) (State, error) {
	code = NormalizeCode(code)
	if !codeRE.MatchString(code) {
		return State{}, &PairError{Code: "invalid", Message: "the pairing code must be the 6 digits shown on the admin console"}
	}
	u, err := url.Parse(edgeURL)
	if err != nil {
		return State{}, fmt.Errorf("pair: edge URL %q: %w", edgeURL, err)
	}
	switch {
	case u.Scheme == "https":
		return PairPAKE(ctx, edgeURL, code, name, version)
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return pairPlain(ctx, edgeURL, code, name, version)
	default:
		return State{}, fmt.Errorf("pair: %s is not an https URL; pairing across the network needs https (the edge listens on port %d by default)", edgeURL, DefaultHTTPSPort)
	}
}

var codeRE = regexp.MustCompile(`^[0-9]{6}$`)

// pairPlain is the plain POST /api/v1/pair, for an edge on loopback.
func pairPlain(ctx context.Context, edgeURL, code, name, version string) (State, error) {
	body, _ := json.Marshal(map[string]string{"code": code, "name": name, "version": version})
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	data, status, err := postJSON(ctx, http.DefaultClient, strings.TrimRight(edgeURL, "/")+"/api/v1/pair", body)
	if err != nil {
		return State{}, err
	}
	if status != http.StatusCreated {
		return State{}, pairError(status, data)
	}
	var r pairing.Credential
	if err := json.Unmarshal(data, &r); err != nil || r.Token == "" || r.TerminalID == "" {
		return State{}, fmt.Errorf("pair: the edge sent an unusable answer (%v)", err)
	}
	return State{EdgeURL: strings.TrimRight(edgeURL, "/"), EdgeID: r.EdgeID, TerminalID: r.TerminalID, ClassroomID: r.ClassroomID, Token: r.Token}, nil
}

func postJSON(ctx context.Context, c *http.Client, u string, body []byte) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, 0, fmt.Errorf("pair: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("pair: cannot reach the edge at %s: %w", u, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return nil, 0, fmt.Errorf("pair: read answer: %w", err)
	}
	return data, res.StatusCode, nil
}

func pairError(status int, data []byte) *PairError {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	_ = json.Unmarshal(data, &e)
	if e.Error.Code == "" {
		e.Error.Code, e.Error.Message = "http_"+strconv.Itoa(status), http.StatusText(status)
	}
	return &PairError{Status: status, Code: e.Error.Code, Message: e.Error.Message}
}

// InterceptError is a pairing that failed in a way that means the
// certificate this terminal saw is not the edge's.
type InterceptError struct {
	SeenPin string // pin of the certificate this terminal was served
	EdgePin string // pin the edge says it serves ("" if unknown)
	Cause   error
}

func (e *InterceptError) Error() string {
	msg := fmt.Sprintf("pairing failed: the certificate this terminal sees (pin %s) is not the edge's", e.SeenPin)
	if e.EdgePin != "" && e.EdgePin != e.SeenPin {
		msg += fmt.Sprintf(" (the edge serves pin %s)", e.EdgePin)
	}
	msg += "; a device on the network may be intercepting: pair again on a trusted network or check with the IT admin"
	if e.Cause != nil {
		msg += " (" + e.Cause.Error() + ")"
	}
	return msg
}

func (e *InterceptError) Unwrap() error { return e.Cause }

// PairPAKE pairs over https with the code-bound key exchange of
// edge/pairing: the terminal learns the edge's key pin from the TLS
// handshake and proves, with the code, that the edge it talks to uses the
// same pin. A device that substitutes its own key makes the proofs fail;
// the error then says so (InterceptError). All requests go to the one key
// first seen (PinnedClient), and the credential comes sealed under the
// exchange's key.
func PairPAKE(ctx context.Context, edgeURL, code, name, version string) (State, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	u, err := url.Parse(edgeURL)
	if err != nil || u.Scheme != "https" {
		return State{}, fmt.Errorf("pair: %q is not an https edge URL", edgeURL)
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "443")
	}
	pin, err := FetchPin(ctx, hostport)
	if err != nil {
		return State{}, fmt.Errorf("pair: cannot reach the edge at %s: %w", edgeURL, err)
	}
	client := PinnedClient(pin)
	defer client.CloseIdleConnections()
	base := strings.TrimRight(edgeURL, "/")

	sid := make([]byte, pairing.SIDSize)
	if _, err := rand.Read(sid); err != nil {
		return State{}, fmt.Errorf("pair: %w", err)
	}
	party, err := pairing.NewParty(rand.Reader, true, code, pairing.ChannelID(pin), sid)
	if err != nil {
		return State{}, fmt.Errorf("pair: %w", err)
	}
	body, _ := json.Marshal(pairing.StartRequest{SID: pairing.Encode(sid), Share: pairing.Encode(party.Share())})
	data, status, err := postJSON(ctx, client, base+"/api/v1/pair/start", body)
	if err != nil {
		return State{}, err
	}
	if status != http.StatusOK {
		return State{}, pairError(status, data)
	}
	session, shares, edgePin, err := pairing.ParseStartResponse(data)
	if err != nil {
		return State{}, fmt.Errorf("pair: the edge's answer is unusable: %w", err)
	}
	sessions := make([]*pairing.Session, len(shares))
	confirm := make([]string, len(shares))
	for i, sh := range shares {
		if sessions[i], err = party.Finish(sh); err != nil {
			return State{}, fmt.Errorf("pair: the edge's answer is unusable: %w", err)
		}
		confirm[i] = pairing.Encode(sessions[i].MyTag())
	}
	// The proofs are sent even when the edge reports another pin: the edge
	// then counts this exchange as a wrong try, which an admin can see.
	body, _ = json.Marshal(pairing.FinishRequest{Session: session, Confirm: confirm, Name: name, Version: version})
	data, status, err = postJSON(ctx, client, base+"/api/v1/pair/finish", body)
	if err != nil {
		return State{}, err
	}
	if status != http.StatusCreated {
		perr := pairError(status, data)
		if edgePin != pin {
			return State{}, &InterceptError{SeenPin: pin, EdgePin: edgePin, Cause: perr}
		}
		if perr.Code == "pairing_code_wrong" {
			perr.Message = fmt.Sprintf("the edge did not accept the code: check the 6 digits; if they are right, compare this terminal's view of the edge's key (pin %s) with the fingerprint on the admin console: a device on the network may be intercepting", pin)
		}
		return State{}, perr
	}
	tag, sealed, err := pairing.ParseFinishResponse(data)
	if err != nil {
		return State{}, &InterceptError{SeenPin: pin, EdgePin: edgePin, Cause: err}
	}
	for _, sess := range sessions {
		if sess.VerifyPeer(tag) != nil {
			continue
		}
		plain, err := sess.Open(sealed)
		if err != nil {
			return State{}, &InterceptError{SeenPin: pin, EdgePin: edgePin, Cause: err}
		}
		var cred pairing.Credential
		if err := json.Unmarshal(plain, &cred); err != nil || cred.Token == "" || cred.TerminalID == "" {
			return State{}, fmt.Errorf("pair: the edge sent an unusable credential (%v)", err)
		}
		return State{EdgeURL: base, EdgePin: pin, EdgeID: cred.EdgeID, TerminalID: cred.TerminalID, ClassroomID: cred.ClassroomID, Token: cred.Token}, nil
	}
	return State{}, &InterceptError{SeenPin: pin, EdgePin: edgePin, Cause: errors.New("the edge's key confirmation does not match")}
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
	// Roots, when set (classterm -ca), makes the agent trust the edge by
	// its certificate chain to these roots and the host name of the edge
	// URL instead of by the key pinned at pairing: for a city that signs
	// the edges' certificates and may change their keys. Pairing still
	// binds the pin it sees; the pin stays in State for -kiosk.
	Roots *x509.CertPool
	Log   *slog.Logger
	// OnConnected and OnDisconnected observe the connection (tests, UI).
	OnConnected    func(w ctlwire.Welcome)
	OnDisconnected func(err error)
	// OnSession, if set, is called after each welcome with a send function
	// valid for that connection (ctx ends with it); OnMessage sees every
	// other message from the edge. Both must not block: long work (a
	// firmware download) runs in its own goroutine.
	OnSession func(ctx context.Context, send func(v any) error)
	OnMessage func(hdr ctlwire.Header, data []byte)
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
		var mv *movedError
		if errors.As(err, &mv) {
			a.Log.Info("edge found at a new address", "url", mv.url, "was", a.State.EdgeURL)
			a.State.EdgeURL = mv.url
			if err := SaveState(a.DataDir, a.State); err != nil {
				a.Log.Warn("could not save the new edge address", "err", err)
			}
			failures = 0
			continue // at once: the edge is known to be there
		}
		var pe *PinMismatchError
		if errors.As(err, &pe) {
			// Refused, loudly, but not fatal: an interceptor may only be
			// passing, and the real edge may answer again.
			a.Log.Error("refusing the edge: its TLS key changed since pairing", "err", pe)
		}
		var untrusted *certs.UntrustedError
		if errors.As(err, &untrusted) {
			// Likewise: a renewal or a clock fix may come while we wait.
			a.Log.Error("refusing the edge's certificate", "reason", untrusted.Reason, "err", untrusted)
		}
		if connected {
			failures = 0
		}
		failures++
		if a.OnDisconnected != nil {
			a.OnDisconnected(err)
		}
		// Look again after two failures in a row (~1.5 s), then every third:
		// an edge whose address changed (DHCP) is found at the new one
		// within seconds, and a restarting edge costs few lookups.
		if failures >= 2 && (failures-2)%3 == 0 && a.Rediscover != nil {
			if u, derr := a.Rediscover(ctx, a.State.EdgeID); derr == nil && u != a.State.EdgeURL {
				a.Log.Info("edge found at a new address", "url", u)
				a.State.EdgeURL = u
				if err := SaveState(a.DataDir, a.State); err != nil {
					a.Log.Warn("could not save the new edge address", "err", err)
				}
			}
		}
		d := min(backoffMax, backoffMin<<min(failures-1, 10))
		d = d/2 + mrand.N(d/2+1) // jitter: spread reconnects of many terminals
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

// HTTPClient is the client for other requests to the edge (firmware
// images): when the edge URL is https, pinned to the edge's key, or by CA
// with Roots.
func (a *Agent) HTTPClient() *http.Client {
	switch {
	case !strings.HasPrefix(a.State.EdgeURL, "https:"):
		return &http.Client{}
	case a.Roots != nil:
		return CAClient(a.Roots)
	}
	return PinnedClient(a.State.EdgePin)
}

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
	switch {
	case !strings.HasPrefix(wsURL, "wss:"):
	case a.Roots != nil:
		d.TLSClientConfig = CATLSConfig(a.Roots)
	default:
		d.TLSClientConfig = PinnedTLSConfig(a.State.EdgePin)
	}
	ws, _, err := d.DialContext(dctx, wsURL, nil)
	cancel()
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", wsURL, edgeCAAdvice().Explain(err, time.Now()))
	}
	defer ws.Close()
	ws.SetReadLimit(ctlwire.MaxMessageBytes)
	stop := context.AfterFunc(ctx, func() { _ = ws.Close() })
	defer stop()

	hello := ctlwire.Hello{Header: ctlwire.New(ctlwire.TypeHello), Token: a.State.Token, Name: a.Name, Version: a.Version}
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteJSON(hello); err != nil {
		return false, fmt.Errorf("send hello: %w", err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := ws.ReadMessage()
	if err != nil {
		return false, fmt.Errorf("await welcome: %w", err)
	}
	hdr, err := ctlwire.Decode(data)
	if err != nil {
		return false, err
	}
	if hdr.Type == ctlwire.TypeError {
		var e ctlwire.Error
		_ = json.Unmarshal(data, &e)
		if e.Code == "unauthorized" {
			return false, &unauthorizedError{msg: e.Message}
		}
		return false, fmt.Errorf("edge refused: %s: %s", e.Code, e.Message)
	}
	var w ctlwire.Welcome
	if hdr.Type != ctlwire.TypeWelcome || json.Unmarshal(data, &w) != nil {
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
	var last atomic.Int64 // when the edge was last heard, unix ns
	last.Store(time.Now().UnixNano())
	moved := make(chan string, 1)
	if a.Rediscover != nil {
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		go a.watchStall(wctx, ws, a.State.EdgeURL, a.State.EdgeID, hb, &last, moved)
	}
	ws.SetPingHandler(func(p string) error {
		last.Store(time.Now().UnixNano())
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
			select {
			case u := <-moved:
				return true, &movedError{url: u}
			default:
			}
			return true, fmt.Errorf("connection ended: %w", err)
		}
		last.Store(time.Now().UnixNano())
		_ = ws.SetReadDeadline(time.Now().Add(deadline))
		if hdr, err := ctlwire.Decode(data); err == nil {
			a.Log.Debug("control message", "type", hdr.Type)
			if a.OnMessage != nil {
				a.OnMessage(hdr, data)
			}
		}
	}
}

// movedError ends a session whose edge was found at another address.
type movedError struct{ url string }

func (e *movedError) Error() string { return "the edge moved to " + e.url }

// watchStall looks for the edge again when it has been silent for one and
// a half heartbeats: an edge whose address changed (a new DHCP lease)
// cannot close the connections to its old address, which would otherwise
// wait for the read deadline (three heartbeats and more). When the edge
// answers at another address the connection is closed and the session
// ends with a movedError; when it is where it was, the read deadline
// decides as before. At most one lookup per heartbeat.
func (a *Agent) watchStall(ctx context.Context, ws *websocket.Conn, cur, edgeID string, hb time.Duration, last *atomic.Int64, moved chan<- string) {
	t := time.NewTicker(hb / 2)
	defer t.Stop()
	var looked time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, last.Load())) < hb+hb/2 || time.Since(looked) < hb {
			continue
		}
		looked = time.Now()
		a.Log.Info("the edge has been silent for over a heartbeat; looking whether it moved", "url", cur)
		u, err := a.Rediscover(ctx, edgeID)
		if err != nil || u == cur || ctx.Err() != nil {
			continue
		}
		moved <- u
		_ = ws.Close() // ends ReadMessage in session
		return
	}
}
