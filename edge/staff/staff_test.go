package staff

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/api"
)

func openStore(t testing.TB) (*Store, *bolt.DB) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "edge.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Update(Migrate); err != nil {
		t.Fatal(err)
	}
	return New(Config{DB: db, IsAdminToken: func(tok string) bool { return tok == "the-admin-token" }}), db
}

// TestStoredHashesAreArgon2id: what the store keeps for a password or a
// PIN is an argon2id PHC string with this edge's parameters, never the
// secret, and it verifies.
func TestStoredHashesAreArgon2id(t *testing.T) {
	s, db := openStore(t)
	for _, e := range []Edit{
		{ID: "wang.li", Name: "Wang Li", Roles: []api.Role{api.RoleTeacher}, Password: "correct horse"},
		{ID: "chen.jing", Name: "陈静", Roles: []api.Role{api.RoleAssistant, api.RoleTeacher}, PIN: "024680"},
	} {
		if _, err := s.Put("test", e, true); err != nil {
			t.Fatal(err)
		}
	}
	_ = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(Bucket).ForEach(func(k, v []byte) error {
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(rec.Hash, "$argon2id$v=19$m=19456,t=2,p=1$") {
				t.Errorf("%s: stored hash %q is not argon2id with the edge's parameters", k, rec.Hash)
			}
			if bytes.Contains(v, []byte("correct horse")) || bytes.Contains(v, []byte("024680")) {
				t.Errorf("%s: the secret itself is in the store", k)
			}
			return nil
		})
	})
	for id, secret := range map[string]string{"wang.li": "correct horse", "chen.jing": "024680"} {
		if _, _, err := s.SignInWith(Credentials{ID: id, Password: secret}, "10.0.0.5", "test"); err != nil {
			t.Errorf("%s cannot sign in: %v", id, err)
		}
	}
	if _, _, err := s.SignInWith(Credentials{ID: "wang.li", Password: "wrong horse"}, "10.0.0.5", "test"); !errors.Is(err, ErrWrong) {
		t.Errorf("a wrong password gave %v", err)
	}
}

// TestSignInCookieFlags: the sign-in answer sets the session cookie
// HttpOnly, Secure and SameSite=Strict.
func TestSignInCookieFlags(t *testing.T) {
	s, _ := openStore(t)
	if _, err := s.Put("test", Edit{ID: "wang.li", Name: "Wang Li", Roles: []api.Role{api.RoleTeacher}, Password: "correct horse"}, true); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/api/v1/auth/signin", strings.NewReader(`{"id":"wang.li","password":"correct horse"}`))
	s.postSignIn(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("sign in: %d %s", rec.Code, rec.Body)
	}
	set := rec.Result().Header.Values("Set-Cookie")
	if len(set) != 1 {
		t.Fatalf("Set-Cookie: %q", set)
	}
	for _, flag := range []string{CookieName + "=", "HttpOnly", "Secure", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(set[0], flag) {
			t.Errorf("cookie %q lacks %s", set[0], flag)
		}
	}
	// The cookie resolves to the teacher; signing out ends it.
	c := rec.Result().Cookies()[0]
	r2 := httptest.NewRequest("GET", "/", nil)
	r2.AddCookie(c)
	p, found, err := s.Resolve(r2)
	if !found || err != nil || p.StaffID != "wang.li" || !p.Has(api.RoleTeacher) || p.Has(api.RoleAdmin) {
		t.Fatalf("resolve: %+v %v %v", p, found, err)
	}
	s.SignOut(c.Value)
	if _, found, err := s.Resolve(r2); !found || err == nil {
		t.Error("a signed-out cookie still resolves")
	}
}

