package session

import (
	"fmt"
	"strings"
	"time"

	"github.com/campusedge/campusedge/sync/schooldata"
)

// Period names a lesson period of the school's timetable: a session tied
// to one starts when that period begins, at the time the timetable (synced
// from the city) gives for it, and follows it if the timetable changes.
type Period struct {
	Day    string `json:"day"` // mon … sun
	Period int    `json:"period"`
	Room   string `json:"room"`
}

// Validate checks a period reference's shape.
func (p Period) Validate() error {
	if _, ok := schooldata.ParseDay(strings.ToLower(p.Day)); !ok {
		return fmt.Errorf("%w: period day %q must be one of mon … sun", ErrInvalid, p.Day)
	}
	if p.Period < 1 || p.Period > 20 {
		return fmt.Errorf("%w: period number %d must be 1-20", ErrInvalid, p.Period)
	}
	if p.Room == "" || len(p.Room) > MaxClassroomIDLength {
		return fmt.Errorf("%w: period room must be 1-%d bytes", ErrInvalid, MaxClassroomIDLength)
	}
	return nil
}

// PeriodClock finds the next start of p at or after t in the school's
// timetable; ok is false when the timetable has no such period (or there
// is no timetable yet).
type PeriodClock func(p Period, after time.Time) (start time.Time, ok bool)

// SetPeriodClock installs the timetable lookup that sessions created with
// a period use. Without one, such sessions are refused.
func (m *Manager) SetPeriodClock(c PeriodClock) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.periods = c
}

// Reschedule moves the scheduled start of every session that waits for a
// period to that period's next start in the current timetable. A session
// whose period vanished from the timetable keeps its last start time. Call
// it when a new timetable has been applied.
func (m *Manager) Reschedule() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.periods == nil {
		return
	}
	now := m.now()
	for _, s := range m.sessions {
		if s.State != StateCreated || s.Period == nil {
			continue
		}
		if t, ok := m.periods(*s.Period, now); ok {
			t = t.UTC()
			s.ScheduledStart = &t
			_ = m.saveLocked(s.ID) // a stale start after a crash is fixed by the next timetable sync
		}
	}
}

// StartDue makes live every created session whose scheduled start has
// come, and returns them. The live-class capability calls it every second.
func (m *Manager) StartDue(now time.Time) []Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	var started []Session
	for _, s := range m.sessions {
		if s.State != StateCreated || s.ScheduledStart == nil || now.Before(*s.ScheduledStart) {
			continue
		}
		t := now.UTC()
		s.State, s.StartedAt = StateLive, &t
		if err := m.saveLocked(s.ID); err != nil {
			s.State, s.StartedAt = StateCreated, nil // the next tick tries again
			continue
		}
		started = append(started, s.clone())
	}
	return started
}
