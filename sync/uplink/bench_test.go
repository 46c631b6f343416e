package uplink_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/disktest"
	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/internal/faultproxy"
	"github.com/campusedge/campusedge/sync/internal/pgtest"
	"github.com/campusedge/campusedge/sync/uplink"
	"github.com/campusedge/campusedge/sync/wire"
)

// The sync benchmark is opt-in: it takes about a minute.
//
//	go test ./sync/uplink -run TestSyncBench -sync-bench -v
var (
	benchOn   = flag.Bool("sync-bench", false, "run TestSyncBench (durable append rate, shaped backlog drain, hub ingest)")
	benchRate = flag.Int("sync-bench-rate", 2_000_000, "TestSyncBench: link rate in bits/s")
	benchRTT  = flag.Duration("sync-bench-rtt", 200*time.Millisecond, "TestSyncBench: link round-trip time")
	benchQuiz = flag.Int("sync-bench-quiz", 100_000, "TestSyncBench: quiz-answer records in the backlog (plus 10,000 attendance)")
)

func attendance(i int) []byte {
	return fmt.Appendf(nil, `{"student":"s%04d","date":"2026-03-02","period":%d,"status":"present","by":"t-%03d"}`, i%1100, i%8+1, i%100)
}

func quiz(i int) []byte {
	return fmt.Appendf(nil, `{"session":"sess-%03d","quiz":"q%02d","student":"s%04d","answer":"%c","ms":%d}`, i/1100%40, i%20, i%1100, 'A'+rune(i%4), 2000+i%9000)
}

func TestSyncBench(t *testing.T) {
	if !*benchOn {
		t.Skip("opt-in: -sync-bench")
	}
	// 1. Durable append rate.
	peer := disktest.FdatasyncRate(t, t.TempDir(), 2*time.Second)
	t.Logf("disk: %.0f fdatasync/s (4 KiB write + fdatasync, the physical peer)", peer)
	for _, writers := range []int{1, 64} {
		e := newEdge(t, nil)
		var n atomic.Int64
		c0 := e.Ob.Commits()
		start := time.Now()
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; time.Since(start) < 3*time.Second; i += writers {
					if _, err := e.Ob.Append(context.Background(), "attendance.mark", attendance(i)); err != nil {
						t.Error(err)
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		el := time.Since(start).Seconds()
		commits := float64(e.Ob.Commits() - c0)
		t.Logf("durable append, %2d writer(s): %8.0f records/s, %6.0f commits/s (each commit = bbolt's 2 fdatasyncs), %.1f records/commit, %.2f× the disk's fdatasync rate in records/s",
			writers, float64(n.Load())/el, commits/el, float64(n.Load())/commits, float64(n.Load())/el/peer)
	}

	// 2. A school day's backlog through a shaped link.
	th := startHub(t, openBoltHub(t, t.TempDir()))
	rateBytes := *benchRate / 8
	px, err := faultproxy.Start(faultproxy.Config{Target: th.ln.Addr().String(), Rate: rateBytes, Delay: *benchRTT / 2})
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	e := newEdge(t, nil)
	enrol(t, th.Store, th.URL, "s1", e)
	total := 10_000 + *benchQuiz
	fillBacklog(t, e, total)
	var rawPayload int
	recs, _ := e.Ob.Pending(0, total, 1<<40)
	for _, r := range recs {
		rawPayload += len(r.Payload)
	}
	// Production batch bounds (the test harness uses small ones).
	u := uplink.New(uplink.Config{Hub: "http://" + px.Addr(), DB: e.DB, Outbox: e.Ob, Identity: e.Key, Logger: quiet(), Client: &http.Client{Timeout: 2 * time.Minute}})
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	go u.Run(ctx)
	waitDrained(t, e, uint64(total), 10*time.Minute)
	wall := time.Since(start)
	cancel()
	st, _ := u.Status()
	up, down := px.Bytes()
	ideal := time.Duration(float64(up) / float64(rateBytes) * float64(time.Second))
	t.Logf("drain through %d bit/s, %s RTT: %d records in %s; %d batch bytes (gzip) sent, %d bytes up on the wire incl. HTTP, %d down",
		*benchRate, *benchRTT, total, wall.Round(time.Millisecond), st.SentBytes, up, down)
	t.Logf("  %.1f wire bytes/record (payload JSON alone %.1f B/record); wire bytes ÷ link rate = %s; wall/ideal = %.2f; batches of up to 4000 records, two in flight",
		float64(up)/float64(total), float64(rawPayload)/float64(total), ideal.Round(time.Millisecond), wall.Seconds()/ideal.Seconds())
	if n := len(hubRecords(t, th.Store, "s1")); n != total {
		t.Fatalf("hub holds %d of %d", n, total)
	}

	// 3. Hub ingest rate straight into each backend (batches of 1000).
	ingest := func(name string, st hub.Store) {
		mustEnrolDirect(t, st, "s1", "bench-edge")
		const n, batch = 100_000, 1000
		start := time.Now()
		for first := 1; first <= n; first += batch {
			rs := make([]wire.Record, batch)
			for i := range rs {
				s := first + i
				rs[i] = wire.Record{Seq: uint64(s), ID: fmt.Sprintf("r%08d", s), Kind: "quiz.answer", At: time.Now().UnixMilli(), Payload: quiz(s)}
			}
			if _, err := st.Ingest(context.Background(), "bench-edge", "s1", rs, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("hub ingest on %-8s: %8.0f records/s (%d records, batches of %d, one edge)", name, n/time.Since(start).Seconds(), n, batch)
	}
	ingest("bbolt", openBoltHub(t, t.TempDir()))
	pg, err := hub.OpenPG(context.Background(), pgtest.DB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	ingest("postgres", pg)
}

// fillBacklog appends a school day's records to e's outbox: 10,000
// attendance marks, then quiz answers up to total, from 64 writers.
func fillBacklog(t *testing.T, e *testEdge, total int) {
	var wg sync.WaitGroup
	fill := time.Now()
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 64 {
				kind, p := "quiz.answer", quiz(i)
				if i < 10_000 {
					kind, p = "attendance.mark", attendance(i)
				}
				if _, err := e.Ob.Append(context.Background(), kind, p); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("backlog of %d records appended in %s", total, time.Since(fill).Round(time.Millisecond))
}

func mustEnrolDirect(t *testing.T, st hub.Store, school, id string) {
	ctx := context.Background()
	_ = st.CreateSchool(ctx, hub.School{Code: school, Name: school, Created: time.Now()})
	if err := st.CreateEnrolToken(ctx, school, []byte("bench"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Enrol(ctx, []byte("bench"), hub.Edge{ID: id, PublicKey: []byte("k")}, time.Now()); err != nil {
		t.Fatal(err)
	}
}
