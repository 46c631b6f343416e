package benchtools

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/campusedge/campusedge/cmd/edged/appliance/appliancetest"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and a ')' must not shift the fields.
	stat := "4242 (edged (x) y) S 1 4242 4242 0 -1 4194560 1364 0 0 0 250 37 0 0 20 0 9 0 123 1000 2000\n"
	got, err := parseStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 287 * clockTick; got != want {
		t.Errorf("cpu = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 utime 12"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) accepted", bad)
		}
	}
}

func TestParseStatus(t *testing.T) {
	f := parseStatus([]byte("Name:\tedged\nVmHWM:\t   20480 kB\nVmRSS:\t   12288 kB\nRssAnon:\t 4096 kB\nThreads:\t9\nCpus_allowed_list:\t0-1\n"))
	if f["VmRSS"] != 12288 || f["VmHWM"] != 20480 || f["RssAnon"] != 4096 || f["Threads"] != 9 {
		t.Errorf("parseStatus = %v", f)
	}
}

func TestReadProcSelf(t *testing.T) {
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if s.RSSKiB <= 0 || s.Threads <= 0 || s.FDs <= 0 || s.HWMKiB < s.RSSKiB {
		t.Errorf("implausible sample %+v", s)
	}
	if lim, err := OpenFileLimit(os.Getpid()); err != nil || lim == 0 {
		t.Errorf("OpenFileLimit = %d, %v", lim, err)
	}
}

func TestFdatasyncLatency(t *testing.T) {
	d, err := FdatasyncLatency(t.TempDir(), 5)
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 5 || d.Min <= 0 || d.Max < d.P50 {
		t.Errorf("FdatasyncLatency = %+v", d)
	}
}

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	s := Summarize(d)
	if s.N != 100 || s.P50 != 50*time.Millisecond || s.P95 != 95*time.Millisecond || s.P99 != 99*time.Millisecond ||
		s.Min != time.Millisecond || s.Max != 100*time.Millisecond {
		t.Errorf("Summarize = %+v", s)
	}
	if d[0] != 100*time.Millisecond {
		t.Error("Summarize sorted its input")
	}
	if got := Summarize([]time.Duration{7}); got.P50 != 7 || got.P95 != 7 {
		t.Errorf("one sample: %+v", got)
	}
	if (Summarize(nil) != Durations{}) {
		t.Error("empty sample")
	}
	if MedianInt64([]int64{5, 1, 3, 2}) != 2 || MedianInt64(nil) != 0 {
		t.Error("MedianInt64")
	}
}

// startAppliance runs a real appliance in-process on 127.0.0.1 and returns
// an admin client for it; it stops when the test ends.
func startAppliance(tb testing.TB) *Edge {
	tb.Helper()
	cfg := appliancetest.Config(tb)
	a := appliancetest.Start(context.Background(), tb, cfg, nil)
	e := NewEdge(a.URL, a.Admin, 8)
	tb.Cleanup(e.HTTP.CloseIdleConnections)
	return e
}

// TestPairAndConnect runs the control bench's client path at small scale
// against an in-process appliance: pair through the API, connect, see the
// terminals online, close, see them offline.
func TestPairAndConnect(t *testing.T) {
	const n = 24
	e := startAppliance(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pr, err := e.PairTerminals(ctx, n, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	tokens := make([]string, n)
	for i, c := range pr.Credentials {
		if c.Token == "" || pr.PerTerminal[i] <= 0 {
			t.Fatalf("terminal %d: %+v in %v", i, c, pr.PerTerminal[i])
		}
		tokens[i] = c.Token
	}
	ws, err := WSURL(e.URL)
	if err != nil {
		t.Fatal(err)
	}
	res := ConnectAll(ctx, ws, nil, tokens, 8, 10*time.Second, nil)
	defer CloseAll(res.Conns, 8)
	if res.Failed != 0 || len(res.PerConn) != n {
		t.Fatalf("connected %d of %d: %v", len(res.PerConn), n, res.Errors)
	}
	for i, c := range res.Conns {
		if c.Welcome.TerminalID != pr.Credentials[i].TerminalID || c.Welcome.HeartbeatSeconds <= 0 {
			t.Errorf("connection %d welcomed as %+v, paired as %s", i, c.Welcome, pr.Credentials[i].TerminalID)
		}
	}
	waitOnline(t, e, n)
	m, err := e.Metrics(ctx)
	if err != nil || m["campusedge_control_connections"] != n {
		t.Errorf("campusedge_control_connections = %v (%v)", m["campusedge_control_connections"], err)
	}
	CloseAll(res.Conns, 8)
	for _, c := range res.Conns {
		if dropped, err := c.Dropped(); dropped {
			t.Errorf("a connection reported a drop after Close: %v", err)
		}
	}
	waitOnline(t, e, 0)

	// A schedule paces the dials.
	sched := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond}
	start := time.Now()
	res = ConnectAll(ctx, ws, nil, tokens[:3], 3, 10*time.Second, sched)
	defer CloseAll(res.Conns, 3)
	if res.Failed != 0 || time.Since(start) < 200*time.Millisecond || res.Welcomed[2] < 200*time.Millisecond {
		t.Errorf("scheduled connect: %d failed, took %v, welcomed at %v", res.Failed, time.Since(start), res.Welcomed)
	}
	if bad := ConnectAll(ctx, ws, nil, tokens[:3], 3, time.Second, sched[:1]); bad.Failed != 3 {
		t.Error("a schedule of the wrong length was accepted")
	}

	// A wrong token gets no welcome.
	if c, err := Dial(ctx, ws, nil, pr.Credentials[0].TerminalID+".wrong", "x"); err == nil {
		c.Close()
		t.Error("a wrong token was welcomed")
	}
}

func waitOnline(t *testing.T, e *Edge, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		online, total, err := e.CountOnline(ctx)
		if err == nil && online == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d online, want %d (%v)", online, total, want, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// BenchmarkPairAndConnect measures one terminal's whole enrolment against
// an in-process appliance: issue a code (admin), pair with it, open the
// control connection and receive the welcome.
//
//	go test ./edge/internal/benchtools -run '^$' -bench PairAndConnect -benchtime=200x
func BenchmarkPairAndConnect(b *testing.B) {
	e := startAppliance(b)
	ctx := context.Background()
	room, err := e.CreateClassroom(ctx, "Bench room", "BENCH")
	if err != nil {
		b.Fatal(err)
	}
	ws, err := WSURL(e.URL)
	if err != nil {
		b.Fatal(err)
	}
	// Keep at most 256 connections open so a long -benchtime stays within
	// the file limit (each costs a descriptor on both sides here).
	var open []*Conn
	defer func() { CloseAll(open, 16) }()
	for i := 0; b.Loop(); i++ {
		code, err := e.PairingCode(ctx, room)
		if err != nil {
			b.Fatal(err)
		}
		cred, err := e.Pair(ctx, code, "bench", "edgebench")
		if err != nil {
			b.Fatal(err)
		}
		c, err := Dial(ctx, ws, nil, cred.Token, "edgebench")
		if err != nil {
			b.Fatal(err)
		}
		open = append(open, c)
		if len(open) > 256 {
			open[0].Close()
			open = open[1:]
		}
	}
}
