package uplink_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/campusedge/campusedge/sync/internal/faultproxy"
)

// appendN appends n records from 8 goroutines and returns their ids.
func appendN(t *testing.T, e *testEdge, n int) map[string]uint64 {
	t.Helper()
	var mu sync.Mutex
	ids := map[string]uint64{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 8 {
				r, err := e.Ob.Append(context.Background(), "quiz.answer", []byte(fmt.Sprintf(`{"student":"s%04d","q":%d,"a":"B"}`, i%1100, i)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ids[r.ID] = r.Seq
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ids
}

func checkExactlyOnce(t *testing.T, got map[string]hubRecordView, want map[string]uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("hub holds %d records, edge appended %d", len(got), len(want))
	}
	for id, seq := range want {
		if r, ok := got[id]; !ok || r.Seq != seq {
			t.Fatalf("record %s seq %d: hub has %+v", id, seq, r)
		}
	}
}

type hubRecordView struct{ Seq uint64 }

func view(t *testing.T, th *testHub, school string) map[string]hubRecordView {
	out := map[string]hubRecordView{}
	for id, r := range hubRecords(t, th.Store, school) {
		out[id] = hubRecordView{Seq: r.Seq}
	}
	return out
}

// TestPartitionExactlyOnce puts a real TCP proxy between edge and hub that
// cuts connections mid-batch (request half sent) and mid-ack (answer half
// received) while records are being appended; at the end the hub holds
// every record exactly once.
func TestPartitionExactlyOnce(t *testing.T) {
	t.Parallel()
	th := startHub(t, openBoltHub(t, t.TempDir()))
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	px, err := faultproxy.Start(faultproxy.Config{Target: th.ln.Addr().String(), Plan: func(n int) faultproxy.Fault {
		mu.Lock()
		defer mu.Unlock()
		switch n % 3 {
		case 0:
			return faultproxy.Fault{CutUpAfter: 200 + rng.IntN(3000), CutDownAfter: -1} // mid-batch
		case 1:
			return faultproxy.Fault{CutUpAfter: -1, CutDownAfter: 1 + rng.IntN(150)} // mid-ack: hub stored, edge never hears
		}
		return faultproxy.None
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	e := newEdge(t, nil)
	enrol(t, th.Store, th.URL, "s1", e)
	// No keep-alive: every request gets a fresh connection and a fresh fault.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	u := e.uplink("http://"+px.Addr(), client)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { u.Run(ctx); close(done) }()
	want := appendN(t, e, 3000)
	waitDrained(t, e, 3000, 60*time.Second)
	cancel()
	<-done
	checkExactlyOnce(t, view(t, th, "s1"), want)
	if px.Cuts() < 5 {
		t.Fatalf("only %d cuts: the test did not exercise partitions", px.Cuts())
	}
	t.Logf("3000 records through %d cut connections", px.Cuts())
}

// TestHubRestartMidBatch stops the hub while batches are in flight and
// starts a new hub process-equivalent (new server, store reopened from its
// file) elsewhere; the edge resumes at its first unacknowledged record.
func TestHubRestartMidBatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st1 := openBoltHub(t, dir)
	th1 := startHub(t, st1)
	px, err := faultproxy.Start(faultproxy.Config{Target: th1.ln.Addr().String(), Rate: 400 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	e := newEdge(t, nil)
	enrol(t, st1, th1.URL, "s1", e)
	want := appendN(t, e, 4000)
	u := e.uplink("http://"+px.Addr(), &http.Client{Timeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { u.Run(ctx); close(done) }()
	// Wait until some but not all is acknowledged, then crash the hub.
	for deadline := time.Now().Add(20 * time.Second); ; {
		st, _ := e.Ob.Stats()
		if st.AckedSeq > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing acknowledged before the restart")
		}
		time.Sleep(2 * time.Millisecond)
	}
	th1.Stop()
	px.DropAll()
	if err := st1.Close(); err != nil {
		t.Fatal(err)
	}
	before, _ := e.Ob.Stats()
	if before.AckedSeq >= 4000 {
		t.Fatal("everything was sent before the restart; slow the link")
	}
	time.Sleep(100 * time.Millisecond) // the edge sees the hub down
	th2 := startHub(t, openBoltHub(t, dir))
	px.SetTarget(th2.ln.Addr().String())
	waitDrained(t, e, 4000, 30*time.Second)
	cancel()
	<-done
	checkExactlyOnce(t, view(t, th2, "s1"), want)
	t.Logf("hub restarted with %d of 4000 acknowledged", before.AckedSeq)
}

// TestEdgeClockHoursWrong: the edge clock is 5 h behind. Signed requests
// still pass (the edge signs with the hub's time learned from its answers),
// records keep the edge's own time, and the status shows the offset.
func TestEdgeClockHoursWrong(t *testing.T) {
	t.Parallel()
	th := startHub(t, openBoltHub(t, t.TempDir()))
	skew := -5 * time.Hour
	e := newEdge(t, func() time.Time { return time.Now().Add(skew) })
	enrol(t, th.Store, th.URL, "s1", e)
	want := appendN(t, e, 50)
	u := e.uplink(th.URL, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go u.Run(ctx)
	waitDrained(t, e, 50, 10*time.Second)
	checkExactlyOnce(t, view(t, th, "s1"), want)
	for _, r := range hubRecords(t, th.Store, "s1") {
		if d := time.Since(time.UnixMilli(r.At)); d < 4*time.Hour {
			t.Fatalf("record at %v: the edge's own time was not kept", time.UnixMilli(r.At))
		}
		if time.Since(r.Received) > time.Minute {
			t.Fatalf("received %v is not hub time", r.Received)
		}
	}
	s, _ := u.Status()
	if off := time.Duration(s.ClockOffsetMS) * time.Millisecond; off < 4*time.Hour || off > 6*time.Hour {
		t.Fatalf("clock offset %v, want about +5h", off)
	}
}

// recorder keeps the last batch request the edge sent.
type recorder struct {
	mu   sync.Mutex
	req  *http.Request
	body []byte
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path == "/api/v1/sync/batch" {
		b, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(b))
		r.mu.Lock()
		r.req, r.body = req.Clone(context.Background()), b
		r.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(req)
}

func replay(t *testing.T, rec *recorder, mutate func(h http.Header, body []byte) []byte) (int, string) {
	t.Helper()
	rec.mu.Lock()
	body := append([]byte(nil), rec.body...)
	req, _ := http.NewRequest(http.MethodPost, rec.req.URL.String(), nil)
	req.Header = rec.req.Header.Clone()
	rec.mu.Unlock()
	if mutate != nil {
		body = mutate(req.Header, body)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRateCap: with -sync-rate 20000 B/s, ~60 KB of barely compressible
// batches cannot leave in less than about two seconds (the first second's
// worth may go at once). Only a lower bound is checked.
func TestRateCap(t *testing.T) {
	t.Parallel()
	th := startHub(t, openBoltHub(t, t.TempDir()))
	e := newEdge(t, nil)
	en := enrol(t, th.Store, th.URL, "s1", e)
	rnd := rand.New(rand.NewPCG(3, 4))
	for range 120 {
		b := make([]byte, 700)
		for i := range b {
			b[i] = "0123456789abcdefghijklmnopqrstuvwxyz"[rnd.IntN(36)]
		}
		if _, err := e.Ob.Append(context.Background(), "session.log", []byte(`"`+string(b)+`"`)); err != nil {
			t.Fatal(err)
		}
	}
	u := uplinkWith(e, th.URL, 20000)
	start := time.Now()
	sent := 0
	for {
		n, err := u.SendOnce(context.Background(), en)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		sent += n
	}
	st, _ := u.Status()
	if min := time.Duration(float64(st.SentBytes-20000) / 20000 * float64(time.Second)); time.Since(start) < min-100*time.Millisecond || sent != 120 {
		t.Fatalf("%d bytes (%d records) sent in %s; a 20000 B/s cap needs at least %s", st.SentBytes, sent, time.Since(start), min)
	}
	t.Logf("%d bytes in %s", st.SentBytes, time.Since(start))
}
