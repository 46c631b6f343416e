package staff

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/api"
)

// TestSignInsSurviveRestart: a sign-in is kept in the store (under the
// cookie's hash, never the cookie) and works with a new Store on the same
// file, as after an edge restart; one signed out, revoked, ended by a role
// change or idle too long does not come back, and is gone from the file.
func TestSignInsSurviveRestart(t *testing.T) {
	s, db := openStore(t)
	now := time.Date(2026, 3, 5, 8, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s.now = clock
	for _, e := range []Edit{
		{ID: "wang.li", Name: "王丽", Roles: []api.Role{api.RoleTeacher}, Password: "maths-teacher-7"},
		{ID: "chen.jing", Name: "陈静", Roles: []api.Role{api.RoleAssistant}, PIN: "024680"},
	} {
		if _, err := s.Put("test", e, true); err != nil {
			t.Fatal(err)
		}
	}
	signIn := func(s *Store, id, secret string) string {
		t.Helper()
		tok, _, err := s.SignInWith(Credentials{ID: id, Password: secret}, "10.0.0.7", "test")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	resolves := func(s *Store, tok string) bool {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.AddCookie(&http.Cookie{Name: CookieName, Value: tok})
		p, found, err := s.Resolve(r)
		return found && err == nil && p.StaffID != ""
	}
	restart := func() *Store {
		return New(Config{DB: db, Now: clock})
	}
	stored := func() (n int, holds func(tok string) bool) {
		var all [][]byte
		if err := db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(SignInBucket).ForEach(func(k, v []byte) error {
				all = append(all, append(append([]byte(nil), k...), v...))
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		return len(all), func(tok string) bool {
			for _, kv := range all {
				if bytes.Contains(kv, []byte(tok)) {
					return true
				}
			}
			return false
		}
	}

	teacher := signIn(s, "wang.li", "maths-teacher-7")
	gone := signIn(s, "wang.li", "maths-teacher-7")
	s.SignOut(gone)
	assistant := signIn(s, "chen.jing", "024680")
	if n, holds := stored(); n != 2 || holds(teacher) || holds(assistant) {
		t.Fatalf("stored sign-ins: %d (want 2), a cookie value among them: %v", n, holds(teacher) || holds(assistant))
	}

	now = now.Add(10 * time.Minute)
	s = restart()
	if !resolves(s, teacher) || !resolves(s, assistant) {
		t.Fatal("a sign-in did not survive the restart")
	}
	if resolves(s, gone) {
		t.Error("a signed-out sign-in came back after the restart")
	}
	if got := s.SignIns(); len(got) != 2 || got[0].Name == "" || got[0].Addr != "10.0.0.7" {
		t.Errorf("sign-ins listed after the restart: %+v", got)
	}

	// Revoked by the admin, and ended by a role change: neither comes back.
	for _, si := range s.SignIns() {
		if si.StaffID == "chen.jing" && !s.Revoke("admin", si.ID) {
			t.Fatal("revoke")
		}
	}
	teacher2 := signIn(s, "wang.li", "maths-teacher-7")
	if _, err := s.Put("test", Edit{ID: "wang.li", Name: "王丽", Roles: []api.Role{api.RoleAssistant}}, false); err != nil {
		t.Fatal(err)
	}
	_ = resolves(s, teacher2) // the role change is noticed on use
	s = restart()
	if resolves(s, assistant) || resolves(s, teacher2) {
		t.Error("a revoked or role-changed sign-in came back after the restart")
	}

	// Idle past the timeout while the edge was off: ended at start.
	if _, err := s.Put("test", Edit{ID: "wang.li", Name: "王丽", Roles: []api.Role{api.RoleTeacher}, Password: "maths-teacher-8"}, false); err != nil {
		t.Fatal(err)
	}
	idle := signIn(s, "wang.li", "maths-teacher-8")
	now = now.Add(31 * time.Minute)
	s = restart()
	if resolves(s, idle) {
		t.Error("a sign-in idle for 31 minutes came back after the restart")
	}
	if n, _ := stored(); n != 0 {
		t.Errorf("%d ended sign-ins still in the store", n)
	}
}

// signedInTeacher is a store on a clock the test moves (*now) with one
// teacher signed in by cookie value tok.
func signedInTeacher(t *testing.T) (s *Store, db *bolt.DB, now *time.Time, tok string) {
	t.Helper()
	s, db = openStore(t)
	clock := time.Date(2026, 3, 5, 8, 0, 0, 0, time.UTC)
	now = &clock
	s.now = func() time.Time { return *now }
	if _, err := s.Put("test", Edit{ID: "a", Name: "A", Roles: []api.Role{api.RoleTeacher}, Password: "password-a"}, true); err != nil {
		t.Fatal(err)
	}
	tok, _, err := s.SignInWith(Credentials{ID: "a", Password: "password-a"}, "10.0.0.1", "")
	if err != nil {
		t.Fatal(err)
	}
	return s, db, now, tok
}

// TestStoredLastUseWithinAMinute: a sign-in in use keeps its stored last
// use within touchSaveEvery of the real one (uses are written at most that
// often), so a restart shortens an idle sign-in by at most that.
func TestStoredLastUseWithinAMinute(t *testing.T) {
	s, db, now, tok := signedInTeacher(t)
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(&http.Cookie{Name: CookieName, Value: tok})
	for range 25 { // 25 uses, 10 s apart
		*now = now.Add(10 * time.Second)
		if _, _, err := s.Resolve(r); err != nil {
			t.Fatal(err)
		}
	}
	s2 := New(Config{DB: db, Now: func() time.Time { return *now }})
	si := s2.SignIns()
	if len(si) != 1 {
		t.Fatalf("%d sign-ins after the restart", len(si))
	}
	if lag := now.Sub(si[0].LastUsed); lag < 0 || lag >= touchSaveEvery {
		t.Errorf("stored last use %v behind the real one, want under %v", lag, touchSaveEvery)
	}
}

// TestSignOutWhileInUseStaysSignedOut: a page's use of its sign-in is
// being saved when the sign-in is signed out (between deciding to save and
// writing); after a restart the sign-in must not come back.
func TestSignOutWhileInUseStaysSignedOut(t *testing.T) {
	s, db, now, tok := signedInTeacher(t)
	signedOut := false
	s.beforeSave = func() {
		if !signedOut {
			signedOut = true
			s.SignOut(tok)
		}
	}
	*now = now.Add(2 * touchSaveEvery) // this use is saved
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(&http.Cookie{Name: CookieName, Value: tok})
	_, _, _ = s.Resolve(r)
	if !signedOut {
		t.Fatal("the use was not saved: the test did not sign out in between")
	}
	s2 := New(Config{DB: db, Now: func() time.Time { return *now }})
	if n := len(s2.SignIns()); n != 0 {
		t.Errorf("%d signed-out sign-in came back after the restart", n)
	}
}
