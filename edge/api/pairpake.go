package api

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/campusedge/campusedge/edge/fleet"
	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/pairing"
)

// The code-proving pairing of classterm (edge/pairing explains the why).
// A terminal has no CA to check the edge's certificate with, so it learns
// the edge's key here, and CPace ties that key to the pairing code: a
// device that terminates TLS with its own key cannot complete it. Browsers
// keep using POST /api/v1/pair: they check the certificate themselves.
//
// Step 1 (start) keeps the edge's half of the exchange in memory for a
// short while; step 2 (finish) consumes it whatever the outcome, so each
// exchange is one try, and a proof that matches no code is counted toward
// fleet's lock-out exactly like a wrong plain code.

const (
	pairSessionTTL = 2 * time.Minute
	maxPairPending = 128
)

type pendingPair struct {
	codes    []string // "" for a decoy share (no code held)
	sessions []*pairing.Session
	created  time.Time
}

// pairSessions holds started exchanges; bounded, because step 1 needs no
// credential.
type pairSessions struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*pendingPair
}

func newPairSessions(now func() time.Time) *pairSessions {
	return &pairSessions{now: now, m: map[string]*pendingPair{}}
}

func (p *pairSessions) put(pp *pendingPair) string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	id := base64.RawURLEncoding.EncodeToString(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	var oldest string
	for k, v := range p.m {
		if now.Sub(v.created) > pairSessionTTL {
			delete(p.m, k)
		} else if oldest == "" || v.created.Before(p.m[oldest].created) {
			oldest = k
		}
	}
	if len(p.m) >= maxPairPending {
		delete(p.m, oldest)
	}
	pp.created = now
	p.m[id] = pp
	return id
}

// take removes and returns a live exchange.
func (p *pairSessions) take(id string) (*pendingPair, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp, ok := p.m[id]
	delete(p.m, id)
	if !ok || p.now().Sub(pp.created) > pairSessionTTL {
		return nil, false
	}
	return pp, true
}

// pairingBody reads a pairing message body within its size limit.
func pairingBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, pairing.MaxMessageBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpapi.WriteError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the body is larger than %d bytes", pairing.MaxMessageBytes))
		} else {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid_json", "could not read the body: "+err.Error())
		}
		return nil, false
	}
	return data, true
}

// serverPin returns the pin to bind, or writes the refusal.
func (s *Server) serverPin(w http.ResponseWriter, r *http.Request) (string, bool) {
	if r.TLS == nil {
		httpapi.WriteError(w, http.StatusBadRequest, "https_required", "pairing a terminal needs HTTPS, so that it can learn the edge's key: use https://EDGE:8443 (classterm does this by itself)")
		return "", false
	}
	pin := ""
	if s.cfg.ServerPin != nil {
		pin = s.cfg.ServerPin()
	}
	if pin == "" {
		httpapi.WriteError(w, http.StatusServiceUnavailable, "tls_not_ready", "the edge's TLS key is not ready yet; try again in a few seconds")
		return "", false
	}
	return pin, true
}

func (s *Server) pairStart(w http.ResponseWriter, r *http.Request) {
	pin, ok := s.serverPin(w, r)
	if !ok || !s.pairLimit.allow(w, remoteHost(r)) {
		return
	}
	data, ok := pairingBody(w, r)
	if !ok {
		return
	}
	sid, share, err := pairing.ParseStart(data)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	codes, err := s.cfg.Fleet.PairingCandidates(pairing.MaxShares)
	if err != nil {
		s.log.Warn("pairing refused", "addr", remoteHost(r), "err", err)
		fleetError(w, err)
		return
	}
	if len(codes) == 0 {
		// No code is held: answer with a decoy share so that a prober
		// cannot tell, and let the proof fail as a wrong try.
		codes = []string{""}
	}
	pp := &pendingPair{codes: codes}
	resp := pairing.StartResponse{Pin: pin}
	ci := pairing.ChannelID(pin)
	for _, code := range codes {
		password := code
		if code == "" {
			b := make([]byte, 16)
			_, _ = rand.Read(b)
			password = "decoy:" + base64.RawStdEncoding.EncodeToString(b)
		}
		party, err := pairing.NewParty(rand.Reader, false, password, ci, sid)
		if err != nil {
			httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
			return
		}
		sess, err := party.Finish(share)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid", err.Error())
			return
		}
		pp.sessions = append(pp.sessions, sess)
		resp.Shares = append(resp.Shares, pairing.Encode(party.Share()))
	}
	resp.Session = s.pairs.put(pp)
	httpapi.WriteJSON(w, http.StatusOK, resp)
}

func (s *Server) pairFinish(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.serverPin(w, r); !ok || !s.pairLimit.allow(w, remoteHost(r)) {
		return
	}
	data, ok := pairingBody(w, r)
	if !ok {
		return
	}
	req, tags, err := pairing.ParseFinish(data)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	// Name and version are checked before the exchange is spent.
	if err := (fleet.PairRequest{Code: "000000", Name: req.Name, Version: req.Version}).Validate(); err != nil {
		fleetError(w, err)
		return
	}
	pp, ok := s.pairs.take(req.Session)
	if !ok {
		httpapi.WriteError(w, http.StatusNotFound, "pairing_session_unknown", "this pairing exchange is unknown or older than 2 minutes; start pairing again")
		return
	}
	if len(tags) != len(pp.sessions) {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("the edge offered %d shares; send one confirmation for each", len(pp.sessions)))
		return
	}
	match := -1
	for i, sess := range pp.sessions { // every tag is checked: no early exit
		if sess.VerifyPeer(tags[i]) == nil && pp.codes[i] != "" {
			match = i
		}
	}
	addr := remoteHost(r)
	if match < 0 {
		s.pairLimit.wrong(addr)
		err := s.cfg.Fleet.WrongPairingTry()
		s.log.Warn("pairing refused: the terminal's proof matches no pairing code (wrong code, or a device intercepting TLS)", "addr", addr, "err", err)
		if errors.Is(err, fleet.ErrBadCode) {
			httpapi.WriteError(w, http.StatusForbidden, "pairing_code_wrong", "the pairing code did not match: check the 6 digits on the admin console; if they are right, a device between the terminal and the edge may be intercepting its connection")
			return
		}
		fleetError(w, err)
		return
	}
	t, token, err := s.cfg.Fleet.Pair(fleet.PairRequest{Code: pp.codes[match], Name: req.Name, Version: req.Version}, addr)
	if err != nil {
		s.log.Warn("pairing refused", "addr", addr, "err", err)
		fleetError(w, err)
		return
	}
	s.pairLimit.paired(addr)
	sess := pp.sessions[match]
	cred, err := json.Marshal(pairing.Credential{TerminalID: t.ID, Token: token, EdgeID: s.cfg.Identity.EdgeID(), ClassroomID: t.ClassroomID})
	if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	s.log.Info("terminal paired", "terminal", t.ID, "classroom", t.ClassroomID, "addr", t.Addr, "name", t.Name, "key_bound", true)
	httpapi.WriteJSON(w, http.StatusCreated, pairing.FinishResponse{Confirm: pairing.Encode(sess.MyTag()), Credential: pairing.Encode(sess.Seal(cred))})
}
