package uplink_test

import (
	"testing"
	"time"

	"github.com/campusedge/campusedge/sync/uplink"
)

// Dropping acknowledged records is a bbolt commit, which a busy disk can
// hold up for a second. The uplink keeps sending while one waits (it used
// to stop launching batches until the drop was done, with the link idle),
// drops the records once the store lets it, and returns only then.
func TestSendingGoesOnWhileDropsWait(t *testing.T) {
	st := openBoltHub(t, t.TempDir())
	h := startHub(t, st)
	e := newEdge(t, nil)
	enr := enrol(t, st, h.URL, "s1", e)
	const total = 2000
	fillBacklog(t, e, total)
	u := uplink.New(uplink.Config{Hub: h.URL, DB: e.DB, Outbox: e.Ob, Identity: e.Key, Logger: quiet(),
		MaxRecords: 100, InFlight: 4})

	// The edge store's write lock held, as a slow commit holds it.
	tx, err := e.DB.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := u.SendOnce(t.Context(), enr)
		done <- result{n, err}
	}()
	// Every batch reaches the hub although no drop can commit: far more
	// than the four batches the window holds before an answer.
	held := 0
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if held = len(hubRecords(t, st, "s1")); held == total {
			break
		}
	}
	if held != total {
		_ = tx.Rollback()
		t.Fatalf("the hub holds %d of %d records after 20 s while the edge's store was locked: sending waited for the drops", held, total)
	}
	select {
	case r := <-done:
		_ = tx.Rollback()
		t.Fatalf("SendOnce returned (%d, %v) before the acknowledged records could be dropped", r.n, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("SendOnce did not return within 20 s of the store being free")
	}
	if r.err != nil || r.n != total {
		t.Fatalf("SendOnce = %d, %v; want %d, nil", r.n, r.err, total)
	}
	ob, err := e.Ob.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if ob.AckedSeq != total || ob.Backlog != 0 {
		t.Fatalf("outbox after the send: %+v, want all %d acknowledged and dropped", ob, total)
	}
}
