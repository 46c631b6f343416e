package classroom

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/campusedge/campusedge/classroom/attendance"
	"github.com/campusedge/campusedge/classroom/learning"
	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/sync/schooldata"
)

// register registers the learning-record, roster and classroom-page
// routes (docs/API.md, "Classroom experience").
func (x *interaction) register(srv *api.Server) {
	x.srv = srv
	srv.OnUnpair(x.terminalUnpaired)
	srv.HandleFunc("GET /api/v1/sessions/{id}/records", srv.Admin(x.getRecords))
	srv.HandleFunc("GET /api/v1/sessions/{id}/attendance", srv.Admin(x.getAttendance))
	srv.HandleFunc("POST /api/v1/assistant/join", x.postAssistantJoin)
	srv.HandleFunc("PUT /api/v1/attendance/roster", srv.Admin(x.putRoster))
	srv.HandleFunc("GET /api/v1/attendance/roster", srv.Admin(x.getRoster))
	srv.HandleFunc("GET /api/v1/classroom/current", x.getCurrent)
	srv.Registry().MustRegister(x.records, x.recordErrors)
}

// sessionParam finds the session of the path for its admin or the
// teacher who owns it (the permission table lets teachers through; this
// narrows them to their own).
func (x *interaction) sessionParam(w http.ResponseWriter, r *http.Request) (session.Session, bool) {
	s, err := x.sessions.Get(r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no such session on this edge (GET /api/v1/sessions lists them)")
		return session.Session{}, false
	}
	if p, _ := api.PrincipalFrom(r.Context()); !p.IsAdmin() && s.Owner != p.StaffID {
		httpapi.WriteError(w, http.StatusForbidden, "forbidden", "this session belongs to another teacher; only they or an admin can see its records")
		return session.Session{}, false
	}
	return s, true
}

// getRecords: GET /api/v1/sessions/{id}/records[?kind=quiz|attendance][&limit=N]
func (x *interaction) getRecords(w http.ResponseWriter, r *http.Request) {
	s, ok := x.sessionParam(w, r)
	if !ok {
		return
	}
	if x.store == nil {
		httpapi.WriteError(w, http.StatusNotFound, "no_store", "this edge keeps no learning records")
		return
	}
	kind := r.URL.Query().Get("kind")
	if kind != "" && kind != "quiz" && kind != "attendance" && kind != "session" {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid", "kind must be quiz, attendance or session (or absent for all)")
		return
	}
	if kind != "" {
		kind += "."
	}
	limit := 1000
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid", "limit must be 1..10000")
			return
		}
		limit = n
	}
	recs, err := x.store.Session(s.ID, kind, limit)
	if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "store", "reading the records failed: "+err.Error())
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"session_id": s.ID, "records": recs})
}

// ClassroomAttendance is one classroom's attendance in a session.
type ClassroomAttendance struct {
	Joins  int `json:"joins"`
	Leaves int `json:"leaves"`
	// Reconnects are joins within the reconnect grace of vanishing (a
	// network blip, an edge restart): no leave was recorded for them.
	Reconnects int               `json:"reconnects"`
	Present    bool              `json:"present"` // joined and not left (terminal or assistant)
	Events     []learning.Record `json:"events"`
	Marks      map[string]string `json:"marks"` // student → last mark
}

// getAttendance: GET /api/v1/sessions/{id}/attendance — joins, leaves and
// marks per classroom, from the stored records.
func (x *interaction) getAttendance(w http.ResponseWriter, r *http.Request) {
	s, ok := x.sessionParam(w, r)
	if !ok {
		return
	}
	out := map[string]*ClassroomAttendance{}
	for _, c := range s.Classrooms {
		out[c] = &ClassroomAttendance{Events: []learning.Record{}, Marks: map[string]string{}}
	}
	if x.store != nil {
		recs, err := x.store.Session(s.ID, "attendance.", 0)
		if err != nil {
			httpapi.WriteError(w, http.StatusInternalServerError, "store", "reading the records failed: "+err.Error())
			return
		}
		open := map[string]int{}
		for _, rec := range recs {
			a := out[rec.Classroom]
			if a == nil {
				continue
			}
			switch rec.Kind {
			case learning.KindAttendanceJoin:
				// A reconnect (back within the grace, no leave recorded)
				// is not another join: the room was present throughout.
				var d struct {
					Reconnect bool `json:"reconnect"`
				}
				if json.Unmarshal(rec.Data, &d) == nil && d.Reconnect {
					a.Reconnects++
				} else {
					a.Joins++
					open[rec.Classroom]++
				}
				a.Events = append(a.Events, rec)
			case learning.KindAttendanceLeave:
				a.Leaves++
				open[rec.Classroom]--
				a.Events = append(a.Events, rec)
			case learning.KindAttendanceMark:
				var d struct {
					Status string `json:"status"`
				}
				if err := json.Unmarshal(rec.Data, &d); err == nil {
					a.Marks[rec.Student] = d.Status
				}
			}
		}
		for c, n := range open {
			if a := out[c]; a != nil {
				a.Present = n > 0
			}
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"session_id": s.ID, "state": s.State, "classrooms": out})
}

