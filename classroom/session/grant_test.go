package session

import (
	"errors"
	"testing"
)

func TestIssue(t *testing.T) {
	m := NewManager(nil)
	s, _, err := m.Create(CreateRequest{Title: "t", Classrooms: []string{"c-1"}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.Issue(s.ID, RoleAssistant, "c-1")
	if err != nil {
		t.Fatal(err)
	}
	if g, err := m.Lookup(tok); err != nil || g != (Grant{SessionID: s.ID, Role: RoleAssistant, ClassroomID: "c-1"}) {
		t.Fatalf("grant %+v %v", g, err)
	}
	if _, err := m.Issue(s.ID, RoleTerminal, "c-2"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("classroom not in the session: %v", err)
	}
	if _, err := m.Issue(s.ID, RoleCascade, ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("cascade issued: %v", err)
	}
	if _, err := m.Issue("nope", RoleTerminal, "c-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown session: %v", err)
	}
	if _, err := m.End(s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Issue(s.ID, RoleTerminal, "c-1"); !errors.Is(err, ErrEnded) {
		t.Fatalf("ended session: %v", err)
	}
}
