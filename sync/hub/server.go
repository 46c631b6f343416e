package hub

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/identity"
	"github.com/campusedge/campusedge/edge/token"
	"github.com/campusedge/campusedge/sync/wire"
)

// MaxChangesPage bounds one downlink answer.
const MaxChangesPage = 20

// Server serves the sync endpoints edges call.
type Server struct {
	st    Store
	ca    Issuer
	staff func(string) bool
	log   *slog.Logger
	now   func() time.Time
	mux   *http.ServeMux
	// counts is the health series' tally (nil: not kept).
	counts *SyncCounts

	batches  *prometheus.CounterVec
	records  *prometheus.CounterVec
	rejected *prometheus.CounterVec
}

// Config wires a Server.
type Config struct {
	Store    Store
	Logger   *slog.Logger
	Registry prometheus.Registerer // optional
	Now      func() time.Time      // default time.Now
	// CA signs edge certificates (POST /api/v1/sync/cert); nil answers
	// that endpoint with 501 no_city_ca.
	CA Issuer
	// Staff says whether a bearer token is a city staff credential (Gate);
	// nil: no staff credential, only enrolled edges pass.
	Staff func(token string) bool
	// Counts, when set, counts records received and sync requests answered
	// with an error, for the city's sync health series.
	Counts *SyncCounts
}

// Issuer is the city CA as the sync server uses it: sign a checked CSR for
// an enrolled, unrevoked edge and return the chain the edge serves (leaf
// first, then intermediates) and the root devices trust, both PEM. A name
// the city does not sign is an error wrapping ErrNameRefused.
type Issuer interface {
	Issue(ctx context.Context, csr *x509.CertificateRequest, e Edge) (chainPEM, rootPEM []byte, err error)
}

// NewServer builds the handler.
func NewServer(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{st: cfg.Store, ca: cfg.CA, staff: cfg.Staff, log: cfg.Logger, now: cfg.Now, mux: http.NewServeMux(), counts: cfg.Counts,
		batches:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cityhub_sync_batches_total", Help: "Batches received, by result."}, []string{"result"}),
		records:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cityhub_sync_records_total", Help: "Records received: new or duplicate."}, []string{"kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cityhub_sync_rejected_requests_total", Help: "Refused edge requests by error code."}, []string{"code"}),
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(s.batches, s.records, s.rejected)
	}
	s.mux.HandleFunc("POST /api/v1/sync/enrol", s.enrol)
	s.mux.HandleFunc("POST /api/v1/sync/batch", s.signed(wire.MaxBatchBytes, s.batch))
	s.mux.HandleFunc("GET /api/v1/sync/changes", s.signed(0, s.changes))
	s.mux.HandleFunc("GET /api/v1/sync/status", s.signed(0, s.status))
	s.mux.HandleFunc("POST /api/v1/sync/cert", s.signed(wire.MaxCertRequestBytes, s.cert))
	return s
}

// ServeHTTP implements http.Handler; every answer carries the hub's time.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(wire.HeaderHubTime, strconv.FormatInt(s.now().UnixMilli(), 10))
	s.countErrors(w, r)
}

func (s *Server) fail(w http.ResponseWriter, status int, code, msg string) {
	s.rejected.WithLabelValues(code).Inc()
	httpapi.WriteError(w, status, code, msg)
}

// storeFailed answers a request the hub's store could not take: 507 when
// its disk is full, else 503, with Retry-After either way; the edge keeps
// the records and sends them again (never 400: they are not invalid).
func (s *Server) storeFailed(w http.ResponseWriter, what string, err error) {
	w.Header().Set("Retry-After", "10")
	if fsutil.IsNoSpace(err) {
		s.fail(w, http.StatusInsufficientStorage, "disk_full", "the hub's disk is full; could not store "+what+", retry later: "+err.Error())
		return
	}
	s.fail(w, http.StatusServiceUnavailable, "store_unavailable", "could not store "+what+"; retry later: "+err.Error())
}

// maxEnrolBytes bounds the enrolment body.
const maxEnrolBytes = 4 << 10

