package staff

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"

	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/httpapi"
)

// maxBody bounds every staff request body.
const maxBody = 8 << 10

// Register adds sign-in and staff routes (docs/API.md, "People and
// sign-in"); the permission table (edge/api) says who may call each.
func (s *Store) Register(srv *api.Server) {
	srv.HandleFunc("POST /api/v1/auth/signin", s.postSignIn)
	srv.HandleFunc("POST /api/v1/auth/signout", s.postSignOut)
	srv.HandleFunc("GET /api/v1/auth/me", s.getMe)
	srv.HandleFunc("GET /api/v1/auth/signins", srv.Admin(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"signins": s.SignIns()})
	}))
	srv.HandleFunc("DELETE /api/v1/auth/signins/{id}", srv.Admin(func(w http.ResponseWriter, r *http.Request) {
		if !s.Revoke(actor(r), r.PathValue("id")) {
			httpapi.WriteError(w, http.StatusNotFound, "not_found", "no active sign-in with that id (GET /api/v1/auth/signins lists them)")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.HandleFunc("GET /api/v1/staff", srv.Admin(func(w http.ResponseWriter, r *http.Request) {
		ps, err := s.List()
		if err != nil {
			writeErr(w, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"staff": ps})
	}))
	srv.HandleFunc("POST /api/v1/staff", srv.Admin(func(w http.ResponseWriter, r *http.Request) { s.putStaff(w, r, true) }))
	srv.HandleFunc("PUT /api/v1/staff/{id}", srv.Admin(func(w http.ResponseWriter, r *http.Request) { s.putStaff(w, r, false) }))
	srv.HandleFunc("DELETE /api/v1/staff/{id}", srv.Admin(func(w http.ResponseWriter, r *http.Request) {
		if err := s.Delete(actor(r), r.PathValue("id")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
}

func actor(r *http.Request) string {
	p, _ := api.PrincipalFrom(r.Context())
	return p.Who()
}

func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrInvalid):
		httpapi.WriteError(w, http.StatusBadRequest, "invalid", err.Error())
	case errors.Is(err, ErrNotFound):
		httpapi.WriteError(w, http.StatusNotFound, "not_found", err.Error()+" (GET /api/v1/staff lists staff)")
	case errors.Is(err, ErrConflict):
		httpapi.WriteError(w, http.StatusConflict, "conflict", err.Error())
	default:
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", "internal error: "+err.Error())
	}
}

func (s *Store) putStaff(w http.ResponseWriter, r *http.Request, create bool) {
	var e Edit
	if !httpapi.DecodeJSON(w, r, maxBody, &e) {
		return
	}
	if !create {
		if e.ID != "" && e.ID != r.PathValue("id") {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid", "the id in the body differs from the one in the path; ids cannot be changed (remove and create instead)")
			return
		}
		e.ID = r.PathValue("id")
	}
	p, err := s.Put(actor(r), e, create)
	if err != nil {
		writeErr(w, err)
		return
	}
	status := http.StatusOK
	if create {
		status = http.StatusCreated
	}
	httpapi.WriteJSON(w, status, p)
}

func (s *Store) getMe(w http.ResponseWriter, r *http.Request) {
	p, _ := api.PrincipalFrom(r.Context())
	httpapi.WriteJSON(w, http.StatusOK, p)
}

// SetCookie writes the session cookie: HttpOnly (no script reads it),
// Secure (HTTPS only), SameSite=Strict (no other site's page sends it).
// No Max-Age: it ends with the browser; the edge ends it when idle.
func SetCookie(w http.ResponseWriter, tok string) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: tok, Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

func clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

func (s *Store) postSignIn(w http.ResponseWriter, r *http.Request) {
	// The same-origin rule applies here too: another site's page must not
	// sign a browser in to an account of its choosing.
	if o := r.Header.Get("Origin"); o != "" && !sameOriginHost(o, r.Host) {
		httpapi.WriteError(w, http.StatusForbidden, "cross_origin", "sign in from the edge's own page")
		return
	}
	var c Credentials
	if !httpapi.DecodeJSON(w, r, maxBody, &c) {
		return
	}
	tok, si, err := s.SignInWith(c, remoteHost(r), r.UserAgent())
	var sd *SlowDown
	switch {
	case errors.As(err, &sd):
		w.Header().Set("Retry-After", strconv.Itoa(int(sd.Wait.Seconds())+1))
		httpapi.WriteError(w, http.StatusTooManyRequests, "slow_down", "too many wrong tries from here or for this name: wait "+sd.Wait.Round(1e9).String()+" and try again (nothing is locked)")
		return
	case errors.Is(err, ErrInvalid):
		httpapi.WriteError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	case err != nil:
		httpapi.WriteError(w, http.StatusUnauthorized, "wrong_credentials", "that name and password (or PIN) do not match; check them, or ask the school's admin")
		return
	}
	SetCookie(w, tok)
	httpapi.WriteJSON(w, http.StatusOK, si)
}

func (s *Store) postSignOut(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(CookieName); err == nil {
		if si, ok := s.SignOut(c.Value); ok {
			s.record(si.StaffID, "signout", si.ID, "")
		}
	}
	clearCookie(w)
	w.WriteHeader(http.StatusNoContent)
}

func sameOriginHost(origin, host string) bool {
	u, err := urlParse(origin)
	return err == nil && u == host
}

func remoteHost(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

// urlParse returns the host of an Origin header.
func urlParse(origin string) (string, error) {
	u, err := url.Parse(origin)
	if err != nil {
		return "", err
	}
	return u.Host, nil
}
