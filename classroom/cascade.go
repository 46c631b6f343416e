package classroom

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/httpapi"
)

// The cascade: a session at this edge takes its lesson from another edge
// (or cityhub) by WHEP, once, and fans it out on the LAN as its "master"
// source. The WAN carries one copy of each track however many classrooms
// watch here. When the WAN drops, the local session stays up (classrooms
// keep their control connections and each other's return video) and the
// pull is retried with capped exponential backoff until it comes back.

// Cascade retry timing.
const (
	cascadeMinBackoff = 500 * time.Millisecond
	cascadeMaxBackoff = 10 * time.Second
	maxUpstreamBody   = 8 << 10
	// While the upstream edge does not answer at all, a cheap GET /healthz
	// every cascadeProbeEvery (each within cascadeProbeTimeout) ends the
	// backoff as soon as it is back, as the sync uplink does: an upstream
	// restarted by systemd answers within a fraction of a second, long
	// before a backoff of several seconds runs out.
	cascadeProbeEvery   = 250 * time.Millisecond
	cascadeProbeTimeout = time.Second
	// While the upstream answers but nobody publishes there yet (its
	// teacher is reconnecting after its restart), the pull asks again every
	// cascadeNoPublisherWait (jittered) without backing off further.
	cascadeNoPublisherWait = 500 * time.Millisecond
	// cascadeStall: a pull receiving nothing this long asks the upstream
	// whether it restarted.
	cascadeStall = time.Second
)

// Why a pull ended, for the retry's wait.
var (
	// errUpstreamRestarted: the media connection stalled and the upstream
	// edge answers with a new start time: its WHEP resource is gone with
	// the old process, so pull again now instead of waiting for ICE to fail.
	errUpstreamRestarted = errors.New("the upstream edge restarted")
	// errUpstreamNoPublisher: the upstream's session has no publisher yet.
	errUpstreamNoPublisher = errors.New("nobody publishes at the upstream edge yet")
)

// upstreamDownError is a request that got no answer from the upstream
// edge at all (refused, cut, timed out): the wait probes for its return.
type upstreamDownError struct{ err error }

func (e *upstreamDownError) Error() string { return e.err.Error() }
func (e *upstreamDownError) Unwrap() error { return e.err }

// UpstreamRequest is the body of PUT /api/v1/sessions/{id}/upstream.
type UpstreamRequest struct {
	// URL is the WHEP endpoint of the session at the other edge, e.g.
	// https://edge-a.school.example:8443/whep/<session id>.
	URL string `json:"url"`
	// Token is a token of that session (an observer token will do).
	Token string `json:"token"`
	// Pin is the other edge's key pin (its console, Settings → HTTPS, or
	// GET /api/v1/tls "spki_pin"), for an https URL to an edge whose
	// certificate this edge's CAs do not verify (its own self-made CA).
	Pin string `json:"pin,omitempty"`
	// ICEServers optionally lists STUN/TURN servers for the WAN leg.
	ICEServers []ICEServer `json:"ice_servers,omitempty"`
	// ICETransportPolicy is "all" (default) or "relay" (only via TURN).
	ICETransportPolicy string `json:"ice_transport_policy,omitempty"`
}

// ICEServer is one STUN or TURN server.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

func (r UpstreamRequest) validate() error {
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || !strings.Contains(u.Path, "/whep/") || len(r.URL) > 2048 {
		return errors.New("url must be the http(s) WHEP URL of the session at the other edge (…/whep/<session id>)")
	}
	if r.Pin != "" {
		if u.Scheme != "https" {
			return errors.New("pin goes with an https url")
		}
		if err := certs.ValidPin(r.Pin); err != nil {
			return err
		}
	}
	if r.Token == "" || len(r.Token) > 256 {
		return errors.New("token (a token of the other edge's session, 1-256 bytes) is required")
	}
	if len(r.ICEServers) > 4 {
		return errors.New("at most 4 ice_servers")
	}
	for _, s := range r.ICEServers {
		if len(s.URLs) == 0 || len(s.URLs) > 4 {
			return errors.New("each ice server needs 1-4 urls")
		}
		for _, x := range s.URLs {
			if !(strings.HasPrefix(x, "stun:") || strings.HasPrefix(x, "turn:") || strings.HasPrefix(x, "turns:")) || len(x) > 256 {
				return fmt.Errorf("ice server url %q must start with stun:, turn: or turns:", x)
			}
		}
	}
	switch r.ICETransportPolicy {
	case "", "all", "relay":
	default:
		return errors.New(`ice_transport_policy must be "all" or "relay"`)
	}
	return nil
}

