// Package classroom is the live-class capability of the edge: sessions and
// their role tokens (classroom/session), the SFU that forwards media
// (classroom/sfu), the class-control protocol on the /api/v1/ws control
// channel (specified in docs/LIVE.md: every message is one row of the table
// in registry.go; class control in control*.go, quizzes and attendance in
// interact*.go), lesson recording (classroom/recorder), the standard ways
// in — WHIP (RFC 9725) to publish and WHEP to watch — and the cascade that
// takes a lesson from another school's edge (cascade.go). Live is the
// facade; Mount wires all of it onto the appliance's API server.
package classroom

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/classroom/attendance"
	"github.com/campusedge/campusedge/classroom/livestate"
	"github.com/campusedge/campusedge/classroom/pages"
	"github.com/campusedge/campusedge/classroom/recorder"
	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/httpapi"
)

// MaxSDPBytes bounds a WHIP/WHEP offer. Real offers are 2–10 KiB.
const MaxSDPBytes = 64 << 10

// negotiateTimeout bounds one offer/answer including ICE gathering.
const negotiateTimeout = 10 * time.Second

// iceRestartGrace is how long a control-channel peer's media connection is
// kept after its ICE failed (or, for a subscriber, while the edge's restart
// offers go unanswered) in a network blip that the control connection
// survives: the client (publish) or the edge (subscribe) restarts ICE on
// it meanwhile. Past it the connection closes as before and the client
// negotiates anew; the pages give up a little later (class.js), so the
// edge is never waiting for a client that already tore down.
const iceRestartGrace = 12 * time.Second

// Config wires the live-class capability.
type Config struct {
	Server *api.Server
	// IsAdmin checks the edge admin token.
	IsAdmin func(token string) bool
	// Classroom reports whether a classroom id exists (nil error) or not.
	Classroom session.ClassroomLookup
	// Listen is edged's HTTP listen address; an edge bound to one IP keeps
	// its media on that IP (see sfu.ICEAddrsForListen).
	Listen string
	// EdgeID is sent in the control channel's welcome.
	EdgeID string
	Logger *slog.Logger
	// Lessons keeps recorded lessons (the resource cache) and RecordDir
	// holds recordings being written; without both nothing is recorded.
	Lessons   LessonStore
	RecordDir string
	// Learning stores quiz answers and attendance (learning.Store); nil
	// keeps none. Attendance resolves rosters; nil: no roster.
	Learning   LearningStore
	Attendance *attendance.Source
	// ClassroomName names a classroom for its page ("" if unknown).
	ClassroomName func(id string) string
	// UpstreamRoots are the CAs the cascade trusts for an upstream edge
	// given without a pin (the system's plus the city root, so that two
	// city-signed edges trust each other); nil means the system's.
	UpstreamRoots func() *x509.CertPool
	// LiveState keeps sessions, stage, hands, mutes, quizzes and presence
	// across a restart (resume.go): Mount resumes what it holds. nil keeps
	// live state in memory only (a restart ends every class).
	LiveState *livestate.Store
	// ReconnectGrace is how long a vanished classroom has to come back
	// before its leave is recorded (0: DefaultReconnectGrace).
	ReconnectGrace time.Duration
	// Location and Language are the school's: recorded lessons are titled
	// with the date in them (nil: the host's zone; "": English).
	Location *time.Location
	Language string
	// Layers chooses a simulcast layer per subscriber from a send-side
	// bandwidth estimate (sfu.Config.NoLayers is its opposite).
	Layers bool
	// NoSVC: a VP9 SVC track is forwarded whole, and pages are told to
	// send simulcast instead (sfu.Config.NoSVC).
	NoSVC bool
}

// LessonStore keeps recorded lessons (the resource cache); see
// classroom/recorder.
type LessonStore = recorder.LessonStore

// Live is the running capability: a thin facade that wires its parts
// together and serves WHIP and WHEP (the standard ways in).
type Live struct {
	Sessions *session.Manager
	SFU      *sfu.SFU
	log      *slog.Logger
	isAdmin  func(string) bool
	budgets  *budgets // what each token may hold and write (limits.go)

	control     *control          // class control on the control channel (control.go)
	interaction *interaction      // quizzes and attendance (interact.go)
	recordings  *recorder.Manager // lesson recording (classroom/recorder)
	cascades    *cascades         // lessons taken from other edges (cascade.go)
	served      *servedLinks      // schools pulling lessons from this edge (cascadelinks.go)
}