func (s *Server) enrol(w http.ResponseWriter, r *http.Request) {
	var req wire.EnrolRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxEnrolBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.fail(w, http.StatusBadRequest, "invalid_body", "enrolment body must be JSON {token, edge_id, public_key, proof}: "+err.Error())
		return
	}
	pub, err := base64.StdEncoding.DecodeString(req.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		s.fail(w, http.StatusBadRequest, "invalid_key", "public_key must be a base64 ed25519 public key")
		return
	}
	if identity.IDFromKey(pub) != req.EdgeID {
		s.fail(w, http.StatusBadRequest, "invalid_key", "edge_id does not match the public key")
		return
	}
	proof, err := base64.StdEncoding.DecodeString(req.Proof)
	if err != nil || !ed25519.Verify(pub, wire.EnrolProofString(req.Token, req.EdgeID, req.PublicKey), proof) {
		s.fail(w, http.StatusUnauthorized, "bad_signature", "the proof is not signed by this key")
		return
	}
	// An edge may send the token as printed, pin included: only the secret
	// was stored (as its hash). The proof covers the token as sent.
	secret, _, err := wire.ParseEnrolToken(req.Token)
	if err != nil {
		s.fail(w, http.StatusUnauthorized, "invalid_token", err.Error())
		return
	}
	e, err := s.st.Enrol(r.Context(), token.Digest(secret), Edge{ID: req.EdgeID, PublicKey: pub}, s.now())
	switch {
	case errors.Is(err, ErrTokenInvalid):
		s.fail(w, http.StatusUnauthorized, "invalid_token", "the enrolment token is unknown, already used or expired; ask the city for a new one (cityhub enrol-token -school CODE)")
		return
	case errors.Is(err, ErrExists):
		s.fail(w, http.StatusConflict, "edge_conflict", err.Error())
		return
	case err != nil:
		s.log.Error("enrol", "edge", req.EdgeID, "err", err)
		s.fail(w, http.StatusInternalServerError, "internal", "could not enrol: "+err.Error())
		return
	}
	sc, _ := s.st.School(r.Context(), e.School)
	s.log.Info("edge enrolled", "edge", e.ID, "school", e.School)
	httpapi.WriteJSON(w, http.StatusOK, wire.EnrolResponse{Edge: e.ID, School: e.School, Name: sc.Name})
}

// signed authenticates an edge request: known, not revoked, signature
// valid, time within MaxSkew of the hub's, nonce never seen. The edge, its
// revocation and the time are checked from the headers before a byte of
// the body is read, so a stranger cannot make the hub read up to maxBody.
func (s *Server) signed(maxBody int64, h func(w http.ResponseWriter, r *http.Request, e Edge, body []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		e, body, ok := s.authEdge(w, r, maxBody)
		if ok {
			h(w, r, e, body)
		}
	}
}

// authEdge is signed's check; it writes the refusal itself (ok false). A
// streamed body (wire.StreamedBody) is left unread and signed as empty.
func (s *Server) authEdge(w http.ResponseWriter, r *http.Request, maxBody int64) (Edge, []byte, bool) {
	sig, err := wire.ParseSignedHeaders(r)
	if err != nil {
		s.fail(w, http.StatusUnauthorized, "unsigned", "this call must be signed by an enrolled edge: "+err.Error())
		return Edge{}, nil, false
	}
	e, err := s.st.Edge(r.Context(), sig.Edge)
	if errors.Is(err, ErrNotFound) {
		s.fail(w, http.StatusUnauthorized, "unknown_edge", "edge "+sig.Edge+" is not enrolled; enrol it with a token from the city (edged enrol)")
		return Edge{}, nil, false
	} else if err != nil {
		s.fail(w, http.StatusInternalServerError, "internal", err.Error())
		return Edge{}, nil, false
	}
	if e.Revoked {
		s.fail(w, http.StatusForbidden, "edge_revoked", "edge "+e.ID+" was revoked by the city; enrol it again with a new token")
		return Edge{}, nil, false
	}
	now := s.now()
	if d := now.Sub(sig.Time); d > wire.MaxSkew || d < -wire.MaxSkew {
		s.fail(w, http.StatusUnauthorized, "clock_skew", "request time is "+d.Round(time.Second).String()+" away from the hub's; sign with the hub time in "+wire.HeaderHubTime)
		return Edge{}, nil, false
	}
	var body []byte
	if !wire.StreamedBody(r.Method) {
		body, err = io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			s.fail(w, http.StatusBadRequest, "invalid_body", "could not read the body: "+err.Error())
			return Edge{}, nil, false
		}
		if int64(len(body)) > maxBody {
			s.fail(w, http.StatusRequestEntityTooLarge, "too_large", "body larger than "+strconv.FormatInt(maxBody, 10)+" bytes")
			return Edge{}, nil, false
		}
	}
	sig.SetBody(r, body)
	if !sig.Verify(e.PublicKey) {
		s.fail(w, http.StatusUnauthorized, "bad_signature", "signature does not verify with the enrolled key of edge "+e.ID)
		return Edge{}, nil, false
	}
	// A nonce is kept past the skew window on both sides, so a replay is
	// either too old or caught here.
	if err := s.st.UseNonce(r.Context(), e.ID, sig.Nonce, now.Add(2*wire.MaxSkew), now); errors.Is(err, ErrReplay) {
		s.fail(w, http.StatusUnauthorized, "replayed", "this signed request was already used")
		return Edge{}, nil, false
	} else if err != nil {
		s.storeFailed(w, "the request", err)
		return Edge{}, nil, false
	}
	s.noteSeen(r, e, now)
	return e, body, true
}

