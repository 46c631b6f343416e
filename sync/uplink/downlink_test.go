package uplink_test

import (
	"context"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/sync/uplink"
)

const rosterV1 = `{"students":[{"id":"s1","name":"Li Wei","homeroom":"7A","groups":["math-7-1"]}]}`
const rosterV2 = `{"students":[{"id":"s1","name":"Li Wei","homeroom":"7A","groups":["math-7-2"]},{"id":"s2","name":"Wang Fang","homeroom":"7B","groups":["math-7-2"]}]}`
const timetable = `{"slots":[{"day":"mon","period":1,"start":"08:00","end":"08:45","room":"r101","group":"math-7-2","subject":"Mathematics","teacher":"t-zhao","resources":["ml-fractions-1"]}]}`

// TestDownlinkAtomicIdempotent: changes since the cursor are applied with
// the cursor in one transaction; pulling again changes nothing; a page
// holding an invalid document applies none of its changes.
func TestDownlinkAtomicIdempotent(t *testing.T) {
	t.Parallel()
	th := startHub(t, openBoltHub(t, t.TempDir()))
	e := newEdge(t, nil)
	enrol(t, th.Store, th.URL, "s1", e)
	enrol(t, th.Store, th.URL, "s2", newEdge(t, nil))
	ctx := context.Background()
	now := time.Now()
	applied := 0
	u := uplink.New(uplink.Config{Hub: th.URL, DB: e.DB, Outbox: e.Ob, Identity: e.Key, Logger: quiet(),
		Apply: func(tx *bolt.Tx, kind string, data []byte) error { applied++; return nil }})
	for _, doc := range []struct{ school, kind, data string }{{"s1", "roster", rosterV1}, {"s1", "timetable", timetable}, {"s1", "roster", rosterV2}, {"s2", "roster", `{"students":[]}`}} {
		if _, err := th.Store.PutChange(ctx, doc.school, doc.kind, []byte(doc.data), now); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.PullOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := uplink.Doc(e.DB, "roster"); string(got) != rosterV2 {
		t.Fatalf("roster %s", got)
	}
	if got, _ := uplink.Doc(e.DB, "timetable"); string(got) != timetable {
		t.Fatalf("timetable %s", got)
	}
	st, _ := u.Status()
	if st.DownCursor != 3 || applied != 3 {
		t.Fatalf("cursor %d, applied %d (another school's change must not arrive)", st.DownCursor, applied)
	}
	if err := u.PullOnce(ctx); err != nil || applied != 3 {
		t.Fatalf("second pull: %v, applied %d", err, applied)
	}
	// A valid change followed by an invalid one: neither is applied.
	if _, err := th.Store.PutChange(ctx, "s1", "roster", []byte(rosterV1), now); err != nil {
		t.Fatal(err)
	}
	if _, err := th.Store.PutChange(ctx, "s1", "timetable", []byte(`{"slots":[{"day":"someday"}]}`), now); err != nil {
		t.Fatal(err)
	}
	if err := u.PullOnce(ctx); err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Fatalf("invalid change: %v", err)
	}
	if got, _ := uplink.Doc(e.DB, "roster"); string(got) != rosterV2 {
		t.Fatalf("roster changed by a refused page: %s", got)
	}
	if st, _ := u.Status(); st.DownCursor != 3 {
		t.Fatalf("cursor moved to %d past a refused page", st.DownCursor)
	}
}
