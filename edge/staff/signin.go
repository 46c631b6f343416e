package staff

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/token"
)

// CookieName is the browser session cookie.
const CookieName = "campusedge_session"

// MaxSignIns bounds the sign-ins held at once (~100 teachers on a few
// devices each fit many times over); beyond it the least recently used
// one ends.
const MaxSignIns = 5_000

// AdminTokenID is the staff id shown for a sign-in made with the admin
// token (first sign-in and recovery).
const AdminTokenID = "(admin token)"

// SignIn is one browser signed in.
type SignIn struct {
	ID       string     `json:"id"`
	StaffID  string     `json:"staff_id"`
	Name     string     `json:"name"`
	Roles    []api.Role `json:"roles"`
	Addr     string     `json:"addr"`
	Agent    string     `json:"user_agent"`
	Created  time.Time  `json:"created_at"`
	LastUsed time.Time  `json:"last_used"`

	saved time.Time // the LastUsed last written to the store (persist.go)
}

// Errors of SignInWith.
var (
	ErrWrong    = errors.New("wrong name or password")
	ErrSlowDown = errors.New("too many wrong tries")
)

// SlowDown is ErrSlowDown with how long to wait.
type SlowDown struct{ Wait time.Duration }

func (e *SlowDown) Error() string {
	return fmt.Sprintf("too many wrong tries: wait %s", e.Wait.Round(time.Second))
}
func (e *SlowDown) Unwrap() error { return ErrSlowDown }

// Credentials is the body of POST /api/v1/auth/signin: a member of staff
// with their password or PIN, or the admin token (first sign-in, recovery).
type Credentials struct {
	ID         string `json:"id,omitempty"`
	Password   string `json:"password,omitempty"`
	AdminToken string `json:"admin_token,omitempty"`
}

// Validate checks shape only (fuzzed): sizes and that one way is chosen.
func (c Credentials) Validate() error {
	if len(c.ID) > MaxIDLen || len(c.Password) > maxCredentialIn || len(c.AdminToken) > 256 {
		return fmt.Errorf("%w: a field is too long", ErrInvalid)
	}
	if !utf8.ValidString(c.Password) {
		return fmt.Errorf("%w: the password is not UTF-8", ErrInvalid)
	}
	switch {
	case c.AdminToken != "" && (c.ID != "" || c.Password != ""):
		return fmt.Errorf("%w: sign in with a name and password, or with the admin token, not both", ErrInvalid)
	case c.AdminToken == "" && (c.ID == "" || c.Password == ""):
		return fmt.Errorf("%w: give your sign-in name and password (or PIN)", ErrInvalid)
	}
	return nil
}

// SignInWith checks c from address addr and, when good, starts a sign-in:
// it returns the cookie value (kept only as its hash) and the sign-in.
func (s *Store) SignInWith(c Credentials, addr, agent string) (string, SignIn, error) {
	if err := c.Validate(); err != nil {
		return "", SignIn{}, err
	}
	now := s.now()
	account := "id:" + strings.ToLower(c.ID)
	if c.AdminToken != "" {
		account = "admin-token"
	}
	if w := max(s.byAddr.wait("addr:"+addr, now), s.byAccount.wait(account, now)); w > 0 {
		return "", SignIn{}, &SlowDown{Wait: w}
	}
	si := SignIn{Addr: addr, Agent: trunc(agent), Created: now.UTC(), LastUsed: now.UTC()}
	ok := false
	if c.AdminToken != "" {
		ok = s.admin != nil && s.admin(c.AdminToken)
		si.StaffID, si.Name, si.Roles = AdminTokenID, "Admin (token)", []api.Role{api.RoleAdmin}
	} else {
		id := strings.ToLower(c.ID)
		var rec record
		err := s.db.View(func(tx *bolt.Tx) error { var err error; rec, err = s.get(tx, id); return err })
		hash := rec.Hash
		if err != nil || hash == "" {
			// Spend the same time as a real check, so timing does not tell
			// which names exist.
			hash = dummyHash
		}
		ok = s.check(hash, c.Password) && err == nil && rec.Hash != ""
		si.StaffID, si.Name, si.Roles = rec.ID, rec.Name, rec.Roles
	}
	if !ok {
		// The wait counts from when the failure is known, not from when
		// the request came: a slow check must not use up the wait.
		failed := s.now()
		s.byAddr.fail("addr:"+addr, failed)
		s.byAccount.fail(account, failed)
		// Logged, not audited: a guessing run would flood the audit log
		// and the city's outbox; the throttle bounds how many there are.
		s.log.Warn("sign-in refused", "id", trunc(c.ID), "addr", addr)
		return "", SignIn{}, ErrWrong
	}
	s.byAccount.reset(account)
	tok := token.New()
	si.ID = newID()
	h := token.Hash(tok)
	var evicted [][]byte
	s.mu.Lock()
	if len(s.signIns) >= MaxSignIns {
		evicted = append(evicted, s.evictLocked())
	}
	cp := si
	cp.saved = si.LastUsed
	s.signIns[h] = &cp
	s.mu.Unlock()
	s.forget(evicted...)
	// Kept in the store so an edge restart mid-lesson does not sign the
	// teacher out. Not kept, it still works until the edge restarts.
	if err := s.persist(h, si); err != nil {
		s.log.Warn("sign-in not stored: it ends if the edge restarts", "staff", si.StaffID, "err", err)
	}
	s.record(si.StaffID, "signin", si.ID, "from "+addr)
	return tok, si, nil
}

