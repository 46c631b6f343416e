// Package cityadmin is cityhub's admin API and city console: schools,
// edges and their health, enrolment tokens, roster and timetable imports
// with a preview, the catalogue's subject, grade and title, and the city
// staff accounts (city admin, school admin, content editor) that use
// them. Every piece of state is in the hub Store, so any number of cityhub
// replicas behind a load balancer answer alike, and the CLI drives a
// running hub through the same API instead of opening its locked file.
package cityadmin

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/edge/token"
	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/wire"
)

// Catalogue is the part of the catalogue store the console edits.
type Catalogue interface {
	Get(id string) (media.Item, error)
	Put(it media.Item) (media.Item, error)
	Changes(since uint64, limit int) (media.Changes, error)
	// ImportFile registers the content of r as an item titled after name.
	ImportFile(name string, r io.Reader) (media.Item, error)
	// Room reports an error when n more bytes do not fit on the hub's disk.
	Room(n int64) error
}

// Config wires an API.
type Config struct {
	Store     hub.Store
	Catalogue Catalogue // nil: catalogue calls answer 501
	Firmware  Firmware  // nil: firmware calls answer 501
	// Reviews is the queue of school uploads; nil: upload calls answer 501.
	Reviews Reviews
	// Review says whether uploads wait for review (cityhub -upload-review);
	// the console says so when they do not.
	Review bool
	// Pin is the pin of the TLS key edges will see, put in enrolment tokens.
	Pin    func() (string, error)
	Logger *slog.Logger
	Now    func() time.Time
	// StaffToken, when set, also accepts the hub's city staff bearer token
	// (DATA/staff-token) as a city admin.
	StaffToken func(string) bool
}

// API serves /api/v1/admin/… and the console at /console/.
type API struct {
	st        hub.Store
	cat       Catalogue
	fw        Firmware
	rev       Reviews
	review    bool
	pin       func() (string, error)
	log       *slog.Logger
	now       func() time.Time
	dummyHash string
	staffTok  func(string) bool
	// hashing bounds concurrent password checks: each argon2id takes 19 MiB
	// and tens of milliseconds, so a flood of sign-ins must queue, not
	// exhaust the hub's memory.
	hashing chan struct{}
	mux     *http.ServeMux
}

// Limits of the admin API.
const (
	maxJSONBody   = 16 << 10
	MaxTokenTTL   = 90 * 24 * time.Hour
	OnlineWindow  = 3 * time.Minute // three missed downlink polls (uplink pulls every 60 s)
	CertWarnAhead = 14 * 24 * time.Hour
	maxCatalogue  = 20_000 // items the console lists
	maxHashing    = 2      // password checks at once
	hashingWait   = 5 * time.Second
)

// New builds the API.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	dummy, _ := HashPassword("not-a-real-password")
	a := &API{st: cfg.Store, cat: cfg.Catalogue, fw: cfg.Firmware, rev: cfg.Reviews, review: cfg.Review, pin: cfg.Pin, log: cfg.Logger, now: cfg.Now, dummyHash: dummy, staffTok: cfg.StaffToken,
		hashing: make(chan struct{}, maxHashing), mux: http.NewServeMux()}
	city, school, editor := hub.RoleCityAdmin, hub.RoleSchoolAdmin, hub.RoleContentEditor
	m := a.mux
	m.HandleFunc("POST /api/v1/admin/login", a.login)
	m.HandleFunc("POST /api/v1/admin/logout", a.guard(a.logout))
	m.HandleFunc("GET /api/v1/admin/me", a.guard(func(w http.ResponseWriter, _ *http.Request, p Principal) { httpapi.WriteJSON(w, http.StatusOK, p) }))
	m.HandleFunc("GET /api/v1/admin/schools", a.guard(a.listSchools, city, school))
	m.HandleFunc("POST /api/v1/admin/schools", a.guard(a.addSchool, city))
	m.HandleFunc("GET /api/v1/admin/edges", a.guard(a.listEdges, city, school))
	m.HandleFunc("POST /api/v1/admin/edges/{id}/revoke", a.guard(a.revokeEdge, city, school))
	m.HandleFunc("GET /api/v1/admin/schools/{code}/tokens", a.guard(a.listTokens, city, school))
	m.HandleFunc("POST /api/v1/admin/schools/{code}/tokens", a.guard(a.issueToken, city, school))
	m.HandleFunc("POST /api/v1/admin/schools/{code}/tokens/{id}/revoke", a.guard(a.revokeToken, city, school))
	m.HandleFunc("POST /api/v1/admin/schools/{code}/imports/{kind}", a.guard(a.importDoc, city, school))
	m.HandleFunc("GET /api/v1/admin/catalog", a.guard(a.listCatalogue, city, editor))
	m.HandleFunc("PATCH /api/v1/admin/catalog/{id}", a.guard(a.editItem, city, editor))
	m.HandleFunc("POST /api/v1/admin/catalog/items", a.guard(a.importItem, city, editor))
	m.HandleFunc("GET /api/v1/admin/sync-health", a.guard(a.syncHealth, city))
	m.HandleFunc("GET /api/v1/admin/uploads", a.guard(a.listUploads, city, editor, school))
	m.HandleFunc("GET /api/v1/admin/uploads/{id}/content", a.guard(a.uploadContent, city, editor, school))
	m.HandleFunc("POST /api/v1/admin/uploads/{id}/publish", a.guard(a.decideUpload(true), city, editor))
	m.HandleFunc("POST /api/v1/admin/uploads/{id}/reject", a.guard(a.decideUpload(false), city, editor))
	m.HandleFunc("GET /api/v1/admin/firmware", a.guard(a.listFirmware, city))
	m.HandleFunc("POST /api/v1/admin/firmware/{target}/{version}/rollout", a.guard(a.setRollout, city))
	m.HandleFunc("GET /api/v1/admin/accounts", a.guard(a.listAccounts, city))
	m.HandleFunc("POST /api/v1/admin/accounts", a.guard(a.putAccount, city))
	m.Handle("GET /console/", consoleHandler())
	m.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusMovedPermanently)
	})
	return a
}

