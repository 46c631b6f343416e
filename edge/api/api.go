// Package api is the edge's HTTP surface: the JSON API under /api/v1/ with
// the DESIGN.md error shape, /healthz, /metrics, the WebSocket control
// channel and the embedded console. Capabilities plug their routes in here.
package api

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/text/width"

	"github.com/campusedge/campusedge/edge/buildinfo"
	"github.com/campusedge/campusedge/edge/fleet"
	"github.com/campusedge/campusedge/edge/httpapi"
)

// MaxBodyBytes is the default limit for JSON request bodies.
const MaxBodyBytes = 64 << 10

// Identity is what the API needs of the edge identity.
type Identity interface {
	EdgeID() string
	CheckAdminToken(token string) bool
}

// Check is one named health check; it returns an error when degraded.
type Check func(ctx context.Context) error

// Config wires a Server.
type Config struct {
	Identity   Identity
	Fleet      *fleet.Fleet
	School     string
	SchoolName string
	// TimeZone and Language are the school's (config.Config): pages show
	// dates and times in the zone, and use the language when the browser
	// asks for none they have.
	TimeZone, Language string
	Logger             *slog.Logger
	Checks             map[string]Check
	// Console serves the embedded web console at "/".
	Console http.Handler
	// HTTPSPort is where pages, API and WebSocket are served over TLS (0:
	// HTTPS off); pages opened over plain HTTP read it to point the way.
	HTTPSPort int
	// ServerPin returns the pin of the key the HTTPS listener serves now:
	// base64(SHA-256(DER SubjectPublicKeyInfo of the leaf)), the format of
	// Chromium's --ignore-certificate-errors-spki-list. The PAKE pairing
	// (POST /api/v1/pair/start, /finish) binds it to the pairing code; nil
	// or "" means HTTPS is not up yet and that pairing is refused.
	ServerPin func() string
	// SignIns resolves staff browser sessions (edge/staff); nil: only the
	// admin token and terminal tokens are known.
	SignIns SignIns
	// Audit records who unpaired, renamed or removed what (edge/audit);
	// nil records nothing.
	Audit Auditor
}

// Auditor records who did what (edge/audit implements it).
type Auditor interface {
	Record(actor, action, target, detail string)
}

// Server holds the handlers' shared state.
type Server struct {
	cfg     Config
	log     *slog.Logger
	started time.Time
	reg     *prometheus.Registry
	mux     *http.ServeMux

	requests *prometheus.CounterVec
	wsConns  prometheus.Gauge

	pairs     *pairSessions
	pairLimit *pairBackoff // wrong pairing codes per address (pairlimit.go)
	// perms is the permission table (permissions.go); routes what was
	// registered, for the table's test.
	perms  map[string]Rule
	routes []string

	mu    sync.Mutex
	conns map[*controlConn]struct{}
	// terms and termHandlers: messages to and from terminals (terminalmsg.go).
	terms        map[string]*controlConn
	termHandlers map[string]TerminalHandler
	// ctlExt are capabilities that claim control connections by token.
	ctlExt []ControlHandler
	// onUnpair are called when a terminal is unpaired (manage.go).
	onUnpair []func(terminalID string) int
}

// New builds the server and its routes.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, started: time.Now(), reg: prometheus.NewRegistry(), mux: http.NewServeMux(), conns: map[*controlConn]struct{}{}, pairs: newPairSessions(time.Now), pairLimit: newPairBackoff(time.Now), perms: Permissions()}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "campusedge_http_requests_total", Help: "HTTP requests by route pattern and status code.",
	}, []string{"route", "code"})
	s.wsConns = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "campusedge_control_connections", Help: "Open WebSocket control connections.",
	})
	s.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		s.requests, s.wsConns, s.pairLimit.refused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "campusedge_terminals_online", Help: "Paired terminals with a live control connection.",
		}, func() float64 { return float64(cfg.Fleet.OnlineCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "campusedge_uptime_seconds", Help: "Seconds since edged started.",
		}, func() float64 { return time.Since(s.started).Seconds() }),
	)
	s.addRoutes()
	return s
}

// RequestCounter is the counter of campusedge_http_requests_total for a
// route pattern and status code, for a response sent outside the mux (the
// /media fast path), so /metrics counts it as the mux would.
func (s *Server) RequestCounter(route string, code int) prometheus.Counter {
	return s.requests.WithLabelValues(route, strconv.Itoa(code))
}