// Mount builds sessions and the SFU and registers their routes.
func Mount(cfg Config) (*Live, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s, err := sfu.New(sfu.Config{Logger: cfg.Logger.With("component", "sfu"), ICEAddrs: sfu.ICEAddrsForListen(cfg.Listen), NoLayers: !cfg.Layers, NoSVC: cfg.NoSVC})
	if err != nil {
		return nil, fmt.Errorf("live classes: %w", err)
	}
	sessions := session.NewManager(cfg.Classroom)
	l := &Live{Sessions: sessions, SFU: s, log: cfg.Logger, isAdmin: cfg.IsAdmin, budgets: newBudgets(), served: newServedLinks()}
	l.recordings = recorder.New(cfg.Lessons, cfg.RecordDir, sessions, cfg.Logger.With("component", "recorder"), recorder.WithTitles(cfg.Location, cfg.Language))
	s.SetTap(l.recordings.Tap)
	l.control = &control{sessions: sessions, sfu: s, log: cfg.Logger, edgeID: cfg.EdgeID, classes: map[string]*class{}, budgets: l.budgets}
	l.interaction = newInteraction(sessions, cfg.Learning, cfg.Attendance, cfg.Logger)
	l.interaction.budgets = l.budgets
	l.interaction.control = l.control
	l.interaction.classroomName = cfg.ClassroomName
	l.cascades = &cascades{sfu: s, sessions: sessions, log: cfg.Logger, edgeID: cfg.EdgeID, isAdmin: cfg.IsAdmin,
		roots: cfg.UpstreamRoots, stageOf: l.control.stageOf, bySession: map[string]*upstream{}}
	l.control.interaction, l.control.cascades = l.interaction, l.cascades
	if cfg.ReconnectGrace > 0 {
		l.interaction.grace = cfg.ReconnectGrace
	}
	sessions.OnEnd(func(id string) {
		l.log.Info("session ended; closing its media", "session", id)
		l.control.ended(id)
		go l.cascades.stop(id) // not inline: End may run inside a handler the pull's teardown waits on
		s.CloseRoom(id)
		l.interaction.sessionEnded(id)
	})
	if cfg.LiveState != nil {
		l.control.state, l.interaction.state, l.cascades.state = cfg.LiveState, cfg.LiveState, cfg.LiveState
		if err := l.restore(cfg.LiveState, l.interaction.grace); err != nil {
			return nil, fmt.Errorf("live classes: %w", err)
		}
	}
	// After the restore: parts of a restored session wait for its end.
	l.recordings.Start()
	l.recordings.Register(cfg.Server, cfg.IsAdmin)
	l.interaction.register(cfg.Server)
	cfg.Server.HandleControl(l.control)
	l.cascades.register(cfg.Server)
	(&session.Handlers{M: sessions, IsAdmin: cfg.IsAdmin, Recording: l.recordings.Status}).Register(cfg.Server)
	l.registerMetrics(cfg.Server.Registry())
	l.registerWHIPWHEP(cfg.Server) // cors.go
	l.registerCascadeLinks(cfg.Server, cfg.Server.Registry())
	pages.Register(cfg.Server) // the teacher and classroom pages
	return l, nil
}

func (l *Live) registerMetrics(reg *prometheus.Registry) {
	gauge := func(name, help string, f func(sfu.Totals) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(l.SFU.Totals()) })
	}
	counter := func(name, help string, f func(sfu.Totals) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(l.SFU.Totals()) })
	}
	reg.MustRegister(l.budgets.refusals,
		gauge("campusedge_live_publishers", "Live-class publishers (WHIP) connected.", func(t sfu.Totals) float64 { return float64(t.Publishers) }),
		gauge("campusedge_live_subscribers", "Live-class subscribers (WHEP) connected.", func(t sfu.Totals) float64 { return float64(t.Subscribers) }),
		counter("campusedge_live_forwarded_packets_total", "RTP packets queued to subscribers.", func(t sfu.Totals) float64 { return float64(t.Forwarded) }),
		counter("campusedge_live_nacks_total", "NACK reports from subscribers (answered from the edge's packet cache).", func(t sfu.Totals) float64 { return float64(t.NACKs) }),
		counter("campusedge_live_twcc_reports_total", "Transport-wide congestion-control reports from subscribers.", func(t sfu.Totals) float64 { return float64(t.TWCC) }),
		counter("campusedge_live_remb_reports_total", "REMB bandwidth estimates from subscribers.", func(t sfu.Totals) float64 { return float64(t.REMB) }),
		counter("campusedge_live_video_pauses_total", "Times a subscriber's video was paused because its link lost too much (audio continues).", func(t sfu.Totals) float64 { return float64(t.VideoPauses) }),
		counter("campusedge_live_video_resumes_total", "Probes that resumed a paused subscriber's video.", func(t sfu.Totals) float64 { return float64(t.VideoResumes) }),
		counter("campusedge_live_prime_waits_total", "Joining subscriber tracks that waited for a priming slot (too many were being sent the cached pictures at once).", func(t sfu.Totals) float64 { return float64(t.PrimeWaits) }),
		counter("campusedge_live_prime_keyframe_starts_total", "Joining subscriber tracks that, while waiting to be primed, started at the publisher's next keyframe instead.", func(t sfu.Totals) float64 { return float64(t.PrimeKeyframeStarts) }),
		counter("campusedge_live_ice_restarts_total", "ICE restarts the edge offered to subscribers whose media connection went disconnected or failed.", func(t sfu.Totals) float64 { return float64(t.ICERestarts) }),
		counter("campusedge_live_ice_recovered_total", "Media connections back after ICE went disconnected or failed, without a new negotiation.", func(t sfu.Totals) float64 { return float64(t.ICERecovered) }),
		counter("campusedge_live_dropped_packets_total", "RTP packets dropped because a subscriber's queue was full (that subscriber only).", func(t sfu.Totals) float64 { return float64(t.Dropped) }),
	)
	l.registerLiveGauges(reg) // gauges.go
	reg.MustRegister(newLinkCollector(l.SFU))
}

