package api

// Permissions is the edge's one permission table: for every route any
// capability registers, who may call it (docs/API.md, "Permissions",
// prints it). The guard in front of every route enforces it, and
// TestPermissionTable (cmd/edged/appliance) walks the routes of a real
// edge and calls each one as every role, so a route without a row here,
// or a row that lets the wrong role through, fails the suite.
//
// The admin token (DATA/admin-token) and a signed-in admin may call
// everything; the rows say who else may. Own names the narrowing the
// handler adds (a teacher reaches only their own sessions).
func Permissions() map[string]Rule {
	var (
		public    = Rule{Public: true}
		admin     = Rule{}
		teacher   = Rule{Staff: []Role{RoleTeacher}}
		staff     = Rule{Staff: []Role{RoleTeacher, RoleAssistant}}
		assistant = Rule{Staff: []Role{RoleAssistant}, Own: "assistant: a classroom they are assigned to (or any, if unassigned)"}
		screen    = Rule{Screen: true}
		// ownSession: teachers on the sessions they created; live-class
		// session tokens (master, and what the handler allows) too.
		ownSession = Rule{Staff: []Role{RoleTeacher}, Token: true, Own: "teacher: sessions they created"}
		tokenOnly  = Rule{Token: true, Machine: true}
		// endResource: the token that made a WHIP/WHEP resource, the
		// master's, or an admin ends it.
		endResource = Rule{Token: true, Own: "session tokens: the one that made it, or the master's"}
	)
	return map[string]Rule{
		// Platform
		"GET /healthz":                public,
		"GET /metrics":                public,
		"GET /api/v1/edge":            public,
		"/api/v1/":                    public, // the JSON 404 for unknown endpoints
		"/":                           public, // pages: the console, teacher, classroom and assistant pages
		"GET /api/v1/ws":              public, // the control channel authenticates its hello
		"POST /api/v1/pair":           public, // a pairing code is the credential
		"POST /api/v1/pair/start":     public,
		"POST /api/v1/pair/finish":    public,
		"GET /api/v1/tls":             public,
		"GET /api/v1/tls/ca.pem":      public,
		"GET /api/v1/debug/pprof/":    admin,
		"GET /media/{id}":             public, // lessons on the LAN, as DESIGN.md fixes
		"GET /api/v1/firmware":        public,
		"POST /api/v1/firmware/check": admin,
		"GET /api/v1/terminal-images": admin,
		// Terminal images for classterm agents on the LAN, as before the
		// table: bundles are signed and the terminal verifies them; the
		// edge fetches only models the hub lists (issue 14, finding 8).
		"GET /api/v1/terminal-images/{model}":        public,
		"GET /api/v1/terminal-images/{model}/bundle": public,
		"GET /api/v1/sync":                           admin,
		"POST /api/v1/sync/enrol":                    admin,
		"POST /api/v1/sync/records":                  admin,
		"GET /api/v1/sync/roster":                    admin,
		"GET /api/v1/sync/timetable":                 admin,
		"GET /api/v1/classrooms":                     teacher, // the teacher page lists rooms to teach
		"POST /api/v1/classrooms":                    admin,
		"GET /api/v1/classrooms/{id}":                teacher,
		"PATCH /api/v1/classrooms/{id}":              admin,
		"DELETE /api/v1/classrooms/{id}":             admin,
		"POST /api/v1/classrooms/{id}/pairing-codes": admin,
		"PUT /api/v1/classrooms/{id}/homeroom":       admin,
		"GET /api/v1/terminals":                      admin,
		"GET /api/v1/discovery":                      admin,
		"PATCH /api/v1/terminals/{id}":               admin,
		"DELETE /api/v1/terminals/{id}":              admin,

		// Resource cache
		"GET /api/v1/cache":                         admin,
		"PUT /api/v1/cache/pins/{id}":               admin,
		"DELETE /api/v1/cache/pins/{id}":            admin,
		"GET /api/v1/cache/timetable":               admin,
		"PUT /api/v1/cache/timetable/{id}":          admin,
		"DELETE /api/v1/cache/timetable/{id}":       admin,
		"PUT /api/v1/cache/bandwidth":               admin,
		"POST /api/v1/media":                        {Staff: []Role{RoleTeacher}, Own: "teacher: their own uploads"},
		"GET /api/v1/catalog":                       teacher,
		"GET /api/v1/attendance/roster":             admin,
		"PUT /api/v1/attendance/roster":             admin,
		"POST /api/v1/sessions":                     teacher,
		"GET /api/v1/sessions":                      {Staff: []Role{RoleTeacher}, Own: "teacher: sessions they created"},
		"GET /api/v1/sessions/{id}":                 ownSession,
		"POST /api/v1/sessions/{id}/start":          ownSession,
		"POST /api/v1/sessions/{id}/end":            ownSession,
		"GET /api/v1/sessions/{id}/records":         {Staff: []Role{RoleTeacher}, Own: "teacher: sessions they created"},
		"GET /api/v1/sessions/{id}/attendance":      {Staff: []Role{RoleTeacher}, Own: "teacher: sessions they created"},
		"POST /api/v1/sessions/{id}/recording/stop": ownSession,
		"PUT /api/v1/sessions/{id}/upstream":        admin, // the cascade: the school's admin points a session at another edge
		"GET /api/v1/sessions/{id}/upstream":        admin,
		"DELETE /api/v1/sessions/{id}/upstream":     admin,
		"GET /api/v1/cascade/links":                 teacher, // every cascade link's state, estimate, layer and loss (the console's panel)
		"GET /api/v1/classroom/current":             screen,
		"POST /api/v1/assistant/join":               assistant,

		// WHIP and WHEP: machine clients (OBS, another edge) with session tokens.
		"POST /whip/{session}":                tokenOnly,
		"OPTIONS /whip/{session}":             public,
		"/whip/{session}":                     public, // 405 with Allow
		"DELETE /whip/{session}/{resource}":   endResource,
		"PATCH /whip/{session}/{resource}":    public, // 405: no trickle
		"OPTIONS /whip/{session}/{resource}":  public,
		"/whip/{session}/{resource}":          public,
		"POST /whep/{session}":                tokenOnly,
		"OPTIONS /whep/{session}":             public,
		"/whep/{session}":                     public,
		"DELETE /whep/{session}/{resource}":   endResource,
		"GET /whep/{session}/{resource}/link": tokenOnly, // a downstream edge asks how this edge sees its pull's link
		"PATCH /whep/{session}/{resource}":    public,
		"OPTIONS /whep/{session}/{resource}":  public,
		"/whep/{session}/{resource}":          public,

		// People (edge/staff) and the audit log
		"POST /api/v1/auth/signin":         public, // the password is the credential; slowed per account and address
		"POST /api/v1/auth/signout":        public, // ends the caller's own sign-in, if any
		"GET /api/v1/auth/me":              staff,
		"GET /api/v1/auth/signins":         admin,
		"DELETE /api/v1/auth/signins/{id}": admin,
		"GET /api/v1/staff":                admin,
		"POST /api/v1/staff":               admin,
		"PUT /api/v1/staff/{id}":           admin,
		"DELETE /api/v1/staff/{id}":        admin,
		"GET /api/v1/audit":                admin,
		"GET /api/v1/permissions":          admin,
		"POST /api/v1/classroom/screen":    screen,
		"DELETE /api/v1/classroom/screen":  public, // forgets this browser's screen cookie only

		// Pages (classroom/pages; the console's files go through "/").
		"GET /teacher.html":   public,
		"GET /teacher.js":     public,
		"GET /classroom.html": public,
		"GET /classroom.js":   public,
		"GET /assistant.html": public,
		"GET /assistant.js":   public,
		"GET /class.js":       public,
		"GET /class.css":      public,
		"GET /reconnect.js":   public,
		"GET /layers.js":      public,
	}
}