// Registry lets other capabilities register their metrics.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Handle adds a route (Go 1.22 pattern) with request metrics, behind the
// permission table's guard (auth.go, permissions.go).
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mu.Lock()
	s.routes = append(s.routes, pattern)
	s.mu.Unlock()
	s.mux.Handle(pattern, s.instrument(pattern, s.guard(pattern, h)))
}

// HandleFunc is Handle for functions.
func (s *Server) HandleFunc(pattern string, h http.HandlerFunc) { s.Handle(pattern, h) }

func (s *Server) addRoutes() {
	s.HandleFunc("GET /healthz", s.healthz)
	s.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	s.HandleFunc("GET /api/v1/edge", s.edgeInfo)
	s.HandleFunc("GET /api/v1/classrooms", s.Admin(s.listClassrooms))
	s.HandleFunc("POST /api/v1/classrooms", s.Admin(s.createClassroom))
	s.HandleFunc("GET /api/v1/classrooms/{id}", s.Admin(s.getClassroom))
	s.HandleFunc("POST /api/v1/classrooms/{id}/pairing-codes", s.Admin(s.newPairingCode))
	s.HandleFunc("PUT /api/v1/classrooms/{id}/homeroom", s.Admin(s.setHomeroom))
	s.HandleFunc("GET /api/v1/terminals", s.Admin(s.listTerminals))
	s.HandleFunc("POST /api/v1/pair", s.pair)
	s.HandleFunc("POST /api/v1/pair/start", s.pairStart)
	s.HandleFunc("POST /api/v1/pair/finish", s.pairFinish)
	s.HandleFunc("GET /api/v1/ws", s.controlWS)
	s.HandleFunc("GET "+pprofPrefix, s.Admin(s.debugPprof)) // debug.go
	s.manageRoutes()                                        // manage.go
	s.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no such API endpoint: "+r.Method+" "+r.URL.Path+" (see docs/API.md)")
	})
	if s.cfg.Console != nil {
		// "/" for every method (a "GET /" pattern would conflict with the
		// /api/v1/ catch-all); the console only answers GET and HEAD.
		s.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				httpapi.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here")
				return
			}
			s.cfg.Console.ServeHTTP(w, r)
		}))
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int)        { w.code = code; w.ResponseWriter.WriteHeader(code) }
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack lets WebSocket upgrades through the metrics wrapper.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked")
	}
	w.code = http.StatusSwitchingProtocols
	return h.Hijack()
}

func (s *Server) instrument(route string, h http.Handler) http.Handler {
	// The route's counter per status code, looked up once: hashing the
	// labels and formatting the code on every request cost more than
	// the rest of the wrapper (the /media hot path).
	var codes sync.Map // int -> prometheus.Counter
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		c, ok := codes.Load(sw.code)
		if !ok {
			c, _ = codes.LoadOrStore(sw.code, s.requests.WithLabelValues(route, strconv.Itoa(sw.code)))
		}
		c.(prometheus.Counter).Inc()
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	type check struct {
		OK     bool   `json:"ok"`
		Detail string `json:"detail,omitempty"`
	}
	out := struct {
		Status string           `json:"status"`
		Checks map[string]check `json:"checks"`
	}{Status: "ok", Checks: map[string]check{}}
	names := make([]string, 0, len(s.cfg.Checks))
	for n := range s.cfg.Checks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := s.cfg.Checks[n](ctx); err != nil {
			out.Checks[n] = check{OK: false, Detail: err.Error()}
			out.Status = "degraded"
		} else {
			out.Checks[n] = check{OK: true}
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

func (s *Server) edgeInfo(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"id":             s.cfg.Identity.EdgeID(),
		"school":         s.cfg.School,
		"school_name":    s.cfg.SchoolName,
		"version":        buildinfo.Version,
		"uptime_seconds": int64(time.Since(s.started).Seconds()),
		"started_at":     s.started.UTC().Format(time.RFC3339),
		"https_port":     s.cfg.HTTPSPort,
		"time_zone":      s.cfg.TimeZone,
		"language":       s.cfg.Language,
	})
}

func fleetError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, fleet.ErrInvalid):
		httpapi.WriteError(w, http.StatusBadRequest, "invalid", err.Error())
	case errors.Is(err, fleet.ErrNotFound):
		httpapi.WriteError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, fleet.ErrConflict):
		httpapi.WriteError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, fleet.ErrPairingLock):
		httpapi.WriteError(w, http.StatusTooManyRequests, "pairing_locked", "pairing is locked after too many wrong codes: ask the admin to issue a new pairing code")
	case errors.Is(err, fleet.ErrBadCode):
		httpapi.WriteError(w, http.StatusForbidden, "pairing_code_wrong", "that pairing code is not valid; check the 6 digits on the admin console")
	case errors.Is(err, fleet.ErrCodeExpired):
		httpapi.WriteError(w, http.StatusGone, "pairing_code_expired", "that pairing code has expired (codes last 10 minutes); ask the admin for a new one")
	case errors.Is(err, fleet.ErrCodeUsed):
		httpapi.WriteError(w, http.StatusGone, "pairing_code_used", "that pairing code was already used; each code pairs one terminal")
	default:
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", "internal error: "+err.Error())
	}
}