// UpstreamStatus reports the cascade of a session.
type UpstreamStatus struct {
	URL         string     `json:"url"`
	State       string     `json:"state"` // connecting, connected, retrying, stopped
	Attempts    int        `json:"attempts"`
	Connects    int        `json:"connects"`
	LastError   string     `json:"last_error,omitempty"`
	ConnectedAt *time.Time `json:"connected_at,omitempty"`
	NextRetryMS int64      `json:"next_retry_ms,omitempty"`
}

// cascades are the sessions of this edge that take their lesson from
// another edge, each pulled by its upstream, and the admin API that sets
// them.
type cascades struct {
	sfu      *sfu.SFU
	sessions *session.Manager
	log      *slog.Logger
	edgeID   string // names this edge at the upstream edge
	isAdmin  func(token string) bool
	// roots are the CAs for an upstream given without a pin; nil: the
	// system's.
	roots func() *x509.CertPool
	// stageOf is the classroom on stage in a session here.
	stageOf func(sessionID string) string
	// state keeps each session's upstream (with its token: the pull needs
	// it again after a restart) across a restart; nil: memory only.
	state stateStore

	mu        sync.Mutex
	bySession map[string]*upstream
}

// upstream pulls one session's lesson from another edge.
type upstream struct {
	c      *cascades
	sess   string
	req    UpstreamRequest
	client *http.Client
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	st         UpstreamStatus
	stage      string    // local classroom on stage, sent up by WHIP
	stateAt    time.Time // since when st.State (cascadelinks.go)
	link       upLink    // what the pull knows of its link (cascadelinks.go)
	stopUplink context.CancelFunc
	uplinkDone chan struct{}
}

func (u *upstream) status() UpstreamStatus {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st
}

func (u *upstream) set(f func(*UpstreamStatus)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	prev := u.st.State
	f(&u.st)
	if u.st.State != prev || u.stateAt.IsZero() {
		u.stateAt = time.Now().UTC()
	}
}

// run pulls until ctx ends, retrying with backoff.
func (u *upstream) run(ctx context.Context) {
	defer close(u.done)
	backoff := cascadeMinBackoff
	for ctx.Err() == nil {
		u.set(func(s *UpstreamStatus) { s.Attempts++; s.State = "connecting"; s.NextRetryMS = 0 })
		connected, err := u.once(ctx)
		if ctx.Err() != nil {
			break
		}
		if connected {
			backoff = cascadeMinBackoff // it worked: the next drop retries quickly
		}
		wait := backoff/2 + rand.N(backoff) // jitter: schools do not retry in step
		var down *upstreamDownError
		switch {
		case errors.Is(err, errUpstreamRestarted):
			wait = rand.N(cascadeProbeEvery) // its session is back (restored) or soon will be
		case errors.Is(err, errUpstreamNoPublisher):
			wait = cascadeNoPublisherWait/2 + rand.N(cascadeNoPublisherWait)
			backoff = cascadeMinBackoff
		}
		u.log.Warn("cascade: lesson feed from the upstream edge lost; retrying", "url", u.req.URL, "err", err, "retry_in", wait.Round(time.Millisecond))
		u.set(func(s *UpstreamStatus) {
			s.State, s.ConnectedAt, s.NextRetryMS = "retrying", nil, wait.Milliseconds()
			if err != nil {
				s.LastError = err.Error()
			}
		})
		u.wait(ctx, wait, errors.As(err, &down))
		backoff = min(backoff*2, cascadeMaxBackoff)
	}
	u.set(func(s *UpstreamStatus) { s.State, s.ConnectedAt, s.NextRetryMS = "stopped", nil, 0 })
}