// Handle adds a route to the admin API behind its sign-in and role check
// (no roles: any signed-in staff); cityhub adds the routes whose code is
// its own (exports).
func (a *API) Handle(pattern string, h func(w http.ResponseWriter, r *http.Request, p Principal), roles ...string) {
	a.mux.HandleFunc(pattern, a.guard(h, roles...))
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	a.mux.ServeHTTP(w, r)
}

// storeErr answers a store error: 404 for ErrNotFound, 409 for ErrExists,
// else 503.
func (a *API) storeErr(w http.ResponseWriter, what string, err error) {
	switch {
	case errors.Is(err, hub.ErrNotFound):
		httpapi.WriteError(w, http.StatusNotFound, "not_found", what+": "+err.Error())
	case errors.Is(err, hub.ErrExists):
		httpapi.WriteError(w, http.StatusConflict, "exists", what+": "+err.Error())
	default:
		a.log.Error("admin store", "what", what, "err", err)
		httpapi.WriteError(w, http.StatusServiceUnavailable, "store_unavailable", what+": "+err.Error()+"; retry shortly")
	}
}

// schoolOf reads {code} and checks the principal may act on it; it has
// answered when ok is false. A school admin asking for another school
// gets 404, not 403: the other school's existence is not theirs to learn.
func (a *API) schoolOf(w http.ResponseWriter, r *http.Request, p Principal) (string, bool) {
	code := r.PathValue("code")
	if !p.can(code) {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no school "+code+" among yours")
		return "", false
	}
	if _, err := a.st.School(r.Context(), code); err != nil {
		a.storeErr(w, "school "+code, err)
		return "", false
	}
	return code, true
}

func (a *API) listSchools(w http.ResponseWriter, r *http.Request, p Principal) {
	ss, err := a.st.Schools(r.Context())
	if err != nil {
		a.storeErr(w, "schools", err)
		return
	}
	out := []hub.School{}
	for _, s := range ss {
		if p.can(s.Code) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"schools": out})
}

func (a *API) addSchool(w http.ResponseWriter, r *http.Request, _ Principal) {
	var req struct{ Code, Name string }
	if !httpapi.DecodeJSON(w, r, maxJSONBody, &req) {
		return
	}
	req.Name = strings.TrimSpace(req.Name)
	if !wire.ValidSchool(req.Code) {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_code", "a school code is 1-32 of letters, digits, '.', '_', '-' (the code edged -school uses)")
		return
	}
	if req.Name == "" || len(req.Name) > 200 {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_name", "a school name is 1-200 bytes")
		return
	}
	s := hub.School{Code: req.Code, Name: req.Name, Created: a.now().UTC()}
	if err := a.st.CreateSchool(r.Context(), s); err != nil {
		a.storeErr(w, "school "+req.Code, err)
		return
	}
	a.log.Info("school added", "code", s.Code)
	httpapi.WriteJSON(w, http.StatusCreated, s)
}

// EdgeView is an edge as the console lists it.
type EdgeView struct {
	ID           string    `json:"id"`
	School       string    `json:"school"`
	Enrolled     time.Time `json:"enrolled"`
	Revoked      bool      `json:"revoked"`
	Acked        uint64    `json:"acked"`
	Seen         time.Time `json:"seen"`
	Online       bool      `json:"online"`
	Version      string    `json:"version"`
	CertNotAfter time.Time `json:"cert_not_after"`
	// Health: ok, offline, never_seen, revoked, cert_expiring, cert_expired.
	Health string `json:"health"`
	// Backlog is the edge's outbox as it last reported it: records not yet
	// at the hub and the age of the oldest; BacklogKnown is false for an
	// edge that does not report it (older versions).
	BacklogKnown  bool      `json:"backlog_known"`
	Backlog       uint64    `json:"backlog"`
	BacklogOldest int64     `json:"backlog_oldest_seconds"`
	BacklogAt     time.Time `json:"backlog_at"`
}

