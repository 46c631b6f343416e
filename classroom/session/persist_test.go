package session_test

import (
	"errors"
	"testing"
	"time"

	"github.com/campusedge/campusedge/classroom/session"
)

// memPersister keeps the last saved record of each session, as the
// live-state store would; fail makes Save fail.
type memPersister struct {
	saved map[string]session.Persisted
	fail  bool
}

func (p *memPersister) Save(r session.Persisted) error {
	if p.fail {
		return errors.New("disk full")
	}
	p.saved[r.Session.ID] = r
	return nil
}

func (p *memPersister) Drop(id string) error { delete(p.saved, id); return nil }

// TestRestoreKeepsTokens: a session saved by one manager is restored by
// another (a restarted edge) with every token working for its role —
// including one issued after creation — and none stored in clear; an
// ended session is dropped, not restored; a failed save refuses the
// change and leaves nothing behind.
func TestRestoreKeepsTokens(t *testing.T) {
	p := &memPersister{saved: map[string]session.Persisted{}}
	m := session.NewManager(nil)
	m.SetPersister(p)
	s, toks, err := m.Create(session.CreateRequest{Title: "Physics", Classrooms: []string{"r1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(s.ID); err != nil {
		t.Fatal(err)
	}
	extra, err := m.Issue(s.ID, session.RoleTerminal, "r1")
	if err != nil {
		t.Fatal(err)
	}
	rec := p.saved[s.ID]
	if rec.Session.State != session.StateLive || len(rec.Grants) != 6 {
		t.Fatalf("saved %+v (want live with 6 grants)", rec)
	}
	for _, g := range rec.Grants {
		for _, tok := range []string{toks.Master, toks.Observer, toks.Cascade, toks.Classrooms["r1"].Terminal, extra} {
			if g.Hash == tok {
				t.Fatal("a token is stored in clear")
			}
		}
	}

	m2 := session.NewManager(nil)
	if ok, err := m2.Restore(rec); !ok || err != nil {
		t.Fatalf("Restore: %v %v", ok, err)
	}
	for tok, want := range map[string]session.Role{toks.Master: session.RoleMaster, toks.Classrooms["r1"].Assistant: session.RoleAssistant, extra: session.RoleTerminal} {
		if g, err := m2.Authorize(s.ID, tok); err != nil || g.Role != want {
			t.Errorf("token for %s after restore: %+v %v", want, g, err)
		}
	}
	if got, _ := m2.Get(s.ID); got.State != session.StateLive || got.Title != "Physics" {
		t.Errorf("restored %+v", got)
	}

	old := rec
	past := time.Now().Add(-session.MaxResumeAge - time.Hour)
	old.Session.StartedAt = &past
	if ok, _ := session.NewManager(nil).Restore(old); ok {
		t.Error("a session live for longer than MaxResumeAge was resumed")
	}
	if _, err := m.End(s.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.saved[s.ID]; ok {
		t.Error("an ended session's record was kept")
	}
	ended := rec
	ended.Session.State = session.StateEnded
	if ok, _ := session.NewManager(nil).Restore(ended); ok {
		t.Error("an ended session was resumed")
	}

	p.fail = true
	if _, _, err := m.Create(session.CreateRequest{Title: "Unsaved"}); !errors.Is(err, session.ErrNotSaved) {
		t.Fatalf("create with a failing store: %v", err)
	}
	if n := len(m.List()); n != 1 {
		t.Errorf("a session that was not saved is listed (%d sessions)", n)
	}
}
