package fleet

import (
	"errors"
	"testing"
	"time"
)

// TestManageRoomsAndTerminals: rename keeps room codes unique; a
// classroom with a paired terminal cannot be deleted; labelling checks
// the kind and survives the connection's own persisting; unpairing makes
// the token unknown at once and tells watchers.
func TestManageRoomsAndTerminals(t *testing.T) {
	f := newFleet(t, time.Now)
	a, _ := f.CreateClassroom("Grade 7 Class 2", "R204")
	b, _ := f.CreateClassroom("Grade 8 Class 1", "R301")
	if _, err := f.RenameClassroom(a.ID, "", "r301"); !errors.Is(err, ErrConflict) {
		t.Errorf("rename onto another room code: %v", err)
	}
	if c, err := f.RenameClassroom(a.ID, "Grade 7 Class 2 (new wing)", ""); err != nil || c.Name != "Grade 7 Class 2 (new wing)" || c.RoomCode != "R204" {
		t.Errorf("rename: %+v %v", c, err)
	}
	if _, err := f.RenameClassroom("c-none", "x", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("rename unknown: %v", err)
	}
	code, _, _ := f.NewPairingCode(a.ID)
	term, tok, err := f.Pair(PairRequest{Code: code, Name: "board", Version: "1"}, "10.0.0.5")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteClassroom(a.ID); !errors.Is(err, ErrConflict) {
		t.Errorf("delete a classroom with a paired terminal: %v", err)
	}
	if _, err := f.LabelTerminal(term.ID, "projector", ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad kind: %v", err)
	}
	if lt, err := f.LabelTerminal(term.ID, KindBigScreen, "Front screen"); err != nil || lt.Kind != KindBigScreen || lt.Name != "Front screen" {
		t.Errorf("label: %+v %v", lt, err)
	}
	disconnect := f.Connected(term, "10.0.0.5", "2")
	disconnect() // persists last-seen; must keep the label
	ts, _ := f.Terminals()
	if len(ts) != 1 || ts[0].Kind != KindBigScreen {
		t.Errorf("label lost after a connection: %+v", ts)
	}
	events, cancel := f.Watch()
	defer cancel()
	if _, err := f.Unpair(term.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Authenticate(tok); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("the unpaired token: %v", err)
	}
	select {
	case ev := <-events:
		if !ev.Removed || ev.Terminal == nil || ev.Terminal.ID != term.ID {
			t.Errorf("event %+v", ev)
		}
	case <-time.After(time.Second):
		t.Error("no event for the unpairing")
	}
	if err := f.DeleteClassroom(a.ID); err != nil {
		t.Errorf("delete after unpairing: %v", err)
	}
	if _, err := f.Classroom(a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted classroom still there: %v", err)
	}
	if _, err := f.Classroom(b.ID); err != nil {
		t.Errorf("the other classroom: %v", err)
	}
}