func (a *API) view(e hub.Edge, now time.Time) EdgeView {
	v := EdgeView{ID: e.ID, School: e.School, Enrolled: e.Enrolled, Revoked: e.Revoked, Acked: e.Acked, Seen: e.Seen,
		Version: e.Version, CertNotAfter: e.CertNotAfter,
		BacklogKnown: !e.BacklogAt.IsZero(), Backlog: e.Backlog, BacklogOldest: e.BacklogOldest, BacklogAt: e.BacklogAt}
	v.Online = !e.Seen.IsZero() && now.Sub(e.Seen) < OnlineWindow && !e.Revoked
	switch {
	case e.Revoked:
		v.Health = "revoked"
	case e.Seen.IsZero():
		v.Health = "never_seen"
	case !v.Online:
		v.Health = "offline"
	case !e.CertNotAfter.IsZero() && now.After(e.CertNotAfter):
		v.Health = "cert_expired"
	case !e.CertNotAfter.IsZero() && e.CertNotAfter.Sub(now) < CertWarnAhead:
		v.Health = "cert_expiring"
	default:
		v.Health = "ok"
	}
	return v
}

func (a *API) listEdges(w http.ResponseWriter, r *http.Request, p Principal) {
	school := r.URL.Query().Get("school")
	if p.Role == hub.RoleSchoolAdmin {
		if school != "" && school != p.School {
			httpapi.WriteError(w, http.StatusNotFound, "not_found", "no school "+school+" among yours")
			return
		}
		school = p.School
	}
	es, err := a.st.Edges(r.Context(), school)
	if err != nil {
		a.storeErr(w, "edges", err)
		return
	}
	now := a.now()
	out := make([]EdgeView, 0, len(es))
	counts := map[string]int{}
	for _, e := range es {
		v := a.view(e, now)
		counts[v.Health]++
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].School != out[j].School {
			return out[i].School < out[j].School
		}
		return out[i].ID < out[j].ID
	})
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"edges": out, "health": counts})
}

func (a *API) revokeEdge(w http.ResponseWriter, r *http.Request, p Principal) {
	id := r.PathValue("id")
	e, err := a.st.Edge(r.Context(), id)
	if err == nil && !p.can(e.School) {
		err = hub.ErrNotFound
	}
	if err == nil {
		err = a.st.RevokeEdge(r.Context(), id)
	}
	if err != nil {
		a.storeErr(w, "edge "+id, err)
		return
	}
	a.log.Info("edge revoked", "edge", id, "by", p.User)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"edge": id, "revoked": true})
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request, p Principal) {
	code, ok := a.schoolOf(w, r, p)
	if !ok {
		return
	}
	ts, err := a.st.EnrolTokens(r.Context(), code)
	if err != nil {
		a.storeErr(w, "tokens", err)
		return
	}
	if ts == nil {
		ts = []hub.EnrolToken{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"tokens": ts})
}

