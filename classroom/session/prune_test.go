package session_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/campusedge/campusedge/classroom/session"
)

// TestEndedSessionsBounded: ended sessions are kept at most
// MaxEndedSessions (the oldest go first) and EndedRetention, with their
// tokens; OnForget hears of each; live sessions are never forgotten.
func TestEndedSessionsBounded(t *testing.T) {
	m := session.NewManager(nil)
	var mu sync.Mutex
	forgot := map[string]bool{}
	m.OnForget(func(id string) { mu.Lock(); forgot[id] = true; mu.Unlock() })

	live, liveToks, err := m.Create(session.CreateRequest{Title: "still on"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(live.ID); err != nil {
		t.Fatal(err)
	}
	var ids []string
	var firstTok string
	for i := range session.MaxEndedSessions + 3 {
		s, toks, err := m.Create(session.CreateRequest{Title: "class"})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			firstTok = toks.Master
		}
		if _, err := m.End(s.ID); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	c := m.Counts()
	if c[session.StateEnded] != session.MaxEndedSessions || c[session.StateLive] != 1 {
		t.Fatalf("counts %v, want %d ended and 1 live", c, session.MaxEndedSessions)
	}
	for i, id := range ids {
		_, err := m.Get(id)
		mu.Lock()
		f := forgot[id]
		mu.Unlock()
		if gone := i < 3; gone != errors.Is(err, session.ErrNotFound) || gone != f {
			t.Fatalf("session %d: Get error %v, forgotten hook %v (the 3 oldest should be gone)", i, err, f)
		}
	}
	if _, err := m.Lookup(firstTok); !errors.Is(err, session.ErrUnauthorized) {
		t.Errorf("a forgotten session's token still resolves: %v", err)
	}

	m.Prune(time.Now().Add(session.EndedRetention + time.Minute))
	c = m.Counts()
	if c[session.StateEnded] != 0 || c[session.StateLive] != 1 {
		t.Fatalf("after the retention: counts %v, want only the live session", c)
	}
	if _, err := m.Lookup(liveToks.Master); err != nil {
		t.Errorf("the live session's token: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(forgot) != len(ids) {
		t.Errorf("OnForget ran for %d sessions, want %d", len(forgot), len(ids))
	}
}
