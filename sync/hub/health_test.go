package hub_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/campusedge/campusedge/sync/hub"
)

// TestSyncHealthSeries: counts from several writers add up in a slot,
// the gauges are the last sample, the series is read from a time on and
// slots older than the prune time go.
func TestSyncHealthSeries(t *testing.T) {
	backends(t, func(t *testing.T, st hub.Store) {
		t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ { // four replicas at once
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := st.AddSyncCounts(ctx, t0.Add(90*time.Second), 10, 1); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if err := st.SampleSync(ctx, t0.Add(2*time.Minute), 3, 5, 70, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if err := st.SampleSync(ctx, t0.Add(4*time.Minute), 4, 5, 20, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if err := st.AddSyncCounts(ctx, t0.Add(hub.HealthSlot), 7, 0); err != nil {
			t.Fatal(err)
		}
		ps, err := st.SyncPoints(ctx, t0)
		if err != nil || len(ps) != 2 {
			t.Fatalf("points %+v %v", ps, err)
		}
		if p := ps[0]; !p.At.Equal(t0) || p.Records != 40 || p.Errors != 4 || p.Online != 4 || p.Edges != 5 || p.Backlog != 20 || !p.Sampled {
			t.Fatalf("first slot %+v", p)
		}
		if p := ps[1]; !p.At.Equal(t0.Add(hub.HealthSlot)) || p.Records != 7 || p.Sampled {
			t.Fatalf("second slot %+v", p)
		}
		if ps, _ := st.SyncPoints(ctx, t0.Add(hub.HealthSlot)); len(ps) != 1 {
			t.Fatalf("from the second slot: %+v", ps)
		}
		// A sample a week later prunes what is older than the week.
		late := t0.Add(hub.HealthKeep + hub.HealthSlot)
		if err := st.SampleSync(ctx, late, 1, 5, 0, late.Add(-hub.HealthKeep)); err != nil {
			t.Fatal(err)
		}
		ps, _ = st.SyncPoints(ctx, t0)
		if len(ps) != 2 || !ps[0].At.Equal(t0.Add(hub.HealthSlot)) || !ps[1].At.Equal(late) {
			t.Fatalf("after prune %+v", ps)
		}
	})
}

// TestSyncErrorsCounted: a sync request answered with an error is counted,
// one answered 200 is not.
func TestSyncErrorsCounted(t *testing.T) {
	st, err := hub.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var c hub.SyncCounts
	srv := httptest.NewServer(hub.NewServer(hub.Config{Store: st, Counts: &c}))
	defer srv.Close()
	for _, p := range []string{"/api/v1/sync/changes", "/api/v1/sync/status"} {
		r, err := http.Get(srv.URL + p) // unsigned: 401
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
	}
	if rec, errs := c.Take(); rec != 0 || errs != 2 {
		t.Fatalf("counts %d %d, want 0 2", rec, errs)
	}
	if rec, errs := c.Take(); rec != 0 || errs != 0 {
		t.Fatalf("Take did not reset: %d %d", rec, errs)
	}
}
