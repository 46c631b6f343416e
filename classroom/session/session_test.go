package session_test

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/edge/api"
)

type fakeIdentity struct{}

func (fakeIdentity) EdgeID() string                  { return "edge-test" }
func (fakeIdentity) CheckAdminToken(tok string) bool { return tok == "admin-secret" }

func newServer(t *testing.T, lookup session.ClassroomLookup) (*httptest.Server, *session.Manager) {
	t.Helper()
	m := session.NewManager(lookup)
	srv := api.New(api.Config{Identity: fakeIdentity{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	(&session.Handlers{M: m, IsAdmin: fakeIdentity{}.CheckAdminToken}).Register(srv)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts, m
}

func do(t *testing.T, ts *httptest.Server, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func TestSessionLifecycleAndRoles(t *testing.T) {
	known := map[string]bool{"c1": true, "c2": true}
	ts, _ := newServer(t, func(id string) error {
		if !known[id] {
			return errors.New("not found")
		}
		return nil
	})

	code, body := do(t, ts, "POST", "/api/v1/sessions", "admin-secret", `{"title":"Physics 8A","classrooms":["c1","c2"]}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %v", code, body)
	}
	id := body["id"].(string)
	if body["state"] != "created" || body["title"] != "Physics 8A" {
		t.Fatalf("create body: %v", body)
	}
	toks := body["tokens"].(map[string]any)
	master, observer := toks["master"].(string), toks["observer"].(string)
	c1 := toks["classrooms"].(map[string]any)["c1"].(map[string]any)
	assistant, terminal := c1["assistant"].(string), c1["terminal"].(string)
	if master == "" || observer == "" || assistant == "" || terminal == "" {
		t.Fatalf("tokens missing: %v", toks)
	}

	// Every non-master role is refused start and end with 403.
	for _, tok := range []string{observer, assistant, terminal} {
		for _, verb := range []string{"start", "end"} {
			if code, b := do(t, ts, "POST", "/api/v1/sessions/"+id+"/"+verb, tok, ""); code != http.StatusForbidden || errCode(b) != "forbidden" {
				t.Errorf("%s with a non-master token: %d %v", verb, code, b)
			}
		}
	}
	// Role tokens may read their own session, not list or create.
	if code, _ := do(t, ts, "GET", "/api/v1/sessions/"+id, terminal, ""); code != http.StatusOK {
		t.Errorf("terminal get own session: %d", code)
	}
	if code, _ := do(t, ts, "GET", "/api/v1/sessions", master, ""); code != http.StatusUnauthorized {
		t.Errorf("master list: %d, want 401", code)
	}
	if code, _ := do(t, ts, "POST", "/api/v1/sessions", master, `{"title":"x"}`); code != http.StatusUnauthorized {
		t.Errorf("master create: %d, want 401", code)
	}
	// A token of another session is forbidden here.
	_, other := do(t, ts, "POST", "/api/v1/sessions", "admin-secret", `{"title":"Other"}`)
	otherMaster := other["tokens"].(map[string]any)["master"].(string)
	if code, _ := do(t, ts, "POST", "/api/v1/sessions/"+id+"/end", otherMaster, ""); code != http.StatusForbidden {
		t.Errorf("other session's master ends this one: %d, want 403", code)
	}

	if code, b := do(t, ts, "POST", "/api/v1/sessions/"+id+"/start", master, ""); code != http.StatusOK || b["state"] != "live" {
		t.Fatalf("master start: %d %v", code, b)
	}
	if code, b := do(t, ts, "POST", "/api/v1/sessions/"+id+"/end", "admin-secret", ""); code != http.StatusOK || b["state"] != "ended" {
		t.Fatalf("admin end: %d %v", code, b)
	}
	if code, b := do(t, ts, "POST", "/api/v1/sessions/"+id+"/start", master, ""); code != http.StatusConflict || errCode(b) != "session_ended" {
		t.Fatalf("restart ended: %d %v", code, b)
	}
	code, b := do(t, ts, "GET", "/api/v1/sessions", "admin-secret", "")
	if code != http.StatusOK || len(b["sessions"].([]any)) != 2 {
		t.Fatalf("list: %d %v", code, b)
	}
	if _, leaked := b["sessions"].([]any)[0].(map[string]any)["tokens"]; leaked {
		t.Fatal("list must not show tokens")
	}
}

func TestCreateRejectsBadInput(t *testing.T) {
	ts, _ := newServer(t, func(id string) error {
		if id != "c1" {
			return errors.New("not found")
		}
		return nil
	})
	cases := map[string]struct {
		body string
		code int
	}{
		"empty body":         {``, 400},
		"not json":           {`title=x`, 400},
		"no title":           {`{}`, 400},
		"blank title":        {`{"title":"   "}`, 400},
		"control char":       {`{"title":"a\u0007b"}`, 400},
		"long title":         {`{"title":"` + strings.Repeat("é", session.MaxTitleRunes+1) + `"}`, 400},
		"unknown field":      {`{"title":"x","admin":true}`, 400},
		"trailing data":      {`{"title":"x"} {}`, 400},
		"unknown classroom":  {`{"title":"x","classrooms":["nope"]}`, 400},
		"duplicate":          {`{"title":"x","classrooms":["c1","c1"]}`, 400},
		"empty classroom id": {`{"title":"x","classrooms":[""]}`, 400},
		"oversized":          {`{"title":"x","classrooms":["` + strings.Repeat("a", 20<<10) + `"]}`, 413},
		"classrooms type":    {`{"title":"x","classrooms":"c1"}`, 400},
		"record type":        {`{"title":"x","record":"no"}`, 400},
		"long subject":       {`{"title":"x","subject":"` + strings.Repeat("a", session.MaxSubjectBytes+1) + `"}`, 400},
		"subject control":    {`{"title":"x","subject":"a\nb"}`, 400},
	}
	for name, c := range cases {
		if code, b := do(t, ts, "POST", "/api/v1/sessions", "admin-secret", c.body); code != c.code {
			t.Errorf("%s: %d %v, want %d", name, code, b, c.code)
		}
	}
	if code, _ := do(t, ts, "POST", "/api/v1/sessions", "", `{"title":"x"}`); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code, _ := do(t, ts, "POST", "/api/v1/sessions", "wrong", `{"title":"x"}`); code != 401 {
		t.Errorf("wrong token: %d", code)
	}
	if code, _ := do(t, ts, "GET", "/api/v1/sessions/../../etc", "admin-secret", ""); code == 200 {
		t.Errorf("junk id answered 200")
	}
	if code, _ := do(t, ts, "GET", "/api/v1/sessions/0123456789abcdef01234567", "admin-secret", ""); code != 404 {
		t.Errorf("unknown id: %d", code)
	}
}

func TestEndHookRunsOnce(t *testing.T) {
	m := session.NewManager(nil)
	var ended []string
	m.OnEnd(func(id string) { ended = append(ended, id) })
	s, _, err := m.Create(session.CreateRequest{Title: "t"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := m.End(s.ID); err != nil {
			t.Fatal(err)
		}
	}
	if len(ended) != 1 || ended[0] != s.ID {
		t.Fatalf("hooks ran %v", ended)
	}
}

func TestLimitEvictsOldestEnded(t *testing.T) {
	m := session.NewManager(nil)
	var first session.Session
	var firstTok string
	for i := range session.MaxSessions {
		s, toks, err := m.Create(session.CreateRequest{Title: "t"})
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		if i == 0 {
			first, firstTok = s, toks.Master
		}
	}
	if _, _, err := m.Create(session.CreateRequest{Title: "over"}); !errors.Is(err, session.ErrLimit) {
		t.Fatalf("over the limit with none ended: %v", err)
	}
	if _, err := m.End(first.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Create(session.CreateRequest{Title: "after end"}); err != nil {
		t.Fatalf("with one ended: %v", err)
	}
	if _, err := m.Get(first.ID); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("evicted session still there: %v", err)
	}
	if _, err := m.Authorize(first.ID, firstTok); !errors.Is(err, session.ErrUnauthorized) {
		t.Errorf("evicted session's token still valid: %v", err)
	}
}

// TestRecordFlag: lessons are recorded unless the session opts out.
func TestRecordFlag(t *testing.T) {
	m := session.NewManager(nil)
	yes := true
	no := false
	for _, c := range []struct {
		rec  *bool
		want bool
	}{{nil, true}, {&yes, true}, {&no, false}} {
		s, _, err := m.Create(session.CreateRequest{Title: "x", Subject: " maths ", Record: c.rec})
		if err != nil {
			t.Fatal(err)
		}
		if s.Record != c.want || s.Subject != "maths" {
			t.Errorf("record %v: session has record=%v subject=%q", c.rec, s.Record, s.Subject)
		}
	}
}
