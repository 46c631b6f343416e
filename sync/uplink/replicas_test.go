package uplink_test

import (
	"context"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/internal/faultproxy"
	"github.com/campusedge/campusedge/sync/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

// alternate sends each request to the next of several hub addresses, as a
// round-robin load balancer would.
type alternate struct {
	hosts []string
	n     atomic.Int64
	per   [2]atomic.Int64 // requests per host
	base  http.RoundTripper
}

func (a *alternate) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	i := int(a.n.Add(1)) % len(a.hosts)
	a.per[i].Add(1)
	r.URL.Host = a.hosts[i]
	r.Host = r.URL.Host
	return a.base.RoundTrip(r)
}

// TestTwoReplicasOnePostgres runs two cityhub sync servers, each with its
// own connection pool, over one PostgreSQL database; the edge's requests
// alternate between them and every fifth connection loses its answer
// (mid-ack), so a batch stored by one replica is resent to the other.
// Every record ends up at the hub exactly once.
func TestTwoReplicasOnePostgres(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t)
	ctx := context.Background()
	var hosts []string
	var stores []hub.Store
	for range 2 {
		st, err := hub.OpenPG(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		stores = append(stores, st)
		th := startHub(t, st)
		px, err := faultproxy.Start(faultproxy.Config{Target: th.ln.Addr().String(), Plan: func(n int) faultproxy.Fault {
			if n%5 == 4 {
				return faultproxy.Fault{CutUpAfter: -1, CutDownAfter: 20}
			}
			return faultproxy.None
		}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = px.Close() })
		hosts = append(hosts, px.Addr())
	}
	e := newEdge(t, nil)
	// Enrol through replica 0; replica 1 must know the edge from the database.
	enrol(t, stores[0], "http://"+hosts[0], "s1", e)
	lb := &alternate{hosts: hosts, base: &http.Transport{DisableKeepAlives: true}}
	u := e.uplink("http://load-balancer.invalid", &http.Client{Timeout: 5 * time.Second, Transport: lb})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() { u.Run(runCtx); close(done) }()
	want := appendN(t, e, 2000)
	waitDrained(t, e, 2000, 60*time.Second)
	cancel()
	<-done
	got := map[string]hubRecordView{}
	for id, r := range hubRecords(t, stores[1], "s1") {
		got[id] = hubRecordView{Seq: r.Seq}
	}
	checkExactlyOnce(t, got, want)
	if a, b := lb.per[0].Load(), lb.per[1].Load(); a < 4 || b < 4 {
		t.Fatalf("requests per replica %d and %d: both must be exercised", a, b)
	}
}
