package session

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"
)

// Persister keeps sessions across a restart of the edge (classroom wires
// it to classroom/livestate). Save returns once the record is durable; a
// change whose Save fails is undone and refused.
type Persister interface {
	Save(r Persisted) error
	Drop(sessionID string) error
}

// Persisted is what survives a restart of one session: its public view and
// its grants, by token hash (tokens themselves are never stored).
type Persisted struct {
	Session Session          `json:"session"`
	Grants  []PersistedGrant `json:"grants"`
}

// PersistedGrant is one grant under the SHA-256 of its token, hex.
type PersistedGrant struct {
	Hash      string `json:"hash"`
	Role      Role   `json:"role"`
	Classroom string `json:"classroom_id,omitempty"`
}

// MaxResumeAge bounds how long after its start a live session is resumed
// by a restarting edge: sessions have no planned end, and a class that
// started more than a school day ago is over, whatever the store says.
const MaxResumeAge = 12 * time.Hour

// SetPersister makes every later change of a session durable through p
// before it is acknowledged. Call it before serving.
func (m *Manager) SetPersister(p Persister) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.persist = p
}

// saveLocked writes session id with its grants; nil without a persister.
func (m *Manager) saveLocked(id string) error {
	if m.persist == nil {
		return nil
	}
	s := m.sessions[id]
	if s == nil {
		return nil
	}
	r := Persisted{Session: s.clone()}
	for h, g := range m.grants {
		if g.SessionID == id {
			r.Grants = append(r.Grants, PersistedGrant{Hash: hex.EncodeToString(h[:]), Role: g.Role, Classroom: g.ClassroomID})
		}
	}
	slices.SortFunc(r.Grants, func(a, b PersistedGrant) int { return compareStrings(a.Hash, b.Hash) })
	if err := m.persist.Save(r); err != nil {
		return fmt.Errorf("saving session %s: %w", id, err)
	}
	return nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Restore puts back a session saved before a restart, with its grants. It
// reports false (and restores nothing) for a session that has ended, one
// already known, or a live one that started more than MaxResumeAge before
// now: the caller drops those from the store.
func (m *Manager) Restore(r Persisted) (bool, error) {
	s := r.Session
	if !ValidID(s.ID) {
		return false, fmt.Errorf("%w: stored session id %q", ErrInvalid, s.ID)
	}
	switch s.State {
	case StateCreated:
	case StateLive:
		if s.StartedAt == nil || m.now().Sub(*s.StartedAt) > MaxResumeAge {
			return false, nil
		}
	default:
		return false, nil
	}
	grants := map[[sha256.Size]byte]Grant{}
	for _, g := range r.Grants {
		b, err := hex.DecodeString(g.Hash)
		if err != nil || len(b) != sha256.Size {
			return false, fmt.Errorf("%w: stored grant hash %q of session %s", ErrInvalid, g.Hash, s.ID)
		}
		grants[[sha256.Size]byte(b)] = Grant{SessionID: s.ID, Role: g.Role, ClassroomID: g.Classroom}
	}
	if s.Classrooms == nil {
		s.Classrooms = []string{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.sessions[s.ID]; ok || len(m.sessions) >= MaxSessions {
		return false, nil
	}
	c := s.clone()
	m.sessions[s.ID] = &c
	for h, g := range grants {
		m.grants[h] = g
	}
	return true, nil
}
