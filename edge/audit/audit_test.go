package audit

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestRecordStoresAndQueues: each entry is stored and handed to the
// outbox in the same transaction; the newest come first and page by seq;
// a failing outbox stores nothing (the two commit or vanish together).
func TestRecordStoresAndQueues(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "a.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(Migrate); err != nil {
		t.Fatal(err)
	}
	var queued []Entry
	fail := false
	l := New(db, func(tx *bolt.Tx, kind string, payload []byte, _ time.Time) error {
		if fail {
			return errors.New("outbox full")
		}
		var e Entry
		if kind != RecordKind || json.Unmarshal(payload, &e) != nil {
			t.Errorf("outbox got %s %s", kind, payload)
		}
		queued = append(queued, e)
		return nil
	}, nil, nil)
	for _, a := range []string{"signin", "staff.create", "terminal.unpair"} {
		l.Record("li.admin", a, "x", "")
	}
	fail = true
	l.Record("li.admin", "lost", "x", "")
	es, err := l.Newest(10, 0)
	if err != nil || len(es) != 3 || es[0].Action != "terminal.unpair" || es[2].Action != "signin" {
		t.Fatalf("newest: %+v %v", es, err)
	}
	if len(queued) != 3 || queued[1].Seq != 2 {
		t.Errorf("queued %+v", queued)
	}
	page, _ := l.Newest(10, es[0].Seq)
	if len(page) != 2 || page[0].Action != "staff.create" {
		t.Errorf("page before %d: %+v", es[0].Seq, page)
	}
}
