package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sort"

	"github.com/campusedge/campusedge/edge/httpapi"
)

// Role is a staff role (edge/staff keeps who holds which). A person may
// hold several.
type Role string

// The staff roles of the permission table.
const (
	RoleAdmin     Role = "admin"
	RoleTeacher   Role = "teacher"
	RoleAssistant Role = "assistant"
)

// Kinds of caller the guard tells apart.
const (
	KindAdminToken = "admin_token" // the recovery credential in DATA/admin-token
	KindStaff      = "staff"       // a person signed in with a browser session cookie
	KindScreen     = "screen"      // a paired terminal (big screen or agent) by its token
)

// Principal is who made a request, as the guard resolved it.
type Principal struct {
	Kind    string `json:"kind"`
	StaffID string `json:"staff_id,omitempty"`
	Name    string `json:"name,omitempty"`
	Roles   []Role `json:"roles,omitempty"`
	// Classrooms limits an assistant to these classrooms (empty: any).
	Classrooms []string `json:"classrooms,omitempty"`
	// SignIn is the id of the browser sign-in (KindStaff).
	SignIn string `json:"sign_in,omitempty"`
	// TerminalID and ClassroomID name a paired terminal (KindScreen).
	TerminalID  string `json:"terminal_id,omitempty"`
	ClassroomID string `json:"classroom_id,omitempty"`
	// viaCookie: the credential came from a cookie, which a browser sends
	// by itself, so changes must pass the Origin check.
	viaCookie bool
}

// Has reports whether p holds role r; the admin token and the admin role
// hold every role.
func (p Principal) Has(r Role) bool {
	if p.Kind == KindAdminToken {
		return true
	}
	if p.Kind != KindStaff {
		return false
	}
	return slices.Contains(p.Roles, RoleAdmin) || slices.Contains(p.Roles, r)
}

// IsAdmin reports whether p may do everything.
func (p Principal) IsAdmin() bool { return p.Has(RoleAdmin) }

// Who names p for logs and the audit log.
func (p Principal) Who() string {
	switch p.Kind {
	case KindAdminToken:
		return "admin token"
	case KindStaff:
		return p.StaffID
	case KindScreen:
		return "terminal " + p.TerminalID
	}
	return "anonymous"
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller the guard resolved for this request.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// ScreenCookie holds a paired big screen's terminal token in its browser:
// HttpOnly, so no script on the page (nor one injected into it) can read
// the credential, unlike the localStorage it used to live in.
const ScreenCookie = "campusedge_screen"

// ErrSignInExpired means a session cookie was sent but is unknown, revoked
// or idle for too long.
var ErrSignInExpired = errors.New("signed out")

// SignIns resolves browser session cookies (edge/staff implements it).
type SignIns interface {
	// Resolve returns the signed-in person of r's session cookie; found is
	// false when r carries no session cookie at all, err is set when it
	// carries one that is not (or no longer) valid.
	Resolve(r *http.Request) (p Principal, found bool, err error)
}

// Rule is one row of the permission table: who may call a route.
type Rule struct {
	// Staff are the roles that may call it signed in with a session cookie
	// (admin always may, and so may the admin token).
	Staff []Role `json:"staff,omitempty"`
	// Screen lets a paired terminal's token call it.
	Screen bool `json:"screen,omitempty"`
	// Token passes other bearer tokens (live-class session tokens: master,
	// assistant, terminal, observer, cascade) on to the handler, which
	// checks them against its session.
	Token bool `json:"token,omitempty"`
	// Machine: only session tokens of machine clients (OBS by WHIP,
	// another edge's cascade); staff, the admin token and terminals get
	// 403 — they take a session's token from the session they create.
	Machine bool `json:"machine,omitempty"`
	// Public needs no credential at all.
	Public bool `json:"public,omitempty"`
	// Own says the handler narrows the staff roles further to what is the
	// caller's own (a teacher's own sessions, an assistant's classroom);
	// documentation for docs/API.md and the table test.
	Own string `json:"own,omitempty"`
}

// Rule returns the permission rule of a registered pattern and whether the
// table has one.
func (s *Server) Rule(pattern string) (Rule, bool) {
	r, ok := s.perms[pattern]
	return r, ok
}

// Routes lists the patterns registered on the server, sorted, so that a
// test can walk them against the permission table.
func (s *Server) Routes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.routes)
	sort.Strings(out)
	return out
}

