package cityadmin

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/staff"
	"github.com/campusedge/campusedge/edge/token"
	"github.com/campusedge/campusedge/sync/hub"
)

// Password limits: long passphrases are welcome; a megabyte is not.
const (
	MinPasswordLen = 10
	MaxPasswordLen = 256
)

// HashPassword returns the encoded argon2id hash of pw, made as the edge's
// staff accounts make theirs (edge/staff: 19 MiB, 2 passes, 16-byte salt,
// PHC string), so one format serves both.
func HashPassword(pw string) (string, error) {
	if len(pw) < MinPasswordLen || len(pw) > MaxPasswordLen {
		return "", fmt.Errorf("a password must be %d-%d bytes", MinPasswordLen, MaxPasswordLen)
	}
	return staff.HashSecret(pw), nil
}

// CheckPassword reports whether pw matches the encoded hash; a malformed
// hash, one with parameters beyond edge/staff's bounds (a hostile store
// row must not cost minutes or GiBs), or an empty one (an API-only
// account) never matches.
func CheckPassword(encoded, pw string) bool {
	if len(pw) > MaxPasswordLen || staff.ValidHash(encoded) != nil {
		return false
	}
	parts := strings.Split(encoded, "$")
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	key, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(key)))
	return subtle.ConstantTimeCompare(got, key) == 1
}

// CookieName is the session cookie.
const CookieName = "cityhub_session"

// SessionTTL is how long a console sign-in lasts.
const SessionTTL = 12 * time.Hour

// Principal is the staff member a request acts for.
type Principal struct {
	User   string `json:"user"`
	Role   string `json:"role"`
	School string `json:"school,omitempty"`
	Kind   string `json:"kind"` // cookie or api
}

// Can reports whether p may act on school (school admins: their own only).
func (p Principal) Can(school string) bool { return p.can(school) }

// can reports whether p may act on school (school admins: their own only).
func (p Principal) can(school string) bool {
	return p.Role == hub.RoleCityAdmin || (p.Role == hub.RoleSchoolAdmin && p.School == school)
}

var errNoSession = errors.New("no session")

// authenticate finds the request's principal: a bearer API key (the CLI)
// or the session cookie; the account is read each time, so a disabled or
// changed account takes effect at once on every replica.
func (a *API) authenticate(ctx context.Context, r *http.Request) (Principal, error) {
	secret, bearer := httpapi.BearerToken(r)
	if !bearer {
		c, err := r.Cookie(CookieName)
		if err != nil || c.Value == "" {
			return Principal{}, errNoSession
		}
		secret = c.Value
	}
	if len(secret) > 256 {
		return Principal{}, errNoSession
	}
	if bearer && a.staffTok != nil && a.staffTok(secret) {
		return Principal{User: "staff-token", Role: hub.RoleCityAdmin, Kind: "api"}, nil
	}
	se, err := a.st.Session(ctx, token.Digest(secret), a.now())
	if err != nil {
		return Principal{}, err
	}
	if bearer != (se.Kind == "api") {
		return Principal{}, errNoSession // a cookie secret is not an API key, nor the reverse
	}
	acc, err := a.st.Account(ctx, se.User)
	if err != nil || acc.Disabled {
		return Principal{}, errNoSession
	}
	return Principal{User: acc.User, Role: acc.Role, School: acc.School, Kind: se.Kind}, nil
}

// sameOrigin is the CSRF check for cookie requests that change something:
// the browser's Origin must be this hub (SameSite=Strict is the first
// line; this one holds for old browsers and same-site subdomains).
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

type principalKey struct{}

// guard wraps h: it needs a signed-in principal with one of roles (any
// role when none is given), and for cookie requests other than GET an
// Origin of this hub.
func (a *API) guard(h func(w http.ResponseWriter, r *http.Request, p Principal), roles ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := a.authenticate(r.Context(), r)
		if err != nil {
			if !errors.Is(err, errNoSession) && !errors.Is(err, hub.ErrNotFound) {
				a.log.Error("admin session", "err", err)
				httpapi.WriteError(w, http.StatusServiceUnavailable, "store_unavailable", "could not check the session: "+err.Error())
				return
			}
			httpapi.WriteError(w, http.StatusUnauthorized, "unauthenticated", "sign in to the city console (or give the CLI an API key: -hub URL with CITYHUB_API_KEY)")
			return
		}
		if p.Kind == "cookie" && r.Method != http.MethodGet && r.Method != http.MethodHead && !sameOrigin(r) {
			httpapi.WriteError(w, http.StatusForbidden, "bad_origin", "this request did not come from the city console's own page (Origin check)")
			return
		}
		if len(roles) > 0 {
			ok := false
			for _, role := range roles {
				ok = ok || p.Role == role
			}
			if !ok {
				httpapi.WriteError(w, http.StatusForbidden, "forbidden", "the "+p.Role+" role may not do this; ask a city admin")
				return
			}
		}
		h(w, r, p)
	}
}

// NewSession stores a session for user and returns its secret.
func NewSession(ctx context.Context, st hub.Store, user, kind string, expires time.Time) (string, error) {
	secret := token.New()
	if err := st.CreateSession(ctx, hub.Session{Hash: token.Digest(secret), User: user, Kind: kind, Expires: expires}); err != nil {
		return "", err
	}
	return secret, nil
}

func (a *API) login(w http.ResponseWriter, r *http.Request) {
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(r) {
		httpapi.WriteError(w, http.StatusForbidden, "bad_origin", "sign in from the city console's own page")
		return
	}
	var req struct {
		User     string `json:"user"`
		Password string `json:"password"`
	}
	if !httpapi.DecodeJSON(w, r, 4<<10, &req) {
		return
	}
	wait, cancel := context.WithTimeout(r.Context(), hashingWait)
	defer cancel()
	select {
	case a.hashing <- struct{}{}:
		defer func() { <-a.hashing }()
	case <-wait.Done():
		w.Header().Set("Retry-After", "5")
		httpapi.WriteError(w, http.StatusTooManyRequests, "busy", "too many sign-ins at once; try again in a few seconds")
		return
	}
	acc, err := a.st.Account(r.Context(), req.User)
	if err != nil && !errors.Is(err, hub.ErrNotFound) {
		httpapi.WriteError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	if err != nil || acc.Disabled || !CheckPassword(acc.Hash, req.Password) {
		if err != nil {
			CheckPassword(a.dummyHash, req.Password) // the same time for unknown users
		}
		a.log.Warn("console sign-in refused", "user", req.User, "remote", r.RemoteAddr)
		httpapi.WriteError(w, http.StatusUnauthorized, "bad_credentials", "user name or password is wrong")
		return
	}
	secret, err := NewSession(r.Context(), a.st, acc.User, "cookie", a.now().Add(SessionTTL))
	if err != nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: secret, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(SessionTTL / time.Second)})
	a.log.Info("console sign-in", "user", acc.User, "role", acc.Role)
	httpapi.WriteJSON(w, http.StatusOK, Principal{User: acc.User, Role: acc.Role, School: acc.School, Kind: "cookie"})
}

func (a *API) logout(w http.ResponseWriter, r *http.Request, p Principal) {
	if c, err := r.Cookie(CookieName); err == nil && p.Kind == "cookie" {
		_ = a.st.DeleteSession(r.Context(), token.Digest(c.Value))
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	w.WriteHeader(http.StatusNoContent)
}
