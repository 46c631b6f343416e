package session

import (
	"errors"
	"net/http"

	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/httpapi"
)

// maxCreateBody bounds POST /api/v1/sessions: 100 classroom ids of 64 bytes
// and a title fit in well under 16 KiB.
const maxCreateBody = 16 << 10

// CreateResponse is the 201 body of POST /api/v1/sessions: the session plus
// its tokens, which are shown this once.
type CreateResponse struct {
	Session
	Tokens Tokens `json:"tokens"`
}

// Handlers serves the session API.
type Handlers struct {
	M *Manager
	// IsAdmin checks the edge admin token.
	IsAdmin func(token string) bool
	// Recording, if set, reports the recording of a session; GET
	// /api/v1/sessions/{id} shows it as "recording".
	Recording func(id string) any

	srv *api.Server // for the audit log
}

// sessionView is GET /api/v1/sessions/{id}: the session and its recording.
type sessionView struct {
	Session
	Recording any `json:"recording,omitempty"`
}

// Register adds the session routes to srv.
func (h *Handlers) Register(srv *api.Server) {
	h.srv = srv
	srv.HandleFunc("POST /api/v1/sessions", h.create)
	srv.HandleFunc("GET /api/v1/sessions", h.list)
	srv.HandleFunc("GET /api/v1/sessions/{id}", h.get)
	srv.HandleFunc("POST /api/v1/sessions/{id}/start", h.start)
	srv.HandleFunc("POST /api/v1/sessions/{id}/end", h.end)
}

// caller is who made a request: the admin, a signed-in teacher, or a role
// in one session.
type caller struct {
	admin   bool
	teacher string // staff id of a signed-in teacher
	grant   Grant
}

// Caller resolves who made r for session id ("" for calls on no session):
// the admin (token or signed-in), a signed-in teacher (who acts as the
// master of the sessions they own), or a session token's role. It writes
// the error itself.
func Caller(w http.ResponseWriter, r *http.Request, m *Manager, isAdmin func(string) bool, id string) (admin bool, g Grant, ok bool) {
	c, ok := (&Handlers{M: m, IsAdmin: isAdmin}).authorize(w, r, id)
	if !ok {
		return false, Grant{}, false
	}
	if c.teacher != "" {
		return false, Grant{SessionID: id, Role: RoleMaster}, true
	}
	return c.admin, c.grant, true
}

// authorize checks the signed-in person or the bearer token: the admin,
// a teacher on the sessions they own, or, when id is not empty, the
// tokens of session id. It writes the error itself.
func (h *Handlers) authorize(w http.ResponseWriter, r *http.Request, id string) (caller, bool) {
	if p, ok := api.PrincipalFrom(r.Context()); ok && p.Kind != api.KindScreen {
		if p.IsAdmin() {
			return caller{admin: true}, true
		}
		if !p.Has(api.RoleTeacher) {
			httpapi.WriteError(w, http.StatusForbidden, "forbidden", "only teachers and admins manage sessions")
			return caller{}, false
		}
		if id != "" {
			s, err := h.M.Get(id)
			if err != nil {
				WriteError(w, err)
				return caller{}, false
			}
			if s.Owner != p.StaffID {
				httpapi.WriteError(w, http.StatusForbidden, "forbidden", "this session belongs to another teacher; only they or an admin can manage it")
				return caller{}, false
			}
		}
		return caller{teacher: p.StaffID}, true
	}
	tok, ok := httpapi.BearerToken(r)
	if !ok {
		httpapi.WriteError(w, http.StatusUnauthorized, "unauthorized", "send 'Authorization: Bearer <token>': the admin token or a token of this session")
		return caller{}, false
	}
	if h.IsAdmin != nil && h.IsAdmin(tok) {
		return caller{admin: true}, true
	}
	if id == "" {
		httpapi.WriteError(w, http.StatusUnauthorized, "unauthorized", "this call needs the admin token (DATA/admin-token)")
		return caller{}, false
	}
	g, err := h.M.Authorize(id, tok)
	if err != nil {
		WriteAuthError(w, err)
		return caller{}, false
	}
	return caller{grant: g}, true
}