// guard enforces the permission table in front of every route: it
// resolves the caller (admin token, paired terminal token, session cookie,
// or a session token left to the handler), refuses what the table does
// not allow with 403 (401 when there is no valid credential at all) and
// refuses cross-origin state changes made with a cookie.
func (s *Server) guard(pattern string, h http.Handler) http.Handler {
	rule, ok := s.perms[pattern]
	if !ok {
		// Not in the table: admin only, and TestPermissionTable fails.
		rule = Rule{}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, status, msg := s.resolve(r)
		if status == 0 && p.viaCookie && !safeMethod(r.Method) && !sameOrigin(r) {
			httpapi.WriteError(w, http.StatusForbidden, "cross_origin", "this change came from another site's page; open the edge's own page to do it")
			return
		}
		if status == 0 && p.Kind != "" {
			r = r.WithContext(WithPrincipal(r.Context(), p))
		}
		if rule.Public {
			h.ServeHTTP(w, r)
			return
		}
		if status != 0 {
			if status == http.StatusUnauthorized && rule.Token && p.Kind == "" {
				// A session token, or none: the handler checks it and
				// answers in its own way (WHIP/WHEP with CORS headers).
				h.ServeHTTP(w, r)
				return
			}
			httpapi.WriteError(w, status, httpapi.CodeUnauthorized, msg)
			return
		}
		if allowed(rule, p) {
			h.ServeHTTP(w, r)
			return
		}
		httpapi.WriteError(w, http.StatusForbidden, httpapi.CodeForbidden, "signed in as "+p.Who()+", which may not do this; sign in with an account that holds the role (see docs/API.md, permission table)")
	})
}

func allowed(rule Rule, p Principal) bool {
	if rule.Machine {
		return false
	}
	switch p.Kind {
	case KindAdminToken:
		return true
	case KindScreen:
		return rule.Screen
	case KindStaff:
		if p.IsAdmin() {
			return true
		}
		for _, r := range rule.Staff {
			if p.Has(r) {
				return true
			}
		}
	}
	return false
}

// resolve finds the caller. status is 0 when the request carries a valid
// credential the guard knows (or none at all, then p is zero), 401 with a
// message otherwise.
func (s *Server) resolve(r *http.Request) (p Principal, status int, msg string) {
	if tok, ok := httpapi.BearerToken(r); ok {
		if s.cfg.Identity.CheckAdminToken(tok) {
			return Principal{Kind: KindAdminToken}, 0, ""
		}
		if s.cfg.Fleet != nil {
			if t, err := s.cfg.Fleet.Authenticate(tok); err == nil {
				return Principal{Kind: KindScreen, TerminalID: t.ID, ClassroomID: t.ClassroomID}, 0, ""
			}
		}
		return Principal{}, http.StatusUnauthorized, "the token is not valid here: sign in, or send the admin token (DATA/admin-token) or a token this call takes"
	}
	if s.cfg.SignIns != nil {
		p, found, err := s.cfg.SignIns.Resolve(r)
		if found && err != nil {
			return Principal{}, http.StatusUnauthorized, "your sign-in has ended (signed out, revoked or idle too long): sign in again"
		}
		if found {
			p.viaCookie = true
			return p, 0, ""
		}
	}
	if c, err := r.Cookie(ScreenCookie); err == nil && c.Value != "" && s.cfg.Fleet != nil {
		t, err := s.cfg.Fleet.Authenticate(c.Value)
		if err != nil {
			return Principal{}, http.StatusUnauthorized, "this screen is no longer paired: pair it again with a new code from the console"
		}
		return Principal{Kind: KindScreen, TerminalID: t.ID, ClassroomID: t.ClassroomID, viaCookie: true}, 0, ""
	}
	return Principal{}, http.StatusUnauthorized, "sign in first (or send 'Authorization: Bearer <token>')"
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// sameOrigin: a cookie-authenticated change must come from a page of this
// edge. Browsers send Origin on every POST/PUT/PATCH/DELETE; one without
// it is refused too (only browsers hold cookies).
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return false
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host && (u.Scheme == "https" || u.Scheme == "http")
}

// Admin wraps h so that only a caller the guard resolved passes: the
// permission table (permissions.go) already decided which roles reach h.
// Kept as a wrapper so that a route whose table row is missing still
// needs a credential.
func (s *Server) Admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := PrincipalFrom(r.Context())
		if !ok || (p.Kind != KindAdminToken && p.Kind != KindStaff) {
			httpapi.WriteError(w, http.StatusUnauthorized, "unauthorized", "this call needs a signed-in staff account or the admin token: send 'Authorization: Bearer <token>' (the token is in DATA/admin-token)")
			return
		}
		h(w, r)
	}
}

// RouteRule is one row of GET /api/v1/permissions.
type RouteRule struct {
	Pattern string `json:"pattern"`
	Rule    Rule   `json:"rule"`
	// InTable is false for a route registered without a row (it is then
	// admin-only, and the permission test fails).
	InTable bool `json:"in_table"`
}

// permissions: GET /api/v1/permissions lists every registered route with
// its rule, so that tools and the permission test walk what is served.
func (s *Server) permissions(w http.ResponseWriter, r *http.Request) {
	routes := s.Routes()
	out := make([]RouteRule, 0, len(routes))
	for _, p := range routes {
		rule, ok := s.perms[p]
		out = append(out, RouteRule{Pattern: p, Rule: rule, InTable: ok})
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"routes": out})
}