// TestIdleTimeoutAndRemoval: a sign-in unused for the idle timeout ends; a
// person removed from the staff list loses their sign-ins at once; a role
// change takes effect at once.
func TestIdleTimeoutAndRemoval(t *testing.T) {
	s, _ := openStore(t)
	now := time.Date(2026, 3, 5, 8, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	_, _ = s.Put("test", Edit{ID: "a", Name: "A", Roles: []api.Role{api.RoleTeacher}, Password: "password-a"}, true)
	_, _ = s.Put("test", Edit{ID: "b", Name: "B", Roles: []api.Role{api.RoleTeacher}, Password: "password-b"}, true)
	ta, _, _ := s.SignInWith(Credentials{ID: "a", Password: "password-a"}, "10.0.0.1", "")
	tb, _, _ := s.SignInWith(Credentials{ID: "b", Password: "password-b"}, "10.0.0.1", "")
	req := func(tok string) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		r.AddCookie(&http.Cookie{Name: CookieName, Value: tok})
		return r
	}
	now = now.Add(29 * time.Minute)
	if _, _, err := s.Resolve(req(ta)); err != nil {
		t.Fatalf("used within the idle timeout: %v", err)
	}
	now = now.Add(31 * time.Minute) // b idle for 60 min, a for 31
	if _, _, err := s.Resolve(req(tb)); err == nil {
		t.Error("a sign-in idle for an hour still works")
	}
	if _, _, err := s.Resolve(req(ta)); err == nil {
		t.Error("a sign-in idle for 31 minutes still works")
	}
	tc, _, _ := s.SignInWith(Credentials{ID: "a", Password: "password-a"}, "10.0.0.1", "")
	if _, err := s.Put("test", Edit{ID: "a", Name: "A", Roles: []api.Role{api.RoleAssistant}}, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Resolve(req(tc)); err == nil {
		t.Error("a sign-in survived a role change (it must sign in again with the new roles)")
	}
	td, _, _ := s.SignInWith(Credentials{ID: "a", Password: "password-a"}, "10.0.0.1", "")
	if err := s.Delete("test", "a"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Resolve(req(td)); err == nil {
		t.Error("a removed person's sign-in still works")
	}
	if _, _, err := s.SignInWith(Credentials{ID: "a", Password: "password-a"}, "10.0.0.1", ""); err == nil {
		t.Error("a removed person signed in")
	}
}

// TestAdminTokenSignIn: the admin token signs in as an admin (first
// sign-in and recovery); a wrong one does not.
func TestAdminTokenSignIn(t *testing.T) {
	s, _ := openStore(t)
	_, si, err := s.SignInWith(Credentials{AdminToken: "the-admin-token"}, "10.0.0.1", "")
	if err != nil || si.StaffID != AdminTokenID || len(si.Roles) != 1 || si.Roles[0] != api.RoleAdmin {
		t.Fatalf("admin token sign-in: %+v %v", si, err)
	}
	if _, _, err := s.SignInWith(Credentials{AdminToken: "guess"}, "10.0.0.1", ""); !errors.Is(err, ErrWrong) {
		t.Errorf("a wrong admin token gave %v", err)
	}
}

// TestThrottleSlowsOneAddressNotOthers: 20 wrong passwords from one
// address are answered "slow down" after the free tries — without the
// password being checked — while another teacher signs in normally from
// another address; nothing is locked for good.
func TestThrottleSlowsOneAddressNotOthers(t *testing.T) {
	s, _ := openStore(t)
	now := time.Date(2026, 3, 5, 8, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	for _, id := range []string{"victim", "other", "third"} {
		_, _ = s.Put("test", Edit{ID: id, Name: id, Roles: []api.Role{api.RoleTeacher}, Password: "password-" + id}, true)
	}
	wrong, slowed := 0, 0
	for i := 0; i < 20; i++ {
		// Guess different accounts, so only the address throttle holds.
		id := []string{"victim", "third"}[i%2]
		_, _, err := s.SignInWith(Credentials{ID: id, Password: "guess"}, "10.0.0.66", "")
		var sd *SlowDown
		switch {
		case errors.As(err, &sd):
			slowed++
		case errors.Is(err, ErrWrong):
			wrong++
		default:
			t.Fatalf("try %d: %v", i, err)
		}
	}
	if wrong != 10 || slowed != 10 {
		t.Errorf("from one address: %d checked and %d slowed down, want 10 and 10", wrong, slowed)
	}
	// Even the right password is not checked from the slowed address now.
	if _, _, err := s.SignInWith(Credentials{ID: "other", Password: "password-other"}, "10.0.0.66", ""); !errors.Is(err, ErrSlowDown) {
		t.Errorf("the slowed address got %v", err)
	}
	if _, _, err := s.SignInWith(Credentials{ID: "other", Password: "password-other"}, "10.0.0.7", ""); err != nil {
		t.Errorf("another teacher from another address: %v", err)
	}
	// The wait doubles with each failure and is bounded: after it, one more try is checked.
	w := s.byAddr.wait("addr:10.0.0.66", now)
	if w <= 0 || w > 5*time.Minute {
		t.Errorf("wait %v", w)
	}
	now = now.Add(w)
	if _, _, err := s.SignInWith(Credentials{ID: "other", Password: "password-other"}, "10.0.0.66", ""); err != nil {
		t.Errorf("after the wait the right password from that address: %v", err)
	}
}

// TestAccountThrottle: wrong passwords for one account from many
// addresses slow that account down, not others.
func TestAccountThrottle(t *testing.T) {
	s, _ := openStore(t)
	now := time.Date(2026, 3, 5, 8, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	_, _ = s.Put("test", Edit{ID: "victim", Name: "V", Roles: []api.Role{api.RoleTeacher}, Password: "password-v"}, true)
	_, _ = s.Put("test", Edit{ID: "other", Name: "O", Roles: []api.Role{api.RoleTeacher}, Password: "password-o"}, true)
	for i := 0; i < 5; i++ {
		_, _, _ = s.SignInWith(Credentials{ID: "victim", Password: "guess"}, "10.1.0."+string(rune('1'+i)), "")
	}
	if _, _, err := s.SignInWith(Credentials{ID: "victim", Password: "guess"}, "10.1.1.1", ""); !errors.Is(err, ErrSlowDown) {
		t.Errorf("sixth wrong try for one account: %v", err)
	}
	if _, _, err := s.SignInWith(Credentials{ID: "other", Password: "password-o"}, "10.1.1.1", ""); err != nil {
		t.Errorf("another account: %v", err)
	}
}

func TestValidation(t *testing.T) {
	s, _ := openStore(t)
	for _, e := range []Edit{
		{ID: "", Name: "x", Roles: []api.Role{api.RoleTeacher}},
		{ID: "Bad Name", Name: "x", Roles: []api.Role{api.RoleTeacher}},
		{ID: "ok", Name: "", Roles: []api.Role{api.RoleTeacher}},
		{ID: "ok", Name: "x"},
		{ID: "ok", Name: "x", Roles: []api.Role{"root"}},
		{ID: "ok", Name: "x", Roles: []api.Role{api.RoleTeacher}, PIN: "12345"},
		{ID: "ok", Name: "x", Roles: []api.Role{api.RoleTeacher}, PIN: "12345a"},
		{ID: "ok", Name: "x", Roles: []api.Role{api.RoleTeacher}, Password: "short"},
		{ID: "ok", Name: "x", Roles: []api.Role{api.RoleTeacher}, Password: "long-enough", PIN: "123456"},
		{ID: "ok", Name: "line\nbreak", Roles: []api.Role{api.RoleTeacher}},
	} {
		if _, err := s.Put("test", e, true); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want invalid", e, err)
		}
	}
	if _, err := s.Put("test", Edit{ID: "dup", Name: "x", Roles: []api.Role{api.RoleTeacher}}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put("test", Edit{ID: "dup", Name: "x", Roles: []api.Role{api.RoleTeacher}}, true); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate: %v", err)
	}
}

// FuzzCredentials: the sign-in decoder never panics, and what it accepts
// has the shape the store expects.
func FuzzCredentials(f *testing.F) {
	for _, s := range []string{`{"id":"wang.li","password":"correct horse"}`, `{"admin_token":"x"}`, `{"id":"a","password":"b","admin_token":"c"}`,
		`{}`, `{"id":"` + strings.Repeat("a", 100) + `","password":"x"}`, `{"password":"\xff\xfe"}`, `[]`, `null`, `{"id":1}`} {
		f.Add([]byte(s))
	}
	s, _ := openStore(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/api/v1/auth/signin", bytes.NewReader(body))
		req.RemoteAddr = "10.9.9.9:1234"
		s.postSignIn(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusTooManyRequests, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d for %q", rec.Code, body)
		}
		var c Credentials
		if json.Unmarshal(body, &c) == nil && c.Validate() == nil {
			if c.AdminToken == "" && (c.ID == "" || c.Password == "") {
				t.Fatalf("accepted %q without a way to sign in", body)
			}
		}
	})
}

// FuzzHash: parseHash refuses what is not a bounded argon2id hash.
func FuzzHash(f *testing.F) {
	f.Add(HashSecret("x"))
	f.Add("$argon2id$v=19$m=999999999,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5")
	f.Add("$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5")
	f.Add("")
	f.Fuzz(func(t *testing.T, h string) {
		p, err := parseHash(h)
		if err == nil && (p.memory > maxMemory || p.time > maxTime || p.threads > maxLanes || p.time == 0) {
			t.Fatalf("accepted out-of-bounds %q", h)
		}
	})
}
