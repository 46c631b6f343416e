package api

import (
	"net/http"
	"slices"

	"github.com/campusedge/campusedge/edge/httpapi"
)

// Devices and rooms: rename and delete classrooms, label and unpair
// terminals, and the paired screen's cookie.
func (s *Server) manageRoutes() {
	s.HandleFunc("PATCH /api/v1/classrooms/{id}", s.Admin(s.patchClassroom))
	s.HandleFunc("DELETE /api/v1/classrooms/{id}", s.Admin(s.deleteClassroom))
	s.HandleFunc("PATCH /api/v1/terminals/{id}", s.Admin(s.patchTerminal))
	s.HandleFunc("DELETE /api/v1/terminals/{id}", s.Admin(s.unpair))
	s.HandleFunc("POST /api/v1/classroom/screen", s.postScreenCookie)
	s.HandleFunc("DELETE /api/v1/classroom/screen", s.deleteScreenCookie)
	s.HandleFunc("GET /api/v1/permissions", s.Admin(s.permissions))
}

// OnUnpair registers f to run when a terminal is unpaired: capabilities
// revoke what they gave it (the live class's page token) and close its
// connections; f returns how many it closed.
func (s *Server) OnUnpair(f func(terminalID string) int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onUnpair = append(s.onUnpair, f)
}

// audit records an entry when an audit log is wired.
func (s *Server) audit(r *http.Request, action, target, detail string) {
	if s.cfg.Audit == nil {
		return
	}
	p, _ := PrincipalFrom(r.Context())
	s.cfg.Audit.Record(p.Who(), action, target, detail)
}

// Record adds an entry to the audit log (a no-op without one), for
// capabilities that register on this server.
func (s *Server) Record(actor, action, target, detail string) {
	if s.cfg.Audit != nil {
		s.cfg.Audit.Record(actor, action, target, detail)
	}
}

// PatchClassroomRequest renames a classroom (empty fields are kept).
type PatchClassroomRequest struct {
	Name     string `json:"name,omitempty"`
	RoomCode string `json:"room_code,omitempty"`
}

func (s *Server) patchClassroom(w http.ResponseWriter, r *http.Request) {
	var req PatchClassroomRequest
	if !httpapi.DecodeJSON(w, r, 4<<10, &req) {
		return
	}
	c, err := s.cfg.Fleet.RenameClassroom(r.PathValue("id"), req.Name, req.RoomCode)
	if err != nil {
		fleetError(w, err)
		return
	}
	s.audit(r, "classroom.rename", c.ID, c.RoomCode+" "+c.Name)
	httpapi.WriteJSON(w, http.StatusOK, c)
}

func (s *Server) deleteClassroom(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.cfg.Fleet.DeleteClassroom(id); err != nil {
		fleetError(w, err)
		return
	}
	s.audit(r, "classroom.delete", id, "")
	w.WriteHeader(http.StatusNoContent)
}

// PatchTerminalRequest labels a terminal.
type PatchTerminalRequest struct {
	Kind string `json:"kind,omitempty"` // big_screen or agent
	Name string `json:"name,omitempty"`
}

func (s *Server) patchTerminal(w http.ResponseWriter, r *http.Request) {
	var req PatchTerminalRequest
	if !httpapi.DecodeJSON(w, r, 4<<10, &req) {
		return
	}
	t, err := s.cfg.Fleet.LabelTerminal(r.PathValue("id"), req.Kind, req.Name)
	if err != nil {
		fleetError(w, err)
		return
	}
	s.audit(r, "terminal.label", t.ID, t.Kind+" "+t.Name)
	httpapi.WriteJSON(w, http.StatusOK, t)
}

// unpair forgets a terminal: its token is refused from now on (the store
// no longer has it) and its open control connections close.
func (s *Server) unpair(w http.ResponseWriter, r *http.Request) {
	t, err := s.cfg.Fleet.Unpair(r.PathValue("id"))
	if err != nil {
		fleetError(w, err)
		return
	}
	closed := s.CloseTerminal(t.ID)
	s.mu.Lock()
	hooks := slices.Clone(s.onUnpair)
	s.mu.Unlock()
	for _, f := range hooks {
		closed += f(t.ID)
	}
	s.log.Info("terminal unpaired", "terminal", t.ID, "classroom", t.ClassroomID, "connections_closed", closed)
	s.audit(r, "terminal.unpair", t.ID, "classroom "+t.ClassroomID)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"terminal": t, "connections_closed": closed})
}

// postScreenCookie: a classroom page just paired (or opened by classterm
// -kiosk with its token) hands its terminal token over once, as the
// bearer, and gets it back as an HttpOnly cookie, so that no script on the
// page keeps the credential. It lasts 400 days (the browser maximum): a
// screen stays paired until it is unpaired in the console.
func (s *Server) postScreenCookie(w http.ResponseWriter, r *http.Request) {
	tok, ok := httpapi.BearerToken(r)
	p, _ := PrincipalFrom(r.Context())
	if !ok || p.Kind != KindScreen {
		// The admin passes the table but is no screen.
		httpapi.WriteError(w, http.StatusBadRequest, "invalid", "this call turns a paired terminal's token into this browser's screen cookie: send that token as 'Authorization: Bearer <token>'")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: ScreenCookie, Value: tok, Path: "/", MaxAge: 400 * 24 * 3600, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"terminal_id": p.TerminalID, "classroom_id": p.ClassroomID})
}

// deleteScreenCookie forgets the screen's cookie in this browser.
func (s *Server) deleteScreenCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: ScreenCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}
