package session

import (
	"fmt"

	"github.com/campusedge/campusedge/edge/token"
)

// Issue mints another token for a role in a session: a classroom's paired
// big-screen browser asks for its classroom's terminal and assistant tokens
// when a session including that classroom starts (the creator's tokens are
// handed out once and never kept). The session must not have ended, and a
// classroom role needs a classroom of the session.
func (m *Manager) Issue(sessionID string, role Role, classroomID string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[sessionID]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrNotFound, sessionID)
	}
	if s.State == StateEnded {
		return "", fmt.Errorf("%w: %q", ErrEnded, sessionID)
	}
	switch role {
	case RoleTerminal, RoleAssistant:
		found := false
		for _, c := range s.Classrooms {
			found = found || c == classroomID
		}
		if !found {
			return "", fmt.Errorf("%w: classroom %q is not part of session %q", ErrInvalid, classroomID, sessionID)
		}
	case RoleMaster, RoleObserver:
		classroomID = ""
	default:
		return "", fmt.Errorf("%w: role %q cannot be issued", ErrInvalid, role)
	}
	tok := token.New()
	h := token.Hash(tok)
	m.grants[h] = Grant{SessionID: sessionID, Role: role, ClassroomID: classroomID}
	if err := m.saveLocked(sessionID); err != nil {
		delete(m.grants, h)
		return "", fmt.Errorf("%w: %v", ErrNotSaved, err)
	}
	return tok, nil
}