// Close stops every cascade and ends all media. Sessions kept in LiveState
// resume at the next start; without it they go with the process.
func (l *Live) Close() {
	l.cascades.stopAll()
	l.SFU.Close()
	l.recordings.Close() // after the SFU: the publishers have gone, the parts are finalised and saved
}

// noTrickle answers PATCH: RFC 9725 §4.3.1 lets a server without trickle
// ICE answer 405; clients then rely on the candidates in the offer.
func noTrickle(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", resourceAllow)
	httpapi.WriteError(w, http.StatusMethodNotAllowed, "trickle_not_supported", "this edge does not take trickle ICE; put every candidate in the offer (wait for ICE gathering to complete)")
}

// authorize checks the session id and the bearer token; master says
// whether only the master teacher's token will do.
func (l *Live) authorize(w http.ResponseWriter, r *http.Request, master bool) (session.Grant, bool) {
	id := r.PathValue("session")
	if !session.ValidID(id) {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no such session (session ids are 24 hex characters)")
		return session.Grant{}, false
	}
	tok, ok := httpapi.BearerToken(r)
	if !ok {
		httpapi.WriteError(w, http.StatusUnauthorized, "unauthorized", "send 'Authorization: Bearer <token>' with a token of this session")
		return session.Grant{}, false
	}
	g, err := l.Sessions.Authorize(id, tok)
	if err != nil {
		session.WriteAuthError(w, err)
		return session.Grant{}, false
	}
	if master && g.Role != session.RoleMaster && g.Role != session.RoleCascade {
		httpapi.WriteError(w, http.StatusForbidden, "forbidden", "only the master teacher's token (or another edge's cascade token) may publish; the "+string(g.Role)+" token can watch with WHEP")
		return session.Grant{}, false
	}
	return g, true
}

// readOffer reads an application/sdp body of at most MaxSDPBytes.
func readOffer(w http.ResponseWriter, r *http.Request) (string, bool) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/sdp" {
		httpapi.WriteError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send the SDP offer with 'Content-Type: application/sdp'")
		return "", false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxSDPBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpapi.WriteError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the SDP offer is larger than %d bytes", MaxSDPBytes))
		} else {
			httpapi.WriteError(w, http.StatusBadRequest, "bad_request", "could not read the body: "+err.Error())
		}
		return "", false
	}
	offer := string(b)
	if !strings.HasPrefix(offer, "v=0") {
		httpapi.WriteError(w, http.StatusBadRequest, "bad_sdp", "the body is not an SDP offer (it must start with v=0)")
		return "", false
	}
	return offer, true
}

func writeSFUError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, sfu.ErrBusy):
		httpapi.WriteError(w, http.StatusConflict, "already_publishing", "someone is already publishing to this session; DELETE their WHIP resource first")
	case errors.Is(err, sfu.ErrNoPublisher):
		httpapi.WriteError(w, http.StatusConflict, "no_publisher", "nobody is publishing to this session yet; try again when the master teacher is live ("+err.Error()+")")
	case errors.Is(err, sfu.ErrBadOffer):
		httpapi.WriteError(w, http.StatusBadRequest, "bad_sdp", err.Error())
	case errors.Is(err, sfu.ErrNotFound):
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no such WHIP/WHEP resource (it may have ended already)")
	case errors.Is(err, sfu.ErrClosed):
		httpapi.WriteError(w, http.StatusServiceUnavailable, "shutting_down", "the edge is shutting down")
	case errors.Is(err, context.DeadlineExceeded):
		httpapi.WriteError(w, http.StatusServiceUnavailable, "timeout", "negotiation took too long: "+err.Error())
	default:
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", "internal error: "+err.Error())
	}
}