// HeaderVersion is the software version an edge may send on its signed
// calls; the city console lists it.
const HeaderVersion = wire.HeaderVersion

// seenPrecision bounds how often a busy edge's "last seen" is written:
// the console needs minutes, not every batch.
const seenPrecision = 30 * time.Second

// noteSeen records the edge's call for the city console; a failure is only
// logged, since sync itself does not depend on it. The backlog an edge
// reports (wire.HeaderBacklog) is written at the same pace, and at once
// when it empties or starts, so the console never shows a drained edge as
// behind for long.
func (s *Server) noteSeen(r *http.Request, e Edge, now time.Time) {
	v := r.Header.Get(HeaderVersion)
	if len(v) > 64 {
		v = v[:64]
	}
	var bl *wire.Backlog
	if h := r.Header.Get(wire.HeaderBacklog); h != "" {
		if b, err := wire.ParseBacklog(h); err == nil {
			bl = &b
		}
	}
	flipped := bl != nil && (e.BacklogAt.IsZero() || (bl.Records == 0) != (e.Backlog == 0))
	if now.Sub(e.Seen) < seenPrecision && (v == "" || v == e.Version) && !flipped {
		return
	}
	if err := s.st.NoteEdge(r.Context(), e.ID, EdgeNote{Seen: now, Version: v, Backlog: bl}); err != nil {
		s.log.Warn("note edge seen", "edge", e.ID, "err", err)
	}
}