// putRoster: PUT /api/v1/attendance/roster with a roster CSV. Any bad row
// refuses the whole file with the rows listed; nothing is imported.
func (x *interaction) putRoster(w http.ResponseWriter, r *http.Request) {
	src := x.roster
	if src == nil {
		httpapi.WriteError(w, http.StatusNotFound, "no_roster", "this edge keeps no roster")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		httpapi.WriteError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send the roster as 'Content-Type: text/csv' with the header name,homeroom (and optionally student_id, groups; or 姓名,班级,学号,教学班)")
		return
	}
	n, enc, err := src.ImportCSV(http.MaxBytesReader(w, r.Body, schooldata.MaxFileBytes))
	var ie *schooldata.ImportError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ie):
		httpapi.WriteJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{
			"code": "invalid_rows", "message": "nothing was imported: fix these rows and send the whole file again: " + err.Error(),
			"encoding": ie.Encoding, "rows": ie.Problems}})
		return
	case errors.As(err, &mbe):
		httpapi.WriteError(w, http.StatusRequestEntityTooLarge, "body_too_large", "the roster is larger than 16 MiB")
		return
	case err != nil:
		httpapi.WriteError(w, http.StatusInternalServerError, "store", "storing the roster failed: "+err.Error())
		return
	}
	x.log.Info("roster imported", "students", n, "encoding", enc)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"students": n, "encoding": enc})
}

func (x *interaction) getRoster(w http.ResponseWriter, r *http.Request) {
	if x.roster == nil {
		httpapi.WriteError(w, http.StatusNotFound, "no_roster", "this edge keeps no roster")
		return
	}
	ro, src, err := x.roster.Roster()
	if errors.Is(err, attendance.ErrNoRoster) {
		httpapi.WriteError(w, http.StatusNotFound, "no_roster", err.Error())
		return
	} else if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "store", err.Error())
		return
	}
	classes := ro.Classes
	if classes == nil {
		classes = []schooldata.Named{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"source": src, "students": ro.Students, "classes": classes})
}

// Current is what a classroom's paired big-screen browser polls. It holds
// no assistant credential: the big screen is seen by the whole class, so
// the assistant's tools are reached from another device, by the code (and
// QR code) shown here and an assistant's own sign-in.
type Current struct {
	Classroom string           `json:"classroom_id"`
	Name      string           `json:"classroom_name,omitempty"`
	Session   *session.Session `json:"session"` // null when no session includes this classroom
	Terminal  string           `json:"terminal_token,omitempty"`
	// AssistantCode is typed on the assistant page (assistant.html) to
	// reach this classroom; AssistantURL has it in its fragment and
	// AssistantQR is that URL as a PNG QR code (a data: URL).
	AssistantCode string `json:"assistant_code"`
	AssistantURL  string `json:"assistant_url"`
	AssistantQR   string `json:"assistant_qr,omitempty"`
}

