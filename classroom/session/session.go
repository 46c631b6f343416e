// Package session keeps live-class sessions and the role tokens that decide
// what each participant may do. A session is created by the admin with a
// title and, optionally, the classrooms it reaches; creation hands out one
// token per role: master teacher, observer, and an assistant and a terminal
// token per classroom.
//
// Sessions live in memory in this first slice: a restart of edged ends every
// class, which is also what happens to the media. Tokens are kept only as
// SHA-256 hashes, so a heap dump does not leak them.
package session

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/campusedge/campusedge/edge/token"
)

// Role is what a token lets its holder do.
type Role string

// The roles of DESIGN.md.
const (
	RoleMaster    Role = "master"    // the (possibly remote) master teacher: publishes, starts and ends
	RoleAssistant Role = "assistant" // the assistant teacher in one classroom
	RoleTerminal  Role = "terminal"  // a classroom terminal
	RoleObserver  Role = "observer"  // watches only
	RoleCascade   Role = "cascade"   // another edge: pulls the lesson (WHEP) and sends its on-stage classroom back (WHIP)
)

// State is where a session is in its life.
type State string

// Session states. A session only moves forward: created → live → ended.
const (
	StateCreated State = "created"
	StateLive    State = "live"
	StateEnded   State = "ended"
)

// Limits on what a caller can make the edge hold.
const (
	MaxTitleRunes        = 200
	MaxClassrooms        = 100
	MaxSessions          = 1000 // kept in memory; the oldest ended one makes room
	MaxClassroomIDLength = 64

	// MaxEndedSessions and EndedRetention bound the ended sessions kept
	// for the console and GET /api/v1/sessions (with their recording's
	// outcome and their tokens, so a late client hears "ended" rather
	// than "unknown token"): a school's day is ~320 sessions (40 rooms,
	// 8 periods), so a day and a half of them, and none older than two
	// days. Everything they record is in the store and synced already.
	MaxEndedSessions = 500
	EndedRetention   = 48 * time.Hour
)

// Errors callers map to API responses.
var (
	ErrInvalid      = errors.New("invalid input")
	ErrNotFound     = errors.New("session not found")
	ErrEnded        = errors.New("session has ended")
	ErrLimit        = errors.New("too many sessions")
	ErrUnauthorized = errors.New("token not valid")
	ErrForbidden    = errors.New("token's role may not do this")
)

