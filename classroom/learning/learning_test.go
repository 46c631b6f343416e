package learning_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/classroom/learning"
	"github.com/campusedge/campusedge/sync/outbox"
	"github.com/campusedge/campusedge/sync/wire"
)

func TestRecordsGoToTheOutboxInTheSameTx(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return errors.Join(outbox.Migrate(tx), learning.Migrate(tx)) }); err != nil {
		t.Fatal(err)
	}
	st := learning.New(db, outbox.AppendTx, nil)
	ctx := context.Background()
	for i, k := range []string{learning.KindAttendanceJoin, learning.KindQuizAnswer, learning.KindAttendanceMark} {
		r, err := st.Add(ctx, learning.Record{Kind: k, Session: "s1", Classroom: "c-1", Data: json.RawMessage(`{"i":1}`)})
		if err != nil || r.Seq != uint64(i+1) || r.ID == "" {
			t.Fatalf("add %s: %+v %v", k, r, err)
		}
	}
	if _, err := st.Add(ctx, learning.Record{Kind: learning.KindQuizAnswer, Session: "s2"}); err != nil {
		t.Fatal(err)
	}
	got, err := st.Session("s1", "attendance.", 0)
	if err != nil || len(got) != 2 || got[0].Kind != learning.KindAttendanceJoin || got[1].Seq != 3 {
		t.Fatalf("session s1 attendance: %+v %v", got, err)
	}
	ob := outbox.New(outbox.Config{DB: db})
	defer ob.Close()
	pend, err := ob.Pending(0, 100, 1<<20)
	if err != nil || len(pend) != 4 {
		t.Fatalf("outbox holds %d records, want 4: %v", len(pend), err)
	}
	var r learning.Record
	if err := json.Unmarshal(pend[1].Payload, &r); err != nil || r.Kind != learning.KindQuizAnswer || r.Session != "s1" {
		t.Fatalf("outbox payload %s", pend[1].Payload)
	}
	// A failing outbox stores nothing: record and outbox entry go together.
	failing := learning.New(db, func(*bolt.Tx, string, []byte, time.Time) (wire.Record, error) {
		return wire.Record{}, errors.New("outbox full")
	}, nil)
	if _, err := failing.Add(ctx, learning.Record{Kind: learning.KindQuizAnswer, Session: "s1"}); err == nil {
		t.Fatal("add with a failing outbox succeeded")
	}
	if got, _ := st.Session("s1", "", 0); len(got) != 3 {
		t.Fatalf("a failed add left a record: %d", len(got))
	}
	if _, err := st.Add(ctx, learning.Record{Kind: "x", Session: "s1", Data: make(json.RawMessage, learning.MaxDataBytes+1)}); !errors.Is(err, learning.ErrInvalid) {
		t.Fatalf("oversized data: %v", err)
	}
}
