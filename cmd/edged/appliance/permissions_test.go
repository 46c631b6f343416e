package appliance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/cmd/edged/appliance/appliancetest"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/staff"
)

// caller is one role the permission test calls every route as.
type caller struct {
	name   string
	cookie string // a staff sign-in's session cookie
	bearer string // the admin token or a paired terminal's token
	// as is the principal the rule is checked for ("" for anonymous).
	as api.Principal
	// owner: a teacher who owns the fixture session.
	owner bool
}

// permEdge is a running edge with the fixtures the permission test needs.
type permEdge struct {
	t      *testing.T
	url    string
	host   string
	admin  string
	client *http.Client

	classroom, session, terminal, spareTerminal string
}

func (e *permEdge) do(method, path string, body any, c caller) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	if c.cookie != "" {
		// Set by hand: Go's cookie jar keeps Secure cookies off plain HTTP.
		req.Header.Set("Cookie", staff.CookieName+"="+c.cookie)
		req.Header.Set("Origin", "http://"+e.host)
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return res.StatusCode, b
}

func (e *permEdge) must(method, path string, body any, c caller, want int, out any) {
	e.t.Helper()
	code, b := e.do(method, path, body, c)
	if code != want {
		e.t.Fatalf("%s %s as %s: %d %s (want %d)", method, path, c.name, code, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatal(err)
		}
	}
}

// signIn signs id in and returns the session cookie's value.
func (e *permEdge) signIn(id, password string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, _ := json.Marshal(staff.Credentials{ID: id, Password: password})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/api/v1/auth/signin", bytes.NewReader(b))
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		e.t.Fatalf("sign in %s: %d %s", id, res.StatusCode, body)
	}
	for _, c := range res.Cookies() {
		if c.Name == staff.CookieName {
			return c.Value
		}
	}
	e.t.Fatalf("sign in %s: no %s cookie", id, staff.CookieName)
	return ""
}

// startPermEdge starts an edge with two classrooms, staff of every role,
// two paired terminals and a session the teacher "t.owner" created.
func startPermEdge(t *testing.T) (*permEdge, map[string]caller) {
	cfg := appliancetest.Config(t)
	edge := appliancetest.Start(context.Background(), t, cfg, nil)
	u, _ := url.Parse(edge.URL)
	e := &permEdge{t: t, url: edge.URL, host: u.Host, admin: edge.Admin, client: &http.Client{Timeout: 30 * time.Second}}
	adminTok := caller{name: "admin token", bearer: edge.Admin, as: api.Principal{Kind: api.KindAdminToken}}

	var room struct{ ID string }
	e.must("POST", "/api/v1/classrooms", map[string]string{"name": "Grade 7 Class 2", "room_code": "R204"}, adminTok, 201, &room)
	e.classroom = room.ID
	e.must("POST", "/api/v1/classrooms", map[string]string{"name": "Grade 8 Class 1", "room_code": "R301"}, adminTok, 201, nil)
	people := []staff.Edit{
		{ID: "a.admin", Name: "Admin Person", Roles: []api.Role{api.RoleAdmin}, Password: "admin-pass-1"},
		{ID: "t.owner", Name: "Wang Li", Roles: []api.Role{api.RoleTeacher}, Password: "teacher-pass-1"},
		{ID: "t.other", Name: "Zhang Wei", Roles: []api.Role{api.RoleTeacher}, PIN: "246810"},
		{ID: "s.assist", Name: "Chen Jing", Roles: []api.Role{api.RoleAssistant}, Password: "assist-pass-1"},
		{ID: "target.person", Name: "To Be Changed", Roles: []api.Role{api.RoleTeacher}, Password: "target-pass-1"},
	}
	for _, p := range people {
		e.must("POST", "/api/v1/staff", p, adminTok, 201, nil)
	}
	pair := func(name string) (string, string) {
		var code struct{ Code string }
		e.must("POST", "/api/v1/classrooms/"+e.classroom+"/pairing-codes", nil, adminTok, 201, &code)
		var pr api.PairResponse
		e.must("POST", "/api/v1/pair", map[string]string{"code": code.Code, "name": name, "version": "test"}, caller{name: "anonymous"}, 201, &pr)
		return pr.TerminalID, pr.Token
	}
	var screenTok string
	e.terminal, screenTok = pair("big screen")
	e.spareTerminal, _ = pair("spare")

	callers := map[string]caller{
		"anonymous":   {name: "anonymous"},
		"screen":      {name: "screen", bearer: screenTok, as: api.Principal{Kind: api.KindScreen}},
		"assistant":   {name: "assistant", cookie: e.signIn("s.assist", "assist-pass-1"), as: staffP(api.RoleAssistant)},
		"other":       {name: "other teacher", cookie: e.signIn("t.other", "246810"), as: staffP(api.RoleTeacher)},
		"teacher":     {name: "teacher", cookie: e.signIn("t.owner", "teacher-pass-1"), as: staffP(api.RoleTeacher), owner: true},
		"admin":       {name: "admin", cookie: e.signIn("a.admin", "admin-pass-1"), as: staffP(api.RoleAdmin)},
		"admin token": adminTok,
	}
	var s struct{ ID string }
	e.must("POST", "/api/v1/sessions", map[string]any{"title": "Maths", "classrooms": []string{e.classroom}}, callers["teacher"], 201, &s)
	e.session = s.ID
	return e, callers
}

