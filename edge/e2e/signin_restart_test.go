package e2e

import (
	"context"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignInSurvivesKill: a teacher signed in to a real edged stays signed
// in when the edge is SIGKILLed mid-lesson (a power cut, a crash) and
// restarted on the same data dir and address, as systemd would: the same
// cookie works again at once. One signed out before the kill does not.
func TestSignInSurvivesKill(t *testing.T) {
	data := t.TempDir()
	e := startEdge(t, data, "127.0.0.1:0")
	addr := strings.TrimPrefix(e.url, "http://")
	if code := call(t, "POST", e.url+"/api/v1/staff", e.token, map[string]any{
		"id": "wang.li", "name": "王丽", "roles": []string{"teacher"}, "password": "maths-teacher-7",
	}, nil); code != http.StatusCreated {
		t.Fatalf("create teacher: %d", code)
	}
	signIn := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/api/v1/auth/signin", strings.NewReader(`{"id":"wang.li","password":"maths-teacher-7"}`))
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		for _, c := range res.Cookies() {
			if c.Name == "campusedge_session" && c.Value != "" {
				return c.Value
			}
		}
		t.Fatalf("sign-in: %d, no session cookie", res.StatusCode)
		return ""
	}
	me := func(base, cookie string) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/auth/me", nil)
		req.AddCookie(&http.Cookie{Name: "campusedge_session", Value: cookie})
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	teacher, ended := signIn(), signIn()
	if code := me(e.url, teacher); code != http.StatusOK {
		t.Fatalf("signed in: /auth/me %d", code)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/api/v1/auth/signout", nil)
	req.AddCookie(&http.Cookie{Name: "campusedge_session", Value: ended})
	req.Header.Set("Origin", e.url) // a cookie's change must come from the edge's own page
	if res, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if res.Body.Close(); res.StatusCode != http.StatusNoContent {
		t.Fatalf("sign-out: %d", res.StatusCode)
	}
	if code := me(e.url, ended); code != http.StatusUnauthorized {
		t.Fatalf("signed out: /auth/me %d, want 401", code)
	}

	e.signal(t, syscall.SIGKILL)
	e.wait(t, 10*time.Second)
	var e2 *edge
	for i := 0; e2 == nil; i++ {
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			e2 = startEdge(t, data, addr)
		} else if i > 50 {
			t.Fatalf("port %s did not free up", addr)
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if code := me(e2.url, teacher); code != http.StatusOK {
		t.Errorf("after the kill and restart the teacher's sign-in answers %d, want 200 (signed in still)", code)
	}
	if code := me(e2.url, ended); code != http.StatusUnauthorized {
		t.Errorf("a sign-out before the kill: /auth/me %d after the restart, want 401", code)
	}
}