// Gate lets a request through to next only from an enrolled edge (signed
// like sync requests: wire.Sign) or city staff (Authorization: Bearer with
// a token Config.Staff accepts), and puts who it is in the request's
// context (httpapi.CallerFrom). A signed body is read here, up to maxBody
// (too_large beyond), and handed on; a streamed one (PATCH) is left for
// next. Everything else is 401 unauthenticated.
func (s *Server) Gate(maxBody int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok, ok := httpapi.BearerToken(r); ok {
			if s.staff == nil || !s.staff(tok) {
				s.fail(w, http.StatusUnauthorized, "bad_credential", "this bearer token is not a city staff credential of this hub (DATA/staff-token)")
				return
			}
			next.ServeHTTP(w, r.WithContext(httpapi.WithCaller(r.Context(), httpapi.Caller{Staff: true})))
			return
		}
		if r.Header.Get(wire.HeaderSignature) == "" {
			s.fail(w, http.StatusUnauthorized, "unauthenticated", "this hub serves its catalogue, uploads and firmware only to enrolled school edges (signed requests) and city staff (Authorization: Bearer <token from the hub's DATA/staff-token>)")
			return
		}
		e, body, ok := s.authEdge(w, r, maxBody)
		if !ok {
			return
		}
		r = r.WithContext(httpapi.WithCaller(r.Context(), httpapi.Caller{Edge: e.ID, School: e.School}))
		if !wire.StreamedBody(r.Method) {
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) batch(w http.ResponseWriter, r *http.Request, e Edge, body []byte) {
	b, err := wire.DecodeBatch(body)
	if err != nil {
		s.batches.WithLabelValues("invalid").Inc()
		s.fail(w, http.StatusBadRequest, "invalid_batch", err.Error())
		return
	}
	if b.Edge != e.ID {
		s.batches.WithLabelValues("forbidden").Inc()
		s.fail(w, http.StatusForbidden, "wrong_edge", "batch names edge "+b.Edge+" but is signed by edge "+e.ID)
		return
	}
	if b.School != e.School {
		s.batches.WithLabelValues("forbidden").Inc()
		s.fail(w, http.StatusForbidden, "wrong_school", "edge "+e.ID+" belongs to school "+e.School+", not "+b.School)
		return
	}
	for _, rec := range b.Records {
		if rec.School != "" && rec.School != e.School {
			s.batches.WithLabelValues("forbidden").Inc()
			s.fail(w, http.StatusForbidden, "wrong_school", "record "+rec.ID+" claims school "+rec.School+"; edge "+e.ID+" may only write for "+e.School+"; nothing of this batch was stored")
			return
		}
	}
	res, err := s.st.Ingest(r.Context(), e.ID, e.School, b.Records, s.now())
	var gap *GapError
	switch {
	case errors.As(err, &gap):
		s.batches.WithLabelValues("gap").Inc()
		s.log.Error("edge sent a batch beyond a gap", "edge", e.ID, "acked", gap.Acked, "first", gap.First)
		httpapi.WriteJSON(w, http.StatusConflict, map[string]any{"error": map[string]string{"code": "sequence_gap", "message": gap.Error() + "; the edge's records in between are missing (restored store?)"}, "acked": gap.Acked})
		return
	case errors.Is(err, ErrSeqConflict):
		s.batches.WithLabelValues("conflict").Inc()
		s.fail(w, http.StatusConflict, "sequence_conflict", err.Error())
		return
	case err != nil:
		s.batches.WithLabelValues("error").Inc()
		s.log.Error("ingest", "edge", e.ID, "err", err)
		s.storeFailed(w, "the batch", err)
		return
	}
	s.batches.WithLabelValues("ok").Inc()
	s.records.WithLabelValues("new").Add(float64(res.Accepted))
	s.records.WithLabelValues("duplicate").Add(float64(res.Dups))
	if s.counts != nil {
		s.counts.records.Add(uint64(res.Accepted))
	}
	s.log.Debug("batch", "edge", e.ID, "school", e.School, "first", b.Records[0].Seq, "n", len(b.Records), "new", res.Accepted, "dups", res.Dups, "acked", res.Acked)
	httpapi.WriteJSON(w, http.StatusOK, wire.Ack{Acked: res.Acked, Accepted: res.Accepted, Dups: res.Dups,
		Edge: e.ID, Nonce: r.Header.Get(wire.HeaderNonce)}) // the nonce authEdge verified
}

// cert signs the edge's TLS key with the city CA. The edge is known and
// not revoked (s.signed); the CSR's shape is checked by
// wire.DecodeCertRequest and the names by the CA's policy.
func (s *Server) cert(w http.ResponseWriter, r *http.Request, e Edge, body []byte) {
	if s.ca == nil {
		s.fail(w, http.StatusNotImplemented, "no_city_ca", "this hub has no city CA configured; edges keep their own certificates")
		return
	}
	csr, err := wire.DecodeCertRequest(body)
	if err != nil {
		s.fail(w, http.StatusBadRequest, "invalid_csr", err.Error())
		return
	}
	chain, root, err := s.ca.Issue(r.Context(), csr, e)
	switch {
	case errors.Is(err, ErrNameRefused):
		s.fail(w, http.StatusForbidden, "name_refused", err.Error())
		return
	case err != nil:
		s.log.Error("sign edge certificate", "edge", e.ID, "err", err)
		s.fail(w, http.StatusInternalServerError, "internal", "could not sign: "+err.Error())
		return
	}
	leaf, _ := pem.Decode(chain)
	notAfter := ""
	if leaf != nil {
		if c, err := x509.ParseCertificate(leaf.Bytes); err == nil {
			notAfter = c.NotAfter.UTC().Format(time.RFC3339)
			if err := s.st.NoteEdge(r.Context(), e.ID, EdgeNote{CertNotAfter: c.NotAfter}); err != nil {
				s.log.Warn("note edge certificate", "edge", e.ID, "err", err)
			}
			s.log.Info("edge certificate signed", "edge", e.ID, "school", e.School, "serial", c.SerialNumber.Text(16),
				"dns", c.DNSNames, "ips", c.IPAddresses, "not_after", notAfter)
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, wire.CertResponse{ChainPEM: string(chain), RootPEM: string(root), NotAfter: notAfter})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request, e Edge, _ []byte) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"edge": e.ID, "school": e.School, "acked": e.Acked})
}

// ChangesResponse is the downlink page.
type ChangesResponse struct {
	Changes []Change `json:"changes"`
	Next    uint64   `json:"next"`
	More    bool     `json:"more"`
}

func (s *Server) changes(w http.ResponseWriter, r *http.Request, e Edge, _ []byte) {
	since, err := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
	if err != nil && r.URL.Query().Get("since") != "" {
		s.fail(w, http.StatusBadRequest, "invalid_cursor", "since must be a change number")
		return
	}
	ch, err := s.st.Changes(r.Context(), e.School, since, MaxChangesPage+1)
	if err != nil {
		s.fail(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	resp := ChangesResponse{Changes: ch, Next: since}
	if len(ch) > MaxChangesPage {
		resp.Changes, resp.More = ch[:MaxChangesPage], true
	}
	if n := len(resp.Changes); n > 0 {
		resp.Next = resp.Changes[n-1].Seq
	}
	if resp.Changes == nil {
		resp.Changes = []Change{}
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
}

// Ready reports whether the store answers (for /healthz).
func (s *Server) Ready(ctx context.Context) error {
	_, err := s.st.Schools(ctx)
	return err
}