// IssuedToken is a new enrolment token: the only time its secret is shown.
type IssuedToken struct {
	ID      string    `json:"id"`
	School  string    `json:"school"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	// QR is a PNG data: URL of the token for the school admin's phone.
	QR string `json:"qr"`
}

func (a *API) issueToken(w http.ResponseWriter, r *http.Request, p Principal) {
	code, ok := a.schoolOf(w, r, p)
	if !ok {
		return
	}
	var req struct {
		TTLHours int    `json:"ttl_hours"`
		Pin      string `json:"pin"`
	}
	if !httpapi.DecodeJSON(w, r, maxJSONBody, &req) {
		return
	}
	ttl := time.Duration(req.TTLHours) * time.Hour
	if req.TTLHours == 0 {
		ttl = 7 * 24 * time.Hour
	}
	if ttl <= 0 || ttl > MaxTokenTTL {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_ttl", "ttl_hours must be 1-2160 (90 days)")
		return
	}
	pin := req.Pin
	if pin == "" && a.pin != nil {
		var err error
		if pin, err = a.pin(); err != nil {
			httpapi.WriteError(w, http.StatusInternalServerError, "no_pin", "the hub's TLS key pin: "+err.Error())
			return
		}
	}
	if certs.ValidPin(pin) != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_pin", "pin must be base64 of the SHA-256 of the TLS key edges will see (cityhub tls-pin)")
		return
	}
	secret := token.New()
	exp := a.now().Add(ttl).UTC()
	if err := a.st.CreateEnrolToken(r.Context(), code, token.Digest(secret), exp); err != nil {
		a.storeErr(w, "token", err)
		return
	}
	tok := wire.FormatEnrolToken(secret, pin)
	out := IssuedToken{ID: hub.TokenID(token.Digest(secret)), School: code, Token: tok, Expires: exp}
	if png, err := qrcode.Encode(tok, qrcode.Medium, 256); err == nil {
		out.QR = "data:image/png;base64," + base64.StdEncoding.EncodeToString(png)
	}
	a.log.Info("enrolment token issued", "school", code, "id", out.ID, "by", p.User, "expires", exp)
	httpapi.WriteJSON(w, http.StatusCreated, out)
}

func (a *API) revokeToken(w http.ResponseWriter, r *http.Request, p Principal) {
	code, ok := a.schoolOf(w, r, p)
	if !ok {
		return
	}
	id := r.PathValue("id")
	ts, err := a.st.EnrolTokens(r.Context(), code)
	if err != nil {
		a.storeErr(w, "tokens", err)
		return
	}
	found := false
	for _, t := range ts {
		found = found || t.ID == id
	}
	if !found {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "school "+code+" has no token "+id)
		return
	}
	if err := a.st.RevokeEnrolToken(r.Context(), id); err != nil {
		a.storeErr(w, "token "+id, err)
		return
	}
	a.log.Info("enrolment token revoked", "school", code, "id", id, "by", p.User)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"id": id, "revoked": true})
}

func (a *API) listAccounts(w http.ResponseWriter, r *http.Request, _ Principal) {
	as, err := a.st.Accounts(r.Context())
	if err != nil {
		a.storeErr(w, "accounts", err)
		return
	}
	out := make([]hub.Account, 0, len(as))
	for _, acc := range as {
		acc.Hash = ""
		out = append(out, acc)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"accounts": out})
}

// AccountRequest creates or replaces a staff account.
type AccountRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
	Role     string `json:"role"`
	School   string `json:"school,omitempty"`
	Disabled bool   `json:"disabled,omitempty"`
}

// Check validates the request apart from the school's existence.
func (q AccountRequest) Check() error {
	switch {
	case !validUser(q.User):
		return errors.New("user must be 1-64 of letters, digits, '.', '_', '-', '@'")
	case !hub.ValidRole(q.Role):
		return errors.New("role must be city_admin, school_admin or content_editor")
	case q.Role == hub.RoleSchoolAdmin && q.School == "":
		return errors.New("a school_admin needs school")
	case q.Role != hub.RoleSchoolAdmin && q.School != "":
		return errors.New("only a school_admin has a school")
	case len(q.Password) < MinPasswordLen || len(q.Password) > MaxPasswordLen:
		return errors.New("password must be " + strconv.Itoa(MinPasswordLen) + "-" + strconv.Itoa(MaxPasswordLen) + " bytes")
	}
	return nil
}

func validUser(u string) bool {
	if u == "" || len(u) > 64 {
		return false
	}
	for _, c := range u {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-@", c)) {
			return false
		}
	}
	return true
}

// PutAccount validates q, hashes its password and stores the account.
func PutAccount(ctx context.Context, st hub.Store, q AccountRequest, now time.Time) error {
	if err := q.Check(); err != nil {
		return err
	}
	if q.School != "" {
		if _, err := st.School(ctx, q.School); err != nil {
			return errors.Join(errors.New("school "+q.School), err)
		}
	}
	h, err := HashPassword(q.Password)
	if err != nil {
		return err
	}
	created := now.UTC()
	if old, err := st.Account(ctx, q.User); err == nil {
		created = old.Created
	}
	return st.PutAccount(ctx, hub.Account{User: q.User, Role: q.Role, School: q.School, Hash: h, Created: created, Disabled: q.Disabled})
}

func (a *API) putAccount(w http.ResponseWriter, r *http.Request, p Principal) {
	var q AccountRequest
	if !httpapi.DecodeJSON(w, r, maxJSONBody, &q) {
		return
	}
	if err := q.Check(); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_account", err.Error())
		return
	}
	if err := PutAccount(r.Context(), a.st, q, a.now()); err != nil {
		a.storeErr(w, "account "+q.User, err)
		return
	}
	a.log.Info("staff account saved", "user", q.User, "role", q.Role, "school", q.School, "by", p.User)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"user": q.User, "role": q.Role, "school": q.School})
}

// readBody reads a body of at most limit bytes; it has answered when ok
// is false.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		httpapi.WriteError(w, http.StatusRequestEntityTooLarge, httpapi.CodeBodyTooLarge, "the file is larger than "+strconv.FormatInt(limit, 10)+" bytes")
		return nil, false
	} else if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_body", err.Error())
		return nil, false
	}
	return b, true
}
