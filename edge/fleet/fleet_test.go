package fleet

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func newFleet(t *testing.T, now func() time.Time) *Fleet {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "f.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{BucketClassrooms, BucketTerminals, BucketPairing} {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return New(db, now)
}

func TestPairingPolicy(t *testing.T) {
	clock := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	f := newFleet(t, func() time.Time { return clock })
	c, err := f.CreateClassroom("Grade 7 Class 2", "R204")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.CreateClassroom("Other", "r204"); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate room code: %v", err)
	}
	code, exp, err := f.NewPairingCode(c.ID)
	if err != nil || len(code) != 6 || exp.Sub(clock) != PairingCodeTTL {
		t.Fatalf("code %q exp %v err %v", code, exp, err)
	}
	clock = clock.Add(PairingCodeTTL + time.Second)
	if _, _, err := f.Pair(PairRequest{Code: code}, "10.0.0.5"); !errors.Is(err, ErrCodeExpired) {
		t.Fatalf("expired: %v", err)
	}
	code, _, _ = f.NewPairingCode(c.ID)
	term, tok, err := f.Pair(PairRequest{Code: code, Name: "board", Version: "1.0"}, "10.0.0.5")
	if err != nil || term.ClassroomID != c.ID || term.TokenHash != nil {
		t.Fatalf("pair: %+v %v", term, err)
	}
	if got, err := f.Authenticate(tok); err != nil || got.ID != term.ID {
		t.Fatalf("authenticate: %+v %v", got, err)
	}
	for _, bad := range []string{"", "x", term.ID + ".forged", tok + "x"} {
		if _, err := f.Authenticate(bad); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("Authenticate(%q) = %v", bad, err)
		}
	}
	if _, _, err := f.Pair(PairRequest{Code: code}, ""); !errors.Is(err, ErrCodeUsed) {
		t.Fatalf("reuse: %v", err)
	}
	good, _, _ := f.NewPairingCode(c.ID)
	wrong := "000000"
	if wrong == good {
		wrong = "000001"
	}
	for i := 1; i <= MaxPairingFailures; i++ {
		_, _, err := f.Pair(PairRequest{Code: wrong}, "")
		want := ErrBadCode
		if i == MaxPairingFailures {
			want = ErrPairingLock
		}
		if !errors.Is(err, want) {
			t.Fatalf("wrong try %d: %v want %v", i, err, want)
		}
	}
	if _, _, err := f.Pair(PairRequest{Code: good}, ""); !errors.Is(err, ErrPairingLock) {
		t.Fatalf("good code while locked: %v", err)
	}
	fresh, _, _ := f.NewPairingCode(c.ID)
	if _, _, err := f.Pair(PairRequest{Code: fresh}, ""); err != nil {
		t.Fatalf("after a new code the lock is lifted: %v", err)
	}
}

func TestPresenceEvents(t *testing.T) {
	f := newFleet(t, nil)
	c, _ := f.CreateClassroom("A", "A1")
	code, _, _ := f.NewPairingCode(c.ID)
	term, _, err := f.Pair(PairRequest{Code: code}, "")
	if err != nil {
		t.Fatal(err)
	}
	events, cancel := f.Watch()
	defer cancel()
	bye := f.Connected(term, "10.0.0.9", "2.0")
	online := <-events
	if online.Kind != "terminal" || !online.Terminal.Online || online.Terminal.Addr != "10.0.0.9" {
		t.Fatalf("online event %+v", online)
	}
	if f.OnlineCount() != 1 {
		t.Fatal("not counted online")
	}
	bye()
	bye() // idempotent
	if ev := <-events; ev.Terminal.Online {
		t.Fatalf("offline event %+v", ev)
	}
	// An event already handed to a watcher (which may still be encoding
	// it) must not change under it when the terminal goes offline.
	if !online.Terminal.Online {
		t.Fatal("the online event was rewritten by the disconnect")
	}
	ts, _ := f.Terminals()
	if len(ts) != 1 || ts[0].Online || ts[0].Version != "2.0" || ts[0].LastSeen.IsZero() {
		t.Fatalf("after disconnect: %+v", ts)
	}
	select {
	case ev := <-events:
		t.Fatalf("second disconnect published %+v", ev)
	default:
	}
}

// The code-proving exchange shares Pair's lock-out: wrong tries from either
// path add up, and candidates are refused while locked.
func TestPairingCandidatesShareTheLock(t *testing.T) {
	clock := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	f := newFleet(t, func() time.Time { return clock })
	c, _ := f.CreateClassroom("Room", "R1")
	first, _, _ := f.NewPairingCode(c.ID)
	clock = clock.Add(time.Minute)
	second, _, _ := f.NewPairingCode(c.ID)
	got, err := f.PairingCandidates(8)
	if err != nil || len(got) != 2 || got[0] != second || got[1] != first {
		t.Fatalf("candidates = %v, %v; want newest first [%s %s]", got, err, second, first)
	}
	if got, _ := f.PairingCandidates(1); len(got) != 1 || got[0] != second {
		t.Fatalf("limit 1: %v", got)
	}
	for i := range MaxPairingFailures - 2 {
		if err := f.WrongPairingTry(); !errors.Is(err, ErrBadCode) {
			t.Fatalf("wrong try %d: %v", i+1, err)
		}
	}
	if _, _, err := f.Pair(PairRequest{Code: "000000"}, ""); !errors.Is(err, ErrBadCode) && !(first == "000000" || second == "000000") {
		t.Fatalf("plain wrong try: %v", err)
	}
	if n, _ := f.WrongPairingTries(); n != MaxPairingFailures-1 {
		t.Fatalf("wrong tries = %d", n)
	}
	if err := f.WrongPairingTry(); !errors.Is(err, ErrPairingLock) {
		t.Fatalf("5th wrong try: %v", err)
	}
	if _, err := f.PairingCandidates(8); !errors.Is(err, ErrPairingLock) {
		t.Fatalf("candidates while locked: %v", err)
	}
	if err := f.WrongPairingTry(); !errors.Is(err, ErrPairingLock) {
		t.Fatalf("try while locked: %v", err)
	}
	if n, _ := f.WrongPairingTries(); n != MaxPairingFailures {
		t.Fatalf("tries while locked kept counting: %d", n)
	}
}