// dummyHash is checked for unknown names (same cost as a real one).
var dummyHash = HashSecret("campusedge-no-such-account")

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// evictLocked ends the least recently used sign-in and returns its hash
// (for the caller to forget in the store outside the lock).
func (s *Store) evictLocked() []byte {
	var oldest [32]byte
	var at time.Time
	first := true
	for k, si := range s.signIns {
		if first || si.LastUsed.Before(at) {
			oldest, at, first = k, si.LastUsed, false
		}
	}
	delete(s.signIns, oldest)
	return oldest[:]
}

// Resolve implements api.SignIns: the cookie's sign-in, checked against
// the idle timeout and the staff list as it is now (a removed person's
// sign-ins end at once; roles are read fresh).
func (s *Store) Resolve(r *http.Request) (api.Principal, bool, error) {
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return api.Principal{}, false, nil
	}
	si, err := s.touch(c.Value)
	if err != nil {
		return api.Principal{}, true, err
	}
	p := api.Principal{Kind: api.KindStaff, StaffID: si.StaffID, Name: si.Name, Roles: si.Roles, SignIn: si.ID}
	if si.StaffID == AdminTokenID {
		return p, true, nil
	}
	cur, err := s.Get(si.StaffID)
	if err != nil || cur.Credential == CredentialNone {
		s.revokeStaff(si.StaffID)
		return api.Principal{}, true, api.ErrSignInExpired
	}
	p.Name, p.Roles, p.Classrooms = cur.Name, cur.Roles, cur.Classrooms
	return p, true, nil
}

// touch finds a live sign-in by cookie value and marks it used.
func (s *Store) touch(tok string) (SignIn, error) {
	if len(tok) > 128 {
		return SignIn{}, api.ErrSignInExpired
	}
	now := s.now()
	h := token.Hash(tok)
	s.mu.Lock()
	si := s.signIns[h]
	if si == nil {
		s.mu.Unlock()
		return SignIn{}, api.ErrSignInExpired
	}
	if now.Sub(si.LastUsed) > s.idle || now.Sub(si.Created) > s.maxAge {
		delete(s.signIns, h)
		s.mu.Unlock()
		s.forget(h[:])
		return SignIn{}, api.ErrSignInExpired
	}
	si.LastUsed = now.UTC()
	save := now.Sub(si.saved) >= touchSaveEvery
	if save {
		si.saved = si.LastUsed
	}
	cp := *si
	s.mu.Unlock()
	if save {
		if err := s.persist(h, cp); err != nil {
			s.log.Warn("sign-in use not stored", "staff", cp.StaffID, "err", err)
		}
	}
	return cp, nil
}

// SignOut ends the sign-in of cookie value tok.
func (s *Store) SignOut(tok string) (SignIn, bool) {
	h := token.Hash(tok)
	s.mu.Lock()
	si := s.signIns[h]
	if si == nil {
		s.mu.Unlock()
		return SignIn{}, false
	}
	delete(s.signIns, h)
	s.mu.Unlock()
	s.forget(h[:])
	return *si, true
}

// SignIns lists the active sign-ins, newest use first.
func (s *Store) SignIns() []SignIn {
	now := s.now()
	var ended [][]byte
	s.mu.Lock()
	out := make([]SignIn, 0, len(s.signIns))
	for h, si := range s.signIns {
		if now.Sub(si.LastUsed) > s.idle || now.Sub(si.Created) > s.maxAge {
			delete(s.signIns, h)
			ended = append(ended, h[:])
			continue
		}
		out = append(out, *si)
	}
	s.mu.Unlock()
	s.forget(ended...)
	sort.Slice(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out
}

// Revoke ends the sign-in with id; false if there is none.
func (s *Store) Revoke(actor, id string) bool {
	s.mu.Lock()
	var who string
	var ended [][]byte
	for h, si := range s.signIns {
		if si.ID == id {
			who = si.StaffID
			delete(s.signIns, h)
			ended = append(ended, h[:])
		}
	}
	s.mu.Unlock()
	s.forget(ended...)
	found := len(ended) > 0
	if found {
		s.record(actor, "signin.revoke", who, "sign-in "+id)
	}
	return found
}

// revokeStaff ends every sign-in of a member of staff.
func (s *Store) revokeStaff(id string) {
	var ended [][]byte
	s.mu.Lock()
	for h, si := range s.signIns {
		if si.StaffID == id {
			delete(s.signIns, h)
			ended = append(ended, h[:])
		}
	}
	s.mu.Unlock()
	s.forget(ended...)
}