func staffP(r api.Role) api.Principal {
	return api.Principal{Kind: api.KindStaff, Roles: []api.Role{r}}
}

// expected says what the table promises c on a route: allowed, or the
// status of the refusal (401 for no credential, 403 otherwise).
func expected(pattern string, rule api.Rule, c caller) (allowed bool, refusal int) {
	if rule.Public {
		return true, 0
	}
	if c.as.Kind == "" {
		return false, http.StatusUnauthorized
	}
	ok := !rule.Machine
	if ok {
		switch c.as.Kind {
		case api.KindAdminToken:
		case api.KindScreen:
			ok = rule.Screen
		case api.KindStaff:
			ok = c.as.IsAdmin()
			for _, r := range rule.Staff {
				ok = ok || c.as.Has(r)
			}
			// Own: a teacher reaches only the sessions they created.
			if ok && !c.as.IsAdmin() && strings.Contains(rule.Own, "sessions they created") && strings.Contains(pattern, "{id}") && !c.owner {
				ok = false
			}
		}
	}
	if ok {
		return true, 0
	}
	return false, http.StatusForbidden
}

// TestPermissionTable calls every route the edge serves as every role:
// what the table allows must get past authorization (no 401 or 403), all
// else must be refused with 403 (401 without any credential). A route
// registered without a row in edge/api.Permissions fails it.
func TestPermissionTable(t *testing.T) {
	e, callers := startPermEdge(t)
	var list struct {
		Routes []api.RouteRule `json:"routes"`
	}
	e.must("GET", "/api/v1/permissions", nil, callers["admin token"], 200, &list)
	if len(list.Routes) < 60 {
		t.Fatalf("only %d routes listed", len(list.Routes))
	}
	// The order matters where an allowed call changes what later ones see:
	// refusals first, the admin last.
	order := []string{"anonymous", "screen", "assistant", "other", "teacher", "admin", "admin token"}
	checked := 0
	for _, rr := range list.Routes {
		if !rr.InTable {
			t.Errorf("route %q has no row in the permission table (edge/api/permissions.go): add one", rr.Pattern)
			continue
		}
		method, path := splitPattern(rr.Pattern)
		path = e.fill(path)
		for _, name := range order {
			c := callers[name]
			if rr.Pattern == "POST /api/v1/auth/signout" && c.cookie != "" {
				c.cookie = e.signIn(map[string]string{"assistant": "s.assist", "other": "t.other", "teacher": "t.owner", "admin": "a.admin"}[name],
					map[string]string{"assistant": "assist-pass-1", "other": "246810", "teacher": "teacher-pass-1", "admin": "admin-pass-1"}[name])
			}
			ok, refusal := expected(rr.Pattern, rr.Rule, c)
			code, body := e.do(method, path, bodyFor(method), c)
			checked++
			switch {
			case ok && (code == http.StatusUnauthorized || code == http.StatusForbidden):
				t.Errorf("%s as %s: %d %s, but the table allows it", rr.Pattern, c.name, code, body)
			case !ok && code != refusal:
				t.Errorf("%s as %s: %d %s, want %d (the table does not allow it)", rr.Pattern, c.name, code, trim(body), refusal)
			}
		}
	}
	// Every row is served: a stale row would document a route that is gone.
	served := map[string]bool{}
	for _, rr := range list.Routes {
		served[rr.Pattern] = true
	}
	// Registered only when the edge runs a firmware updater (-fw-root)
	// with a hub (-cloud): the firmware tests call them (firmware/termupdate).
	conditional := map[string]bool{"GET /api/v1/terminal-images": true,
		"GET /api/v1/terminal-images/{model}": true, "GET /api/v1/terminal-images/{model}/bundle": true}
	for p := range api.Permissions() {
		if !served[p] && !conditional[p] {
			t.Errorf("the permission table has a row for %q, which no capability registers", p)
		}
	}
	t.Logf("%d routes × %d callers = %d calls checked", len(list.Routes), len(order), checked)
}

func splitPattern(p string) (method, path string) {
	if m, rest, ok := strings.Cut(p, " "); ok {
		return m, rest
	}
	return http.MethodGet, p
}

// fill puts the fixtures into a pattern's wildcards.
func (e *permEdge) fill(path string) string {
	r := strings.NewReplacer("{session}", e.session, "{resource}", "r1")
	path = r.Replace(path)
	switch {
	case strings.HasPrefix(path, "/api/v1/sessions/"):
		path = strings.Replace(path, "{id}", e.session, 1)
	case strings.HasPrefix(path, "/api/v1/classrooms/"):
		path = strings.Replace(path, "{id}", e.classroom, 1)
	case strings.HasPrefix(path, "/api/v1/terminals/"):
		path = strings.Replace(path, "{id}", e.spareTerminal, 1)
	case strings.HasPrefix(path, "/api/v1/staff/"):
		path = strings.Replace(path, "{id}", "target.person", 1)
	}
	path = strings.ReplaceAll(path, "{id}", "x1")
	if strings.HasSuffix(path, "/") && path != "/" && !strings.HasSuffix(path, "pprof/") {
		path += "unknown"
	}
	return path
}

// bodyFor: an empty JSON object for calls that take a body; handlers
// then answer 400 when they need fields, which is past authorization.
func bodyFor(method string) any {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		return map[string]any{}
	}
	return nil
}

func trim(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return fmt.Sprint(string(b))
}