// Session is the public view of a session (never includes tokens).
type Session struct {
	ID             string     `json:"id"`
	Title          string     `json:"title"`
	State          State      `json:"state"`
	Classrooms     []string   `json:"classrooms"`
	ScheduledStart *time.Time `json:"scheduled_start,omitempty"`
	// Period, when set, ties the start to a timetable period (schedule.go).
	Period    *Period    `json:"period,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	// Subject labels the recorded micro-lesson in the catalogue.
	Subject string `json:"subject,omitempty"`
	// Record says whether the edge records the master's tracks (default
	// true; "record": false at creation opts out).
	Record bool `json:"record"`
	// Owner is the staff id of the teacher who created it ("" for the
	// admin token and the timetable): they may start, teach and end it.
	Owner string `json:"owner,omitempty"`
}

// ClassroomTokens are the tokens for one classroom of a session.
type ClassroomTokens struct {
	Assistant string `json:"assistant"`
	Terminal  string `json:"terminal"`
}

// Tokens are handed out once, when the session is created.
type Tokens struct {
	Master     string                     `json:"master"`
	Observer   string                     `json:"observer"`
	Cascade    string                     `json:"cascade"`
	Classrooms map[string]ClassroomTokens `json:"classrooms"`
}

// Grant is what a valid token stands for.
type Grant struct {
	SessionID   string
	Role        Role
	ClassroomID string // empty for master and observer
}

// ClassroomLookup checks that a classroom exists (fleet.Fleet satisfies it
// through an adapter). It returns an error wrapping a not-found error when
// the classroom is unknown.
type ClassroomLookup func(id string) error

// Manager holds the sessions of this edge.
type Manager struct {
	lookup ClassroomLookup
	now    func() time.Time

	mu       sync.Mutex
	sessions map[string]*Session
	grants   map[[sha256.Size]byte]Grant
	onEnd    []func(id string)
	onForget []func(id string)
	periods  PeriodClock
}

// NewManager returns an empty manager. lookup may be nil (no classroom
// check, for tests).
func NewManager(lookup ClassroomLookup) *Manager {
	return &Manager{lookup: lookup, now: time.Now, sessions: map[string]*Session{}, grants: map[[sha256.Size]byte]Grant{}}
}

// OnEnd registers f to run (outside the manager's lock) when a session ends.
func (m *Manager) OnEnd(f func(id string)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onEnd = append(m.onEnd, f)
}

// OnForget registers f to run (outside the manager's lock) when an ended
// session is forgotten (MaxEndedSessions, EndedRetention, or to make room):
// what other parts keep about an ended session goes with it.
func (m *Manager) OnForget(f func(id string)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onForget = append(m.onForget, f)
}

// Counts returns how many sessions the manager holds in each state.
func (m *Manager) Counts() map[State]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := map[State]int{StateCreated: 0, StateLive: 0, StateEnded: 0}
	for _, s := range m.sessions {
		c[s.State]++
	}
	return c
}

// Prune forgets ended sessions that ended more than EndedRetention before
// now, and the oldest beyond MaxEndedSessions.
func (m *Manager) Prune(now time.Time) {
	m.mu.Lock()
	var ended []*Session
	var gone []string
	for _, s := range m.sessions {
		if s.State != StateEnded {
			continue
		}
		if now.Sub(*s.EndedAt) > EndedRetention {
			gone = append(gone, s.ID)
			continue
		}
		ended = append(ended, s)
	}
	if extra := len(ended) - MaxEndedSessions; extra > 0 {
		sort.Slice(ended, func(i, j int) bool { return ended[i].EndedAt.Before(*ended[j].EndedAt) })
		for _, s := range ended[:extra] {
			gone = append(gone, s.ID)
		}
	}
	m.forgetLocked(gone...)
	hooks := slices.Clone(m.onForget)
	m.mu.Unlock()
	runHooks(hooks, gone)
}

// forgetLocked drops sessions ids with their tokens.
func (m *Manager) forgetLocked(ids ...string) {
	if len(ids) == 0 {
		return
	}
	drop := make(map[string]bool, len(ids))
	for _, id := range ids {
		drop[id] = true
		delete(m.sessions, id)
	}
	for h, g := range m.grants {
		if drop[g.SessionID] {
			delete(m.grants, h)
		}
	}
}

func runHooks(hooks []func(string), ids []string) {
	for _, id := range ids {
		for _, f := range hooks {
			f(id)
		}
	}
}

// CreateRequest is the body of POST /api/v1/sessions.
type CreateRequest struct {
	Title          string     `json:"title"`
	Classrooms     []string   `json:"classrooms,omitempty"`
	ScheduledStart *time.Time `json:"scheduled_start,omitempty"`
	// Period starts the session when this timetable period begins
	// (instead of scheduled_start).
	Period  *Period `json:"period,omitempty"`
	Subject string  `json:"subject,omitempty"`
	// Record is true when absent: lessons are recorded unless the admin
	// opts out for this session.
	Record *bool `json:"record,omitempty"`
	// Owner is the staff id of the teacher who creates it (set by the
	// handler from the sign-in, never from the body).
	Owner string `json:"-"`
}

// MaxSubjectBytes bounds a session's subject (the catalogue's field limit).
const MaxSubjectBytes = 128

// Validate checks the request's shape (not whether classrooms exist).
func (r CreateRequest) Validate() error {
	t := strings.TrimSpace(r.Title)
	if t == "" {
		return fmt.Errorf("%w: title is required", ErrInvalid)
	}
	if !utf8.ValidString(r.Title) || utf8.RuneCountInString(r.Title) > MaxTitleRunes {
		return fmt.Errorf("%w: title must be valid UTF-8 of at most %d characters", ErrInvalid, MaxTitleRunes)
	}
	for _, c := range r.Title {
		if unicode.IsControl(c) {
			return fmt.Errorf("%w: title must not contain control characters", ErrInvalid)
		}
	}
	if len(r.Subject) > MaxSubjectBytes || !utf8.ValidString(r.Subject) || strings.IndexFunc(r.Subject, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: subject must be valid UTF-8 of at most %d bytes without control characters", ErrInvalid, MaxSubjectBytes)
	}
	if len(r.Classrooms) > MaxClassrooms {
		return fmt.Errorf("%w: at most %d classrooms per session", ErrInvalid, MaxClassrooms)
	}
	if r.Period != nil {
		if r.ScheduledStart != nil {
			return fmt.Errorf("%w: give scheduled_start or period, not both", ErrInvalid)
		}
		if err := r.Period.Validate(); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, c := range r.Classrooms {
		if c == "" || len(c) > MaxClassroomIDLength {
			return fmt.Errorf("%w: classroom ids must be 1..%d bytes", ErrInvalid, MaxClassroomIDLength)
		}
		if seen[c] {
			return fmt.Errorf("%w: classroom %q is listed twice", ErrInvalid, c)
		}
		seen[c] = true
	}
	return nil
}

// Create makes a session and its tokens.
func (m *Manager) Create(req CreateRequest) (Session, Tokens, error) {
	if err := req.Validate(); err != nil {
		return Session{}, Tokens{}, err
	}
	if m.lookup != nil {
		for _, c := range req.Classrooms {
			if err := m.lookup(c); err != nil {
				return Session{}, Tokens{}, fmt.Errorf("%w: classroom %q is not known to this edge (GET /api/v1/classrooms lists them): %v", ErrInvalid, c, err)
			}
		}
	}
	s := &Session{
		ID:         newID(),
		Title:      strings.TrimSpace(req.Title),
		State:      StateCreated,
		Classrooms: slices.Clone(req.Classrooms),
		CreatedAt:  m.now().UTC(),
		Subject:    strings.TrimSpace(req.Subject),
		Record:     req.Record == nil || *req.Record,
		Owner:      req.Owner,
	}
	if s.Classrooms == nil {
		s.Classrooms = []string{}
	}
	if req.ScheduledStart != nil {
		t := req.ScheduledStart.UTC()
		s.ScheduledStart = &t
	}
	if req.Period != nil {
		p := *req.Period
		p.Day = strings.ToLower(p.Day)
		m.mu.Lock()
		clock := m.periods
		m.mu.Unlock()
		if clock == nil {
			return Session{}, Tokens{}, fmt.Errorf("%w: this edge has no timetable to find the period in; give scheduled_start instead", ErrInvalid)
		}
		t, ok := clock(p, m.now())
		if !ok {
			return Session{}, Tokens{}, fmt.Errorf("%w: the timetable has no period %d on %s in room %s (GET /api/v1/sync/timetable lists it)", ErrInvalid, p.Period, p.Day, p.Room)
		}
		t = t.UTC()
		s.Period, s.ScheduledStart = &p, &t
	}
	toks := Tokens{Master: token.New(), Observer: token.New(), Cascade: token.New(), Classrooms: map[string]ClassroomTokens{}}
	grants := map[string]Grant{
		toks.Master:   {SessionID: s.ID, Role: RoleMaster},
		toks.Observer: {SessionID: s.ID, Role: RoleObserver},
		toks.Cascade:  {SessionID: s.ID, Role: RoleCascade},
	}
	for _, c := range s.Classrooms {
		ct := ClassroomTokens{Assistant: token.New(), Terminal: token.New()}
		toks.Classrooms[c] = ct
		grants[ct.Assistant] = Grant{SessionID: s.ID, Role: RoleAssistant, ClassroomID: c}
		grants[ct.Terminal] = Grant{SessionID: s.ID, Role: RoleTerminal, ClassroomID: c}
	}

	m.mu.Lock()
	var evicted string
	if len(m.sessions) >= MaxSessions {
		if evicted = m.oldestEndedLocked(); evicted == "" {
			m.mu.Unlock()
			return Session{}, Tokens{}, fmt.Errorf("%w: this edge keeps at most %d sessions and none has ended; end one first", ErrLimit, MaxSessions)
		}
		m.forgetLocked(evicted)
	}
	m.sessions[s.ID] = s
	for tok, g := range grants {
		m.grants[token.Hash(tok)] = g
	}
	hooks := slices.Clone(m.onForget)
	m.mu.Unlock()
	if evicted != "" {
		runHooks(hooks, []string{evicted})
	}
	return s.clone(), toks, nil
}

// oldestEndedLocked returns the session that ended longest ago ("" if
// none has ended).
func (m *Manager) oldestEndedLocked() string {
	var oldest *Session
	for _, s := range m.sessions {
		if s.State == StateEnded && (oldest == nil || s.EndedAt.Before(*oldest.EndedAt)) {
			oldest = s
		}
	}
	if oldest == nil {
		return ""
	}
	return oldest.ID
}

// Get returns one session.
func (m *Manager) Get(id string) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok {
		return Session{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return s.clone(), nil
}

// List returns every session, oldest first.
func (m *Manager) List() []Session {
	m.mu.Lock()
	out := make([]Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, s.clone())
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Start makes a created session live. Starting a live session is a no-op;
// an ended one cannot start again.
func (m *Manager) Start(id string) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok {
		return Session{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	switch s.State {
	case StateEnded:
		return s.clone(), fmt.Errorf("%w: %q; create a new session", ErrEnded, id)
	case StateCreated:
		now := m.now().UTC()
		s.State, s.StartedAt = StateLive, &now
	}
	return s.clone(), nil
}

// End ends a session (idempotent) and runs the OnEnd hooks the first time.
func (m *Manager) End(id string) (Session, error) {
	m.mu.Lock()
	s, ok := m.sessions[id]
	if !ok {
		m.mu.Unlock()
		return Session{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	first := s.State != StateEnded
	if first {
		now := m.now().UTC()
		s.State, s.EndedAt = StateEnded, &now
	}
	out, hooks := s.clone(), slices.Clone(m.onEnd)
	m.mu.Unlock()
	if first {
		for _, f := range hooks {
			f(id)
		}
		m.Prune(m.now()) // keeps MaxEndedSessions without waiting for the clock
	}
	return out, nil
}

// Authorize returns what token may do in session id. ErrUnauthorized means
// the token is unknown; ErrForbidden that it belongs to another session.
func (m *Manager) Authorize(id, tok string) (Grant, error) {
	if tok == "" {
		return Grant{}, ErrUnauthorized
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.grants[token.Hash(tok)]
	if !ok {
		return Grant{}, ErrUnauthorized
	}
	if g.SessionID != id {
		return Grant{}, fmt.Errorf("%w: the token belongs to another session", ErrForbidden)
	}
	return g, nil
}

// Revoke makes tok stop working at once (a paired screen was unpaired);
// it reports whether tok was known.
func (m *Manager) Revoke(tok string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := token.Hash(tok)
	_, ok := m.grants[h]
	delete(m.grants, h)
	return ok
}

// Lookup returns what token stands for, whatever its session (the control
// channel's hello carries only the token).
func (m *Manager) Lookup(tok string) (Grant, error) {
	if tok == "" {
		return Grant{}, ErrUnauthorized
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.grants[token.Hash(tok)]
	if !ok {
		return Grant{}, ErrUnauthorized
	}
	return g, nil
}

func (s *Session) clone() Session {
	c := *s
	c.Classrooms = slices.Clone(s.Classrooms)
	return c
}

func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ValidID reports whether id has the shape of a session id; handlers use it
// to refuse junk before a lookup.
func ValidID(id string) bool {
	if len(id) != 24 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}