// wait sleeps d, or less when probe is set and the upstream edge answers
// GET /healthz again.
func (u *upstream) wait(ctx context.Context, d time.Duration, probe bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	var tick <-chan time.Time
	if probe {
		tk := time.NewTicker(cascadeProbeEvery)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-tick:
			if _, err := u.edgeInfo(ctx, "/healthz"); err == nil {
				u.log.Info("cascade: the upstream edge answers again; pulling now", "url", u.req.URL)
				return
			}
		}
	}
}

// edgeBoot is what an upstream edge says of its process (GET
// /api/v1/edge), and when it said it.
type edgeBoot struct {
	StartedAt string `json:"started_at"` // to the second
	Uptime    int64  `json:"uptime_seconds"`
	at        time.Time
}

// known: the upstream says when it started (cityhub does not).
func (b edgeBoot) known() bool { return b.StartedAt != "" }

// restartedSince reports whether b comes from a later process than prev:
// another start time, or (a restart within the same second) less uptime
// than prev's plus the time since, with a second of slack each way.
func (b edgeBoot) restartedSince(prev edgeBoot) bool {
	if !b.known() || !prev.known() {
		return false
	}
	expect := prev.Uptime + int64(b.at.Sub(prev.at)/time.Second)
	return b.StartedAt != prev.StartedAt || b.Uptime < expect-2
}

// edgeInfo GETs path at the upstream edge (within cascadeProbeTimeout);
// for /api/v1/edge it returns what the edge says of its process (nothing
// from /healthz). Any answer but 200 is an error.
func (u *upstream) edgeInfo(ctx context.Context, path string) (edgeBoot, error) {
	var b edgeBoot
	base, err := url.Parse(u.req.URL)
	if err != nil {
		return b, err
	}
	ctx, cancel := context.WithTimeout(ctx, cascadeProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, (&url.URL{Scheme: base.Scheme, Host: base.Host, Path: path}).String(), nil)
	if err != nil {
		return b, err
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return b, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody))
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	if path != "/healthz" {
		_ = json.Unmarshal(body, &b) // an upstream that does not say stays unknown
	}
	b.at = time.Now()
	return b, nil
}

// bytesReceived is what pc's ICE transport has received so far.
func bytesReceived(pc *webrtc.PeerConnection) uint64 {
	return pc.SCTP().Transport().ICETransport().Stats().BytesReceived
}