func writeAnswer(w http.ResponseWriter, location, answer string) {
	w.Header().Set("Location", location)
	w.Header().Set("Content-Type", "application/sdp")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

// whip: POST /whip/{session} with the master token publishes, and starts
// the session if it has not started.
func (l *Live) whip(w http.ResponseWriter, r *http.Request) {
	g, ok := l.authorize(w, r, true)
	if !ok {
		return
	}
	offer, ok := readOffer(w, r)
	if !ok {
		return
	}
	source := sfu.SourceMaster
	if g.Role == session.RoleCascade {
		// Another school's on-stage classroom, sent back up the cascade:
		// ?school=<code> names it (its edge id by default).
		school := r.URL.Query().Get("school")
		if !validSchool(school) {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid", "a cascade publish needs ?school=<1-32 of a-z, 0-9, - naming the sending school>")
			return
		}
		source = sourceRemote(school)
		if l.SFU.Publishers(g.SessionID, sourceRemote("")) >= MaxCascadePublishersPerSession {
			l.budgets.refusals.WithLabelValues(limitCascadePublisher).Inc()
			refuseBudget(w, "too_many_cascade_publishers", fmt.Sprintf("this session already takes %d classrooms from other schools; end one first", MaxCascadePublishersPerSession))
			return
		}
	} else if _, err := l.Sessions.Start(g.SessionID); err != nil {
		session.WriteError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), negotiateTimeout)
	defer cancel()
	pub, answer, err := l.SFU.PublishSource(ctx, g.SessionID, source, offer)
	if err != nil {
		writeSFUError(w, err)
		return
	}
	tok, _ := httpapi.BearerToken(r)
	pub.SetOwner(tokenKey(tok)) // before anyone knows its Location
	if s, err := l.Sessions.Get(g.SessionID); err != nil || s.State == session.StateEnded {
		pub.Close() // the session ended while we negotiated
		session.WriteError(w, session.ErrEnded)
		return
	}
	writeAnswer(w, "/whip/"+g.SessionID+"/"+pub.ID(), answer)
}

// whep: POST /whep/{session} with any token of the session watches.
func (l *Live) whep(w http.ResponseWriter, r *http.Request) {
	g, ok := l.authorize(w, r, false)
	if !ok {
		return
	}
	offer, ok := readOffer(w, r)
	if !ok {
		return
	}
	s, err := l.Sessions.Get(g.SessionID)
	if err != nil {
		session.WriteError(w, err)
		return
	}
	if s.State == session.StateEnded {
		session.WriteError(w, session.ErrEnded)
		return
	}
	tok, _ := httpapi.BearerToken(r)
	release, ok := l.budgets.whep(tokenKey(tok), g.Role)
	if !ok {
		refuseBudget(w, "too_many_subscribers", "this token already watches with as many WHEP connections as it may; DELETE one (its Location) first")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), negotiateTimeout)
	defer cancel()
	sub, answer, err := l.SFU.Subscribe(ctx, g.SessionID, offer)
	if err != nil {
		release()
		writeSFUError(w, err)
		return
	}
	sub.SetOwner(tokenKey(tok))
	go func() { <-sub.Done(); release() }()
	if school := r.URL.Query().Get("school"); validSchool(school) {
		l.served.add(g.SessionID, school, tokenKey(tok), sub) // another school's edge pulling (cascadelinks.go)
	}
	writeAnswer(w, "/whep/"+g.SessionID+"/"+sub.ID(), answer)
}

// deleteResource ends a WHIP publish or a WHEP watch: the token that made
// it may, and the master teacher's and the admin's may end any. Another
// school's cascade token, shared by every receiving school, ends only what
// it made, never the master's publish.
func (l *Live) deleteResource(master bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, _ := httpapi.BearerToken(r)
		owner := tokenKey(tok)
		// The admin (token, or signed in: the guard resolved it) may end any.
		if p, _ := api.PrincipalFrom(r.Context()); p.IsAdmin() && session.ValidID(r.PathValue("session")) {
			owner = ""
		} else {
			g, ok := l.authorize(w, r, master)
			if !ok {
				return
			}
			if g.Role == session.RoleMaster {
				owner = ""
			}
		}
		err := l.SFU.Remove(r.PathValue("session"), r.PathValue("resource"), master, owner)
		if errors.Is(err, sfu.ErrNotOwner) {
			httpapi.WriteError(w, http.StatusForbidden, "not_your_resource", "this WHIP/WHEP resource was made with another token; only that token, the master teacher's or the admin's may end it")
			return
		}
		if err != nil {
			writeSFUError(w, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}