// WriteAuthError maps an Authorize error to 401 or 403.
func WriteAuthError(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrForbidden) {
		httpapi.WriteError(w, http.StatusForbidden, "forbidden", "this token belongs to another session")
		return
	}
	httpapi.WriteError(w, http.StatusUnauthorized, "unauthorized", "the token is not valid for any session on this edge")
}

// WriteError maps a Manager error to a response.
func WriteError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrInvalid):
		httpapi.WriteError(w, http.StatusBadRequest, "invalid", err.Error())
	case errors.Is(err, ErrNotFound):
		httpapi.WriteError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, ErrEnded):
		httpapi.WriteError(w, http.StatusConflict, "session_ended", err.Error())
	case errors.Is(err, ErrLimit):
		httpapi.WriteError(w, http.StatusTooManyRequests, "session_limit", err.Error())
	default:
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", "internal error: "+err.Error())
	}
}

func (h *Handlers) pathID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !ValidID(id) {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no session "+quote(id)+" (session ids are 24 hex characters)")
		return "", false
	}
	return id, true
}

func (h *Handlers) create(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, "")
	if !ok {
		return
	}
	var req CreateRequest
	if !httpapi.DecodeJSON(w, r, maxCreateBody, &req) {
		return
	}
	req.Owner = c.teacher
	s, toks, err := h.M.Create(req)
	if err != nil {
		WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, CreateResponse{Session: s, Tokens: toks})
}

func (h *Handlers) list(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, "")
	if !ok {
		return
	}
	list := h.M.List()
	if !c.admin {
		mine := []Session{}
		for _, s := range list {
			if s.Owner == c.teacher {
				mine = append(mine, s)
			}
		}
		list = mine
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"sessions": list})
}

func (h *Handlers) get(w http.ResponseWriter, r *http.Request) {
	id, ok := h.pathID(w, r)
	if !ok {
		return
	}
	if _, ok := h.authorize(w, r, id); !ok {
		return
	}
	s, err := h.M.Get(id)
	if err != nil {
		WriteError(w, err)
		return
	}
	v := sessionView{Session: s}
	if h.Recording != nil {
		v.Recording = h.Recording(id)
	}
	httpapi.WriteJSON(w, http.StatusOK, v)
}

// canControl: only the admin and the master teacher start and end a class.
func canControl(c caller) bool { return c.admin || c.teacher != "" || c.grant.Role == RoleMaster }

func (h *Handlers) start(w http.ResponseWriter, r *http.Request) {
	h.transition(w, r, "start", h.M.Start)
}

func (h *Handlers) end(w http.ResponseWriter, r *http.Request) {
	h.transition(w, r, "end", h.M.End)
}

func (h *Handlers) transition(w http.ResponseWriter, r *http.Request, verb string, f func(string) (Session, error)) {
	id, ok := h.pathID(w, r)
	if !ok {
		return
	}
	c, ok := h.authorize(w, r, id)
	if !ok {
		return
	}
	if !canControl(c) {
		httpapi.WriteError(w, http.StatusForbidden, "forbidden", "the "+string(c.grant.Role)+" token cannot "+verb+" a session; only the master teacher or the admin can")
		return
	}
	s, err := f(id)
	if err != nil {
		WriteError(w, err)
		return
	}
	if h.srv != nil {
		who := "session " + string(c.grant.Role) + " token"
		if p, ok := api.PrincipalFrom(r.Context()); ok {
			who = p.Who()
		}
		h.srv.Record(who, "session."+verb, id, s.Title)
	}
	httpapi.WriteJSON(w, http.StatusOK, s)
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return `"` + s + `"`
}