// watchRestart probes the upstream edge while the pull's media is stalled:
// an answer from a later process than started means the edge restarted (a
// crash, an update) and the pull's resource is gone, which it says on
// restarted. A WAN blip (no answer, or the same process) is left to ICE.
// At most one probe per cascadeProbeEvery, for 10 s.
func (u *upstream) watchRestart(ctx context.Context, stalled func() bool, started edgeBoot, restarted chan<- struct{}) {
	for range 40 {
		if !stalled() {
			return
		}
		if now, err := u.edgeInfo(ctx, "/api/v1/edge"); err == nil && now.restartedSince(started) {
			select {
			case restarted <- struct{}{}:
			case <-ctx.Done():
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(cascadeProbeEvery):
		}
	}
}

// once makes one WHEP pull and returns when it ends.
func (u *upstream) once(ctx context.Context) (connected bool, err error) {
	pc, err := u.c.sfu.NewPeerConnection(u.pcConfig())
	if err != nil {
		return false, err
	}
	defer pc.Close()
	// One audio and two video m-lines: the lesson's camera, mic and a
	// screen share if the master shares one when this pull starts.
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeVideo} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return false, fmt.Errorf("transceiver: %w", err)
		}
	}
	state := make(chan webrtc.PeerConnectionState, 8)
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		select {
		case state <- s:
		default:
		}
	})
	pub, err := u.c.sfu.Relay(u.sess, sfu.SourceMaster, pc)
	if err != nil {
		return false, fmt.Errorf("local session: %w", err)
	}
	defer pub.Close()

	// The upstream's process, to tell its restart from a WAN blip later
	// (unknown if it does not say: then ICE's failure ends the pull).
	started, _ := u.edgeInfo(ctx, "/api/v1/edge")
	restarted := make(chan struct{})
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var watching atomic.Bool // one watchRestart at a time
	stallTick := time.NewTicker(cascadeProbeEvery)
	defer stallTick.Stop()
	var lastBytes uint64
	lastGrew := time.Now()

	nctx, cancel := context.WithTimeout(ctx, negotiateTimeout)
	defer cancel()
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return false, fmt.Errorf("offer: %w", err)
	}
	sdp, err := sfu.Gather(nctx, pc, offer)
	if err != nil {
		return false, err
	}
	answer, location, err := u.post(nctx, sdp)
	if err != nil {
		return false, err
	}
	defer u.deleteResource(location)
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return false, fmt.Errorf("upstream answer: %w", err)
	}
	pub.Expect(strings.Count(answer, "a=sendonly") + strings.Count(answer, "a=sendrecv"))
	for {
		select {
		case <-ctx.Done():
			return connected, nil
		case s := <-state:
			switch s {
			case webrtc.PeerConnectionStateConnected:
				if !connected {
					connected = true
					now := time.Now().UTC()
					u.set(func(st *UpstreamStatus) {
						st.State, st.ConnectedAt, st.LastError = "connected", &now, ""
						st.Connects++
					})
					u.log.Info("cascade: receiving the lesson from the upstream edge", "url", u.req.URL)
					go u.watchLink(wctx, func() uint64 { return bytesReceived(pc) }, location)
				}
			case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
				return connected, errors.New("the WAN connection to the upstream edge failed")
			}
		case <-stallTick.C:
			// Media stopped (a lesson's audio alone is 50 packets/s): ask
			// the upstream whether it restarted, rather than wait 3 s for ICE
			// to call the connection disconnected and 5 s more for failed.
			n := bytesReceived(pc)
			if n != lastBytes || !connected {
				lastBytes, lastGrew = n, time.Now()
				break
			}
			if time.Since(lastGrew) >= cascadeStall && started.known() && watching.CompareAndSwap(false, true) {
				go func() {
					u.watchRestart(wctx, func() bool { return bytesReceived(pc) == n }, started, restarted)
					watching.Store(false)
				}()
			}
		case <-restarted:
			u.log.Info("cascade: the upstream edge restarted; pulling again", "url", u.req.URL)
			return connected, errUpstreamRestarted
		case <-nctx.Done():
			if !connected {
				return false, errors.New("no media connection to the upstream edge within 10s (is UDP blocked? try a TURN server in ice_servers)")
			}
			nctx = context.Background() // connected: no deadline any more
		}
	}
}

// post pulls by WHEP, naming this school (?school=) so that the upstream
// edge shows the link in its console and answers how it sees it.
func (u *upstream) post(ctx context.Context, offer string) (answer, location string, err error) {
	endpoint := u.req.URL
	if p, err := url.Parse(endpoint); err == nil {
		q := p.Query()
		q.Set("school", u.school())
		p.RawQuery = q.Encode()
		endpoint = p.String()
	}
	return u.exchange(ctx, endpoint, offer)
}

// exchange POSTs an offer to a WHIP or WHEP endpoint of the upstream edge.
func (u *upstream) exchange(ctx context.Context, endpoint, offer string) (answer, location string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(offer))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer "+u.req.Token)
	resp, err := u.client.Do(req)
	if err != nil {
		return "", "", &upstreamDownError{fmt.Errorf("request to the upstream edge: %w", err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxSDPBytes+1))
	if err != nil {
		return "", "", fmt.Errorf("upstream answer: %w", err)
	}
	if resp.StatusCode == http.StatusConflict && bytes.Contains(body, []byte(`"no_publisher"`)) {
		return "", "", fmt.Errorf("%w: %s", errUpstreamNoPublisher, bytes.TrimSpace(body[:min(len(body), 300)]))
	}
	if resp.StatusCode != http.StatusCreated {
		return "", "", fmt.Errorf("the upstream edge answered %s: %s", resp.Status, bytes.TrimSpace(body[:min(len(body), 300)]))
	}
	if len(body) > MaxSDPBytes || !bytes.HasPrefix(body, []byte("v=0")) {
		return "", "", errors.New("the upstream edge's answer is not an SDP answer")
	}
	loc, err := resp.Location()
	if err != nil {
		return "", "", fmt.Errorf("the upstream edge's answer has no usable Location: %w", err)
	}
	return string(body), loc.String(), nil
}