func (s *Server) listClassrooms(w http.ResponseWriter, r *http.Request) {
	cs, err := s.cfg.Fleet.Classrooms()
	if err != nil {
		fleetError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"classrooms": cs})
}

func (s *Server) getClassroom(w http.ResponseWriter, r *http.Request) {
	c, err := s.cfg.Fleet.Classroom(r.PathValue("id"))
	if err != nil {
		fleetError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, c)
}

// CreateClassroomRequest is the body of POST /api/v1/classrooms.
type CreateClassroomRequest struct {
	Name     string `json:"name"`
	RoomCode string `json:"room_code"`
	Homeroom string `json:"homeroom,omitempty"`
}

// HomeroomRequest is the body of PUT /api/v1/classrooms/{id}/homeroom.
type HomeroomRequest struct {
	Homeroom string `json:"homeroom"`
}

func (s *Server) setHomeroom(w http.ResponseWriter, r *http.Request) {
	var req HomeroomRequest
	if !httpapi.DecodeJSON(w, r, MaxBodyBytes, &req) {
		return
	}
	c, err := s.cfg.Fleet.SetHomeroom(r.PathValue("id"), req.Homeroom)
	if err != nil {
		fleetError(w, err)
		return
	}
	s.log.Info("classroom homeroom set", "id", c.ID, "homeroom", c.Homeroom)
	httpapi.WriteJSON(w, http.StatusOK, c)
}

func (s *Server) createClassroom(w http.ResponseWriter, r *http.Request) {
	var req CreateClassroomRequest
	if !httpapi.DecodeJSON(w, r, MaxBodyBytes, &req) {
		return
	}
	c, err := s.cfg.Fleet.CreateClassroom(req.Name, req.RoomCode, req.Homeroom)
	if err != nil {
		fleetError(w, err)
		return
	}
	s.log.Info("classroom created", "id", c.ID, "room_code", c.RoomCode, "name", c.Name)
	httpapi.WriteJSON(w, http.StatusCreated, c)
}

func (s *Server) newPairingCode(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	code, exp, err := s.cfg.Fleet.NewPairingCode(id)
	if err != nil {
		fleetError(w, err)
		return
	}
	s.log.Info("pairing code issued", "classroom", id, "expires_at", exp.Format(time.RFC3339))
	httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"code": code, "classroom_id": id, "expires_at": exp})
}

func (s *Server) listTerminals(w http.ResponseWriter, r *http.Request) {
	ts, err := s.cfg.Fleet.Terminals()
	if err != nil {
		fleetError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"terminals": ts})
}

// PairResponse is what a terminal gets for a good code.
type PairResponse struct {
	TerminalID  string `json:"terminal_id"`
	Token       string `json:"token"`
	EdgeID      string `json:"edge_id"`
	ClassroomID string `json:"classroom_id"`
}

func (s *Server) pair(w http.ResponseWriter, r *http.Request) {
	addr := remoteHost(r)
	if !s.pairLimit.allow(w, addr) {
		return
	}
	var req fleet.PairRequest
	if !httpapi.DecodeJSON(w, r, 4<<10, &req) {
		return
	}
	// A code typed on a page with a Chinese input method arrives in
	// full-width digits (０-９); they are the same code.
	req.Code = width.Fold.String(strings.TrimSpace(req.Code))
	t, token, err := s.cfg.Fleet.Pair(req, addr)
	if err != nil {
		s.log.Warn("pairing refused", "addr", addr, "err", err)
		if errors.Is(err, fleet.ErrBadCode) || errors.Is(err, fleet.ErrPairingLock) {
			s.pairLimit.wrong(addr)
		}
		fleetError(w, err)
		return
	}
	s.pairLimit.paired(addr)
	s.log.Info("terminal paired", "terminal", t.ID, "classroom", t.ClassroomID, "addr", t.Addr, "name", t.Name)
	httpapi.WriteJSON(w, http.StatusCreated, PairResponse{TerminalID: t.ID, Token: token, EdgeID: s.cfg.Identity.EdgeID(), ClassroomID: t.ClassroomID})
}

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