// getCurrent: GET /api/v1/classroom/current with a paired terminal's token
// returns the newest session (created or live) that includes its classroom
// and this classroom's terminal token for it, so the page joins by itself
// when the class starts, and the code for the assistant's device.
func (x *interaction) getCurrent(w http.ResponseWriter, r *http.Request) {
	p, _ := api.PrincipalFrom(r.Context())
	cid := p.ClassroomID
	if p.IsAdmin() {
		// The admin sees what a classroom's screen sees (support, checks).
		if cid = r.URL.Query().Get("classroom"); cid == "" {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid", "the admin names the classroom: ?classroom=<id>")
			return
		}
		if x.classroomName != nil && x.classroomName(cid) == "" {
			httpapi.WriteError(w, http.StatusNotFound, "not_found", "no such classroom (GET /api/v1/classrooms lists them)")
			return
		}
	} else if p.Kind != api.KindScreen || cid == "" {
		httpapi.WriteError(w, http.StatusUnauthorized, "unauthorized", "send 'Authorization: Bearer <token>' with this classroom's paired terminal token (pair the page with a code from the console)")
		return
	}
	cur := Current{Classroom: cid, AssistantCode: x.codes.code(cid)}
	cur.AssistantURL = "https://" + r.Host + "/assistant.html#code=" + cur.AssistantCode
	cur.AssistantQR = x.codes.qr(cur.AssistantURL)
	if x.classroomName != nil {
		cur.Name = x.classroomName(cid)
	}
	if s := x.currentSession(cid); s != nil {
		cur.Session = s
		x.codes.keep(s.ID, cid, cur.AssistantCode, x.put)
		if p.Kind == api.KindScreen { // the admin looking gets no token
			t, err := x.pageToken(x.sessions, s.ID, cid, p.TerminalID)
			if err != nil {
				httpapi.WriteError(w, http.StatusConflict, "session_ended", err.Error())
				return
			}
			cur.Terminal = t
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, cur)
}

// currentSession is the newest session not ended that includes cid.
func (x *interaction) currentSession(cid string) *session.Session {
	list := x.sessions.List()
	for i := len(list) - 1; i >= 0; i-- {
		s := list[i]
		if s.State != session.StateEnded && containsString(s.Classrooms, cid) {
			return &s
		}
	}
	return nil
}

// AssistantJoin is the body of POST /api/v1/assistant/join.
type AssistantJoin struct {
	Code string `json:"code"`
}

// AssistantView is its answer: the classroom the code names, its session
// now (null when none) and, during one, the classroom's assistant token
// for the control channel. The page keeps the token in memory only.
type AssistantView struct {
	Classroom string           `json:"classroom_id"`
	Name      string           `json:"classroom_name,omitempty"`
	Session   *session.Session `json:"session"`
	Assistant string           `json:"assistant_token,omitempty"`
}

// postAssistantJoin: a signed-in assistant (the permission table) types
// the code on the big screen; an assistant assigned to classrooms reaches
// only those.
func (x *interaction) postAssistantJoin(w http.ResponseWriter, r *http.Request) {
	var req AssistantJoin
	if !httpapi.DecodeJSON(w, r, 1<<10, &req) {
		return
	}
	cid, ok := x.codes.classroom(strings.TrimSpace(req.Code))
	if !ok {
		httpapi.WriteError(w, http.StatusNotFound, "unknown_code", "no classroom shows that code; type the 6 digits shown on the classroom's big screen")
		return
	}
	p, _ := api.PrincipalFrom(r.Context())
	if !p.IsAdmin() && len(p.Classrooms) > 0 && !containsString(p.Classrooms, cid) && !containsString(p.Classrooms, x.roomCode(cid)) {
		httpapi.WriteError(w, http.StatusForbidden, "forbidden", "you are not an assistant of this classroom; ask the school's admin to add it to your account")
		return
	}
	v := AssistantView{Classroom: cid}
	if x.classroomName != nil {
		v.Name = x.classroomName(cid)
	}
	if s := x.currentSession(cid); s != nil {
		x.codes.keep(s.ID, cid, strings.TrimSpace(req.Code), x.put)
		a, minted, err := x.assistantToken(x.sessions, s.ID, cid, p.Who())
		if err != nil {
			httpapi.WriteError(w, http.StatusConflict, "session_ended", err.Error())
			return
		}
		v.Session, v.Assistant = s, a
		if minted && x.srv != nil {
			x.srv.Record(p.Who(), "assistant.join", s.ID, "classroom "+cid)
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, v)
}

// roomCode is a classroom's room code ("" if unknown): the city's staff
// list names an assistant's classrooms by room code.
func (x *interaction) roomCode(cid string) string {
	if x.roster == nil || x.roster.Room == nil {
		return ""
	}
	return x.roster.Room(cid)
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