// deleteResource ends the WHEP resource upstream (best effort: the
// upstream edge also notices the connection close within seconds).
func (u *upstream) deleteResource(location string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, location, nil)
	if err != nil {
		return
	}
	req.Header.Set("Authorization", "Bearer "+u.req.Token)
	if resp, err := u.client.Do(req); err == nil {
		_ = resp.Body.Close()
	}
}

// pcConfig is the WAN leg's peer-connection configuration.
func (u *upstream) pcConfig() webrtc.Configuration {
	cfg := webrtc.Configuration{}
	for _, s := range u.req.ICEServers {
		cfg.ICEServers = append(cfg.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	if u.req.ICETransportPolicy == "relay" {
		cfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	return cfg
}

// setStage sends classroom cid (on stage here) up the cascade by WHIP, or
// stops sending when cid is empty.
func (u *upstream) setStage(cid string) {
	u.mu.Lock()
	if u.stage == cid {
		u.mu.Unlock()
		return
	}
	u.stage = cid
	stop := u.stopUplink
	u.stopUplink = nil
	if cid != "" {
		ctx, cancel := context.WithCancel(context.Background())
		u.stopUplink = cancel
		go u.uplink(ctx, cid)
	}
	u.mu.Unlock()
	if stop != nil {
		stop() // it DELETEs its WHIP resource upstream on its own
	}
}

// uplink keeps classroom cid published at the upstream edge, retrying
// with backoff like the pull.
func (u *upstream) uplink(ctx context.Context, cid string) {
	backoff := cascadeMinBackoff
	for ctx.Err() == nil {
		err := u.uplinkOnce(ctx, cid)
		if ctx.Err() != nil {
			return
		}
		wait := backoff/2 + rand.N(backoff)
		u.log.Warn("cascade: on-stage classroom's uplink ended; retrying", "classroom", cid, "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		backoff = min(backoff*2, cascadeMaxBackoff)
	}
}

func (u *upstream) uplinkOnce(ctx context.Context, cid string) error {
	offers := make(chan string, 4)
	sub, err := u.c.sfu.NewSubscriberConfig(u.sess, u.pcConfig(), func(src string) bool { return src == sourceOf(cid) }, func(sdp string) {
		select {
		case offers <- sdp:
		default:
		}
	})
	if err != nil {
		return err
	}
	defer sub.Close()
	var offer string
	select {
	case offer = <-offers:
	case <-ctx.Done():
		return nil
	case <-sub.Done():
		return errors.New("closed before the classroom published")
	}
	whip := strings.Replace(u.req.URL, "/whep/", "/whip/", 1) + "?school=" + url.QueryEscape(u.school())
	nctx, cancel := context.WithTimeout(ctx, negotiateTimeout)
	answer, location, err := u.exchange(nctx, whip, offer)
	cancel()
	if err != nil {
		return err
	}
	defer u.deleteResource(location)
	if err := sub.Answer(answer); err != nil {
		return fmt.Errorf("upstream WHIP answer: %w", err)
	}
	u.log.Info("cascade: on-stage classroom sent to the upstream edge", "classroom", cid)
	select {
	case <-ctx.Done():
		return nil
	case <-sub.Done():
		return errors.New("the uplink connection failed")
	case <-offers:
		// The classroom's tracks changed; WHIP cannot renegotiate, so
		// publish again from scratch.
		return errors.New("the classroom's tracks changed")
	}
}

// school names this edge at the upstream edge.
func (u *upstream) school() string {
	if validSchool(u.c.edgeID) {
		return u.c.edgeID
	}
	return "edge"
}

// stageChanged tells session id's cascade, if any, what is on stage here.
func (c *cascades) stageChanged(id, classroomID string) {
	c.mu.Lock()
	u := c.bySession[id]
	c.mu.Unlock()
	if u != nil {
		u.setStage(classroomID)
	}
}

// start makes session id pull from req (replacing a running pull).
func (c *cascades) start(id string, req UpstreamRequest) UpstreamStatus {
	c.stop(id)
	ctx, cancel := context.WithCancel(context.Background())
	u := &upstream{c: c, sess: id, req: req, cancel: cancel, done: make(chan struct{}),
		client: c.client(req.Pin),
		log:    c.log.With("session", id, "component", "cascade"),
		st:     UpstreamStatus{URL: req.URL, State: "connecting"}}
	c.mu.Lock()
	c.bySession[id] = u
	c.mu.Unlock()
	go u.run(ctx)
	return u.status()
}

// client talks to the upstream edge: by its pin when one was given, else
// by CA (the city root verifies every city-signed edge).
func (c *cascades) client(pin string) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	switch {
	case pin != "":
		tr.TLSClientConfig = certs.PinnedTLS(pin)
	case c.roots != nil:
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: c.roots()}
	}
	return &http.Client{Timeout: negotiateTimeout, Transport: tr}
}

// stop ends session id's pull, if any, and says whether there was one.
func (c *cascades) stop(id string) bool {
	c.mu.Lock()
	u := c.bySession[id]
	delete(c.bySession, id)
	c.mu.Unlock()
	if u == nil {
		return false
	}
	u.cancel()
	<-u.done
	u.setStage("")
	return true
}

// stopAll ends every pull (edge shutdown).
func (c *cascades) stopAll() {
	c.mu.Lock()
	ids := make([]string, 0, len(c.bySession))
	for id := range c.bySession {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.stop(id)
	}
}

func (c *cascades) register(srv *api.Server) {
	srv.HandleFunc("PUT /api/v1/sessions/{id}/upstream", c.putUpstream)
	srv.HandleFunc("GET /api/v1/sessions/{id}/upstream", c.getUpstream)
	srv.HandleFunc("DELETE /api/v1/sessions/{id}/upstream", c.deleteUpstream)
}

// adminSession checks the session id and that the caller is an admin.
func (c *cascades) adminSession(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !session.ValidID(id) {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no such session (session ids are 24 hex characters)")
		return "", false
	}
	// The permission table lets only admins here (api.Server.Admin).
	if p, ok := api.PrincipalFrom(r.Context()); !ok || !p.IsAdmin() {
		httpapi.WriteError(w, http.StatusUnauthorized, "unauthorized", "this call needs an admin: sign in, or send the admin token (DATA/admin-token)")
		return "", false
	}
	if _, err := c.sessions.Get(id); err != nil {
		session.WriteError(w, err)
		return "", false
	}
	return id, true
}

func (c *cascades) putUpstream(w http.ResponseWriter, r *http.Request) {
	id, ok := c.adminSession(w, r)
	if !ok {
		return
	}
	var req UpstreamRequest
	if !httpapi.DecodeJSON(w, r, maxUpstreamBody, &req) {
		return
	}
	if err := req.validate(); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	if _, err := c.sessions.Start(id); err != nil {
		session.WriteError(w, err)
		return
	}
	if c.state != nil {
		if err := c.state.Put(id, docUpstream, "", req); err != nil {
			c.log.Error("cascade upstream not stored", "session", id, "err", err)
			httpapi.WriteError(w, http.StatusServiceUnavailable, CodeNotSaved, "the upstream could not be stored (is the data disk full? GET /healthz); nothing changed, PUT it again: "+err.Error())
			return
		}
	}
	c.log.Info("cascade: session takes its lesson from another edge", "session", id, "url", req.URL)
	st := c.start(id, req)
	c.stageChanged(id, c.stageOf(id))
	httpapi.WriteJSON(w, http.StatusAccepted, st)
}

func (c *cascades) getUpstream(w http.ResponseWriter, r *http.Request) {
	id, ok := c.adminSession(w, r)
	if !ok {
		return
	}
	c.mu.Lock()
	u := c.bySession[id]
	c.mu.Unlock()
	if u == nil {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "this session has no upstream; PUT one to take the lesson from another edge")
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, u.status())
}

func (c *cascades) deleteUpstream(w http.ResponseWriter, r *http.Request) {
	id, ok := c.adminSession(w, r)
	if !ok {
		return
	}
	if !c.stop(id) {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "this session has no upstream")
		return
	}
	if c.state != nil {
		if err := c.state.Delete(id, docUpstream, ""); err != nil {
			// The pull has stopped; a restart before the next write would
			// start it again, which the admin stops again.
			c.log.Warn("cascade upstream removed but its stored copy not", "session", id, "err", err)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}
