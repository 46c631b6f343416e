package benchtools

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/edge/certs"
)

// The figure tests below skip unless their flag is set; see doc.go for the
// commands that produce docs/BENCHMARKS.md.
var (
	startupRuns = flag.Int("startup-runs", 0, "TestStartupBench: timed starts per variant (0 skips the test; docs use 20)")
	idleSettle  = flag.Duration("idle-settle", time.Second, "TestStartupBench: wait after /healthz answers before reading idle RSS")

	terminals   = flag.Int("terminals", 0, "TestControlBench: terminals to pair and connect (0 skips the test; docs use 2000)")
	hold        = flag.Duration("hold", 60*time.Second, "TestControlBench: how long to hold all connections while measuring")
	classrooms  = flag.Int("classrooms", 40, "TestControlBench: classrooms the terminals are spread over")
	pairWorkers = flag.Int("pair-workers", 8, "TestControlBench: pairing requests in flight")
	dialWorkers = flag.Int("dial-workers", 64, "TestControlBench: WebSocket dials in flight")
	spread      = flag.Duration("spread", 0, "TestControlBench: open the connections evenly over this time instead of as fast as possible (10s spreads heartbeats evenly over the ping period)")
	peer        = flag.Bool("peer", true, "TestControlBench: also hold the same number of connections on floorserver")
	edgedSrc    = flag.String("edged-src", "", "build edged from the module at this `dir` (e.g. a `git archive HEAD` export) instead of this checkout")
	edgedLog    = flag.String("edged-log", "", "TestControlBench: also write edged's log to this file")
	tlsMode     = flag.Bool("tls", false, "TestControlBench: also hold the same connections over TLS (wss:// to edged's HTTPS port, key pinned) and compare with plain ws:// in the same run; each edged phase then runs on a fresh edged process started on the paired data dir")
)

const (
	edgedPkg = "github.com/campusedge/campusedge/cmd/edged"
	floorPkg = "github.com/campusedge/campusedge/edge/internal/benchtools/floorserver"
)

// machine logs what the figures were measured on.
func machine(t *testing.T) {
	t.Helper()
	model := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	var u syscall.Utsname
	_ = syscall.Uname(&u)
	rel := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	t.Logf("machine: %d CPUs (%s), kernel %s, %s, %s", runtime.NumCPU(), model, rel, runtime.Version(), time.Now().UTC().Format(time.RFC3339))
	logLoad(t)
	t.Cleanup(func() { logLoad(t) })
	if raceEnabled {
		t.Logf("WARNING: this test binary is built with -race; client-side timings include race instrumentation")
	}
}

// logLoad logs the load average: the figures are only as quiet as the
// machine was.
func logLoad(t *testing.T) {
	t.Logf("load average (1, 5, 15 min, running/total): %s", loadNow())
}

// loadNow is /proc/loadavg, trimmed.
func loadNow() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(data))
}

func buildBins(t *testing.T) (edged, floor string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := t.TempDir()
	bins, err := bintest.Build(ctx, out, bintest.BuildOptions{Src: *edgedSrc}, edgedPkg)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := bintest.Build(ctx, out, bintest.BuildOptions{}, floorPkg)
	if err != nil {
		t.Fatal(err)
	}
	bins = append(bins, fb...)
	src := *edgedSrc
	if src == "" {
		src = "this checkout"
	}
	t.Logf("edged built from %s (%s)", src, SourceState(ctx, *edgedSrc))
	for _, b := range bins {
		if fi, err := os.Stat(b); err == nil {
			t.Logf("built %s (%.1f MiB)", filepath.Base(b), float64(fi.Size())/(1<<20))
		}
	}
	return bins[0], bins[1]
}

// startupSample is one timed start.
type startupSample struct {
	ready, listening, shutdown time.Duration
	rssKiB                     int64
}

// timeStart starts bin, times exec → /healthz 200, reads idle RSS after
// settle, and stops it with SIGTERM (it must exit 0).
func timeStart(t *testing.T, bin string, args []string, settle time.Duration) startupSample {
	t.Helper()
	p, err := bintest.Start(bin, args, 15*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	if err := bintest.WaitHealthy(p.URL(), 15*time.Second); err != nil {
		t.Fatalf("%s: %v\n%s", filepath.Base(bin), err, p.Logs())
	}
	s := startupSample{ready: time.Since(p.Started), listening: p.Listening}
	time.Sleep(settle)
	ps, err := ReadProc(p.PID())
	if err != nil {
		t.Fatal(err)
	}
	s.rssKiB = ps.RSSKiB
	d, code, err := p.Stop(15 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("%s: stop: exit %d, %v\n%s", filepath.Base(bin), code, err, p.Logs())
	}
	s.shutdown = d
	return s
}

// TestStartupBench is figure 1: edged start-up time (exec → /healthz 200)
// on fresh and existing data dirs and its idle RSS, next to floorserver.
//
//	go test ./edge/internal/benchtools -run TestStartupBench -count=1 -v -startup-runs=20
func TestStartupBench(t *testing.T) {
	if *startupRuns <= 0 {
		t.Skip("figure test: run with -startup-runs=20 (see docs/BENCHMARKS.md)")
	}
	machine(t)
	edged, floor := buildBins(t)
	dir := t.TempDir()
	if fs, err := FdatasyncLatency(dir, 200); err == nil {
		t.Logf("disk floor: write 4 KiB + fdatasync next to the data dirs: %s (a bbolt commit makes two)", fs)
	} else {
		t.Errorf("fdatasync probe: %v", err)
	}
	existing := filepath.Join(dir, "existing")
	edgedArgs := func(data string) []string {
		return []string{"-data", data, "-listen", "127.0.0.1:0", "-mdns=false"}
	}
	floorArgs := []string{"-listen", "127.0.0.1:0"}

	// Warm-up, not counted: first exec of each binary from the page cache,
	// and the first start that creates the "existing" data dir.
	timeStart(t, floor, floorArgs, 0)
	timeStart(t, edged, edgedArgs(existing), 0)

	variants := []struct {
		name string
		run  func(i int) startupSample
	}{
		{"floorserver (net/http floor)", func(int) startupSample { return timeStart(t, floor, floorArgs, *idleSettle) }},
		{"edged, fresh data dir", func(i int) startupSample {
			return timeStart(t, edged, edgedArgs(filepath.Join(dir, fmt.Sprintf("fresh-%d", i))), *idleSettle)
		}},
		{"edged, existing data dir", func(int) startupSample { return timeStart(t, edged, edgedArgs(existing), *idleSettle) }},
	}
	samples := make([][]startupSample, len(variants))
	for i := range *startupRuns {
		// Rotate the order so no variant always follows the same one.
		for k := range variants {
			v := (i + k) % len(variants)
			samples[v] = append(samples[v], variants[v].run(i))
		}
	}
	t.Logf("start-up: exec → GET /healthz 200, %d runs each, idle RSS read %s after ready", *startupRuns, *idleSettle)
	t.Logf("| %-30s | %9s | %9s | %9s | %9s | %14s | %13s | %12s |", "binary", "ready p50", "ready p95", "min", "max", "log line p50", "idle RSS p50", "SIGTERM p50")
	for v, s := range samples {
		var ready, listen, stop []time.Duration
		var rss []int64
		for _, x := range s {
			ready, listen, stop = append(ready, x.ready), append(listen, x.listening), append(stop, x.shutdown)
			rss = append(rss, x.rssKiB)
		}
		r := Summarize(ready)
		t.Logf("| %-30s | %9s | %9s | %9s | %9s | %14s | %13s | %12s |", variants[v].name, ms(r.P50), ms(r.P95), ms(r.Min), ms(r.Max),
			ms(Summarize(listen).P50), MiB(MedianInt64(rss)), ms(Summarize(stop).P50))
	}
}

// holdReport is what TestControlBench measures on one server.
type holdReport struct {
	name                      string
	edged, tls                bool // an edged (with the admin API); over wss://
	idle, preConnect          ProcSample
	burst, connect            ConnectResult // burst: as fast as possible; connect: the held connections
	burstCPU                  time.Duration // server CPU during the burst
	burstEnd                  ProcSample    // right after the burst: RSS for N fresh connections
	holdStart, holdEnd        ProcSample
	loadCPU                   float64 // the load generator's CPU over the hold, % of one core
	pingsMin, pingsMax, pings int64
	dropped                   int
	messages                  int64
	afterClose                ProcSample
	closeToOffline            time.Duration // edged: close → terminals_online 0
	online, listed            int           // edged: GET /api/v1/terminals
	goBefore, goHold, goAfter float64       // edged: go_goroutines
	heapHold, stackHold       float64       // edged: go_memstats_heap_inuse_bytes, go_memstats_stack_inuse_bytes
	heapAfter                 float64       // edged: go_memstats_heap_inuse_bytes 2 s after close
	connsMetric               float64       // edged: campusedge_control_connections during hold
	shutdown                  time.Duration
	exitCode                  int
	levels                    map[string]int
	warnings                  []string
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mustProc(t *testing.T, pid int) ProcSample {
	t.Helper()
	s, err := ReadProc(pid)
	if err != nil {
		t.Fatalf("read /proc/%d: %v", pid, err)
	}
	return s
}

// holdOn connects tokens to p, holds them for *hold, and measures. edge is
// nil for floorserver (no admin API). With a schedule, a burst connect is
// timed and closed first, then the held connections open on the schedule.
// With viaTLS the connections go to edged's HTTPS listener (wss://),
// trusting the key it logged (as a terminal that learnt the pin at pairing).
func holdOn(t *testing.T, name string, p *bintest.Process, edge *Edge, tokens []string, idle ProcSample, schedule []time.Duration, viaTLS bool) holdReport {
	t.Helper()
	r := holdReport{name: name, idle: idle, edged: edge != nil, tls: viaTLS}
	ctx, cancel := context.WithTimeout(context.Background(), *hold+10*time.Minute)
	defer cancel()
	metric := func(name string) float64 {
		if edge == nil {
			return 0
		}
		m, err := edge.Metrics(ctx)
		if err != nil {
			t.Errorf("%s: /metrics: %v", r.name, err)
		}
		return m[name]
	}
	time.Sleep(2 * time.Second)
	r.preConnect = mustProc(t, p.PID())
	r.goBefore = metric("go_goroutines")

	base := p.URL()
	var tlsConf *tls.Config
	if viaTLS {
		var pin string
		var err error
		if base, pin, err = p.HTTPS(5 * time.Second); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		tlsConf = certs.PinnedTLS(pin)
	}
	wsURL, err := WSURL(base)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: control connections to %s", name, wsURL)
	connect := func(sched []time.Duration) (ConnectResult, time.Duration, ProcSample) {
		a := mustProc(t, p.PID())
		res := ConnectAll(ctx, wsURL, tlsConf, tokens, *dialWorkers, 30*time.Second, sched)
		b := mustProc(t, p.PID())
		t.Logf("%s: %d/%d connected in %s (%d failed) %v", name, len(tokens)-res.Failed, len(tokens), res.Elapsed.Round(time.Millisecond), res.Failed, res.Errors)
		if res.Failed > 0 {
			t.Errorf("%s: %d connections failed, first: %v\nserver log tail:\n%s", name, res.Failed, res.Errors, tail(p.Logs(), 20))
		}
		return res, b.CPU - a.CPU, b
	}
	if schedule != nil {
		// The connect-time figures are for a burst (every terminal at
		// once, as after an edge restart); the held connections then open
		// on the schedule.
		r.burst, r.burstCPU, r.burstEnd = connect(nil)
		CloseAll(r.burst.Conns, 64)
		time.Sleep(2 * time.Second)
		r.connect, _, _ = connect(schedule)
	} else {
		r.connect, r.burstCPU, r.burstEnd = connect(nil)
		r.burst = r.connect
	}
	defer CloseAll(r.connect.Conns, 64)

	time.Sleep(time.Second) // let the last welcomes' log lines and writes finish
	pings0 := make([]int64, len(r.connect.Conns))
	for i, c := range r.connect.Conns {
		if c != nil {
			pings0[i] = c.Pings()
		}
	}
	t.Logf("%s: hold starts; load average %s", name, loadNow())
	load0 := selfCPU()
	r.holdStart = mustProc(t, p.PID())
	end := r.holdStart.At.Add(*hold)
	for step := 0; time.Now().Before(end) && step < 100_000; step++ {
		time.Sleep(min(10*time.Second, time.Until(end)))
		if time.Until(end) > time.Second {
			s := mustProc(t, p.PID())
			t.Logf("%s: hold %3.0fs rss=%s cpu=%.2f%% threads=%d fds=%d", name, s.At.Sub(r.holdStart.At).Seconds(), MiB(s.RSSKiB), CPUPercent(r.holdStart, s), s.Threads, s.FDs)
		}
	}
	r.holdEnd = mustProc(t, p.PID())
	t.Logf("%s: hold ends; load average %s", name, loadNow())
	r.loadCPU = 100 * float64(selfCPU()-load0) / float64(r.holdEnd.At.Sub(r.holdStart.At))
	r.pingsMin = -1
	for i, c := range r.connect.Conns {
		if c == nil {
			continue
		}
		n := c.Pings() - pings0[i]
		r.pings += n
		r.pingsMax = max(r.pingsMax, n)
		if r.pingsMin < 0 || n < r.pingsMin {
			r.pingsMin = n
		}
		r.messages += c.Messages()
		if dropped, err := c.Dropped(); dropped {
			r.dropped++
			if r.dropped <= 3 {
				t.Errorf("%s: connection %d dropped during the hold: %v", name, i, err)
			}
		}
	}
	if edge != nil {
		r.connsMetric = metric("campusedge_control_connections")
		r.goHold = metric("go_goroutines")
		r.heapHold = metric("go_memstats_heap_inuse_bytes")
		r.stackHold = metric("go_memstats_stack_inuse_bytes")
		r.online, r.listed, err = edge.CountOnline(ctx)
		if err != nil {
			t.Errorf("GET /api/v1/terminals: %v", err)
		}
	}

	closeStart := time.Now()
	CloseAll(r.connect.Conns, 64)
	if edge != nil {
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if metric("campusedge_terminals_online") == 0 && metric("campusedge_control_connections") == 0 {
				r.closeToOffline = time.Since(closeStart)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if r.closeToOffline == 0 {
			t.Errorf("%s: terminals still online 60 s after every connection closed", name)
		}
	}
	time.Sleep(2 * time.Second)
	r.afterClose = mustProc(t, p.PID())
	r.goAfter = metric("go_goroutines")
	r.heapAfter = metric("go_memstats_heap_inuse_bytes")
	r.shutdown, r.exitCode, err = p.Stop(20 * time.Second)
	if err != nil || r.exitCode != 0 {
		t.Errorf("%s: stop: exit %d, %v", name, r.exitCode, err)
	}
	r.levels = p.LogLevels()
	r.warnings = append(p.LogLines("WARN", 5), p.LogLines("ERROR", 5)...)
	return r
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestControlBench is figure 2: edged's CPU and memory while holding N
// terminal control connections with heartbeats, next to floorserver
// holding as many.
//
//	go test ./edge/internal/benchtools -run TestControlBench -count=1 -v -timeout=20m -terminals=2000 -hold=60s
func TestControlBench(t *testing.T) {
	n := *terminals
	if n <= 0 {
		t.Skip("figure test: run with -terminals=2000 (see docs/BENCHMARKS.md)")
	}
	if *hold < time.Second || *hold > time.Hour {
		t.Fatal("-hold must be between 1s and 1h")
	}
	machine(t)
	limit, err := RaiseFileLimit(uint64(2*n + 1024))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RLIMIT_NOFILE soft limit %d (bench and edged)", limit)
	edgedBin, floorBin := buildBins(t)
	dir := t.TempDir()

	var logTo io.Writer // nil, not a nil *os.File: Start checks for nil
	if *edgedLog != "" {
		f, err := os.Create(*edgedLog)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		logTo = f
	}
	ep, err := bintest.Start(edgedBin, []string{"-data", filepath.Join(dir, "edge"), "-listen", "127.0.0.1:0", "-mdns=false"}, 15*time.Second, logTo)
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Kill()
	if lim, err := OpenFileLimit(ep.PID()); err == nil {
		t.Logf("edged pid %d at %s, its RLIMIT_NOFILE %d", ep.PID(), ep.Addr, lim)
	}
	if err := bintest.WaitHealthy(ep.URL(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	idle := mustProc(t, ep.PID())
	tok, err := os.ReadFile(filepath.Join(dir, "edge", "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	if fs, err := FdatasyncLatency(filepath.Join(dir, "edge"), 200); err == nil {
		t.Logf("disk floor: write 4 KiB + fdatasync in the data dir: %s (a bbolt commit makes two)", fs)
	} else {
		t.Errorf("fdatasync probe: %v", err)
	}
	edge := NewEdge(ep.URL(), strings.TrimSpace(string(tok)), *pairWorkers)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pair0 := mustProc(t, ep.PID())
	pr, err := edge.PairTerminals(ctx, n, *classrooms, *pairWorkers)
	if err != nil {
		t.Fatalf("pairing: %v\nedged log tail:\n%s", err, tail(ep.Logs(), 20))
	}
	pair1 := mustProc(t, ep.PID())
	ps := Summarize(pr.PerTerminal)
	t.Logf("paired %d terminals in %d classrooms in %s (%.0f/s, %d in flight): code+pair p50=%s p95=%s; edged CPU %.0f%% of a core",
		n, *classrooms, pr.Elapsed.Round(time.Millisecond), float64(n)/pr.Elapsed.Seconds(), *pairWorkers, ms(ps.P50), ms(ps.P95), CPUPercent(pair0, pair1))
	tokens := make([]string, n)
	for i, c := range pr.Credentials {
		tokens[i] = c.Token
	}

	var sched []time.Duration
	if *spread > 0 {
		sched = make([]time.Duration, n)
		for i := range sched {
			sched[i] = time.Duration(int64(*spread) * int64(i) / int64(n))
		}
		t.Logf("connections paced evenly over %s (-spread)", *spread)
	}
	var reports []holdReport
	if !*tlsMode {
		reports = append(reports, holdOn(t, "edged", ep, edge, tokens, idle, sched, false))
	} else {
		// Plain and TLS each on a fresh edged on the paired data dir, so
		// that neither carries the other's (or pairing's) heap.
		if _, code, err := ep.Stop(20 * time.Second); err != nil || code != 0 {
			t.Fatalf("stop edged after pairing: exit %d, %v", code, err)
		}
		for _, viaTLS := range []bool{false, true} {
			name := "edged"
			if viaTLS {
				name = "edged (TLS)"
			}
			p, err := bintest.Start(edgedBin, []string{"-data", filepath.Join(dir, "edge"), "-listen", "127.0.0.1:0", "-mdns=false"}, 15*time.Second, logTo)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Kill()
			if err := bintest.WaitHealthy(p.URL(), 15*time.Second); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			t.Logf("%s: pid %d at %s; load average %s", name, p.PID(), p.Addr, loadNow())
			reports = append(reports, holdOn(t, name, p, NewEdge(p.URL(), edge.Token, *pairWorkers), tokens, mustProc(t, p.PID()), sched, viaTLS))
		}
	}
	if db, err := os.Stat(filepath.Join(dir, "edge", "edge.db")); err == nil {
		t.Logf("edge.db after the run: %.1f MiB", float64(db.Size())/(1<<20))
	}
	if *peer {
		fp, err := bintest.Start(floorBin, []string{"-listen", "127.0.0.1:0"}, 15*time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer fp.Kill()
		if err := bintest.WaitHealthy(fp.URL(), 15*time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		// Open the floor's connections at the moments edged welcomed its
		// own: each side then sees its heartbeats spread the same way over
		// the 10 s ping period, which decides how many wake-ups they cost.
		if sched == nil {
			sched = slices.Clone(reports[0].connect.Welcomed)
			slices.Sort(sched)
			t.Logf("floorserver connections opened on edged's welcome schedule (%s from first to last)", sched[len(sched)-1].Round(time.Millisecond))
		}
		reports = append(reports, holdOn(t, "floorserver", fp, nil, tokens, mustProc(t, fp.PID()), sched, false))
	}

	for _, r := range reports {
		c := Summarize(r.burst.PerConn)
		holdWall := r.holdEnd.At.Sub(r.holdStart.At)
		t.Logf("== %s: %d connections, hold %s ==", r.name, len(r.connect.PerConn), holdWall.Round(time.Millisecond))
		t.Logf("  connect all (burst): %s (%.0f/s, %d dials in flight); dial→welcome p50=%s p95=%s p99=%s max=%s; server CPU during connect %.2fs",
			r.burst.Elapsed.Round(time.Millisecond), float64(len(r.burst.PerConn))/r.burst.Elapsed.Seconds(), *dialWorkers,
			ms(c.P50), ms(c.P95), ms(c.P99), ms(c.Max), r.burstCPU.Seconds())
		t.Logf("  hold CPU: %.2fs over %s = %.2f%% of one core (load generator: %.2f%%)",
			(r.holdEnd.CPU - r.holdStart.CPU).Seconds(), holdWall.Round(time.Millisecond), CPUPercent(r.holdStart, r.holdEnd), r.loadCPU)
		t.Logf("  RSS: idle %s, before connect %s, after the burst %s (+%.1f KiB per connection), hold start %s, hold end %s, after close %s; peak (VmHWM) %s",
			MiB(r.idle.RSSKiB), MiB(r.preConnect.RSSKiB), MiB(r.burstEnd.RSSKiB), float64(r.burstEnd.RSSKiB-r.preConnect.RSSKiB)/float64(max(1, len(r.burst.PerConn))),
			MiB(r.holdStart.RSSKiB), MiB(r.holdEnd.RSSKiB), MiB(r.afterClose.RSSKiB), MiB(r.holdEnd.HWMKiB))
		t.Logf("  RSS anon/file: before connect %s/%s, hold end %s/%s, after close %s/%s",
			MiB(r.preConnect.AnonKiB), MiB(r.preConnect.FileKiB), MiB(r.holdEnd.AnonKiB), MiB(r.holdEnd.FileKiB), MiB(r.afterClose.AnonKiB), MiB(r.afterClose.FileKiB))
		t.Logf("  threads %d, fds before %d / hold %d / after close %d", r.holdEnd.Threads, r.preConnect.FDs, r.holdEnd.FDs, r.afterClose.FDs)
		t.Logf("  heartbeats answered during hold: %d (per connection min %d max %d), connections dropped %d, unexpected messages %d",
			r.pings, r.pingsMin, r.pingsMax, r.dropped, r.messages)
		if r.edged {
			t.Logf("  GET /api/v1/terminals: %d of %d online; campusedge_control_connections %.0f", r.online, r.listed, r.connsMetric)
			t.Logf("  goroutines before %.0f / hold %.0f / after close %.0f; Go heap in use %.1f MiB and stacks %.1f MiB during hold, heap %.1f MiB after close; all offline %s after close",
				r.goBefore, r.goHold, r.goAfter, r.heapHold/(1<<20), r.stackHold/(1<<20), r.heapAfter/(1<<20), r.closeToOffline.Round(time.Millisecond))
			t.Logf("  log lines by level %v", r.levels)
			for _, w := range r.warnings {
				t.Logf("  log: %s", w)
			}
			if r.online != n {
				t.Errorf("edged lists %d of %d terminals online during the hold", r.online, n)
			}
		}
		t.Logf("  SIGTERM → exit %d in %s", r.exitCode, r.shutdown.Round(time.Millisecond))
	}
	if *tlsMode && len(reports) >= 2 && reports[0].edged && reports[1].tls {
		pl, tl := reports[0], reports[1]
		perConn := func(r holdReport) float64 {
			return float64(r.burstEnd.RSSKiB-r.preConnect.RSSKiB) / float64(max(1, len(r.burst.PerConn)))
		}
		pc, tc := CPUPercent(pl.holdStart, pl.holdEnd), CPUPercent(tl.holdStart, tl.holdEnd)
		t.Logf("RESULT %d control connections, %s hold, edged over TLS (wss://) vs plain (ws://): hold CPU %.2f%% vs %.2f%% of one core (%.2f×); RSS at hold end %s vs %s (%.2f×); RSS per connection (burst) +%.1f vs +%.1f KiB; burst connect %s vs %s, dial→welcome p95 %s vs %s; heartbeats %d vs %d, dropped %d vs %d",
			n, *hold, tc, pc, tc/pc, MiB(tl.holdEnd.RSSKiB), MiB(pl.holdEnd.RSSKiB), float64(tl.holdEnd.RSSKiB)/float64(pl.holdEnd.RSSKiB),
			perConn(tl), perConn(pl), tl.burst.Elapsed.Round(time.Millisecond), pl.burst.Elapsed.Round(time.Millisecond),
			ms(Summarize(tl.burst.PerConn).P95), ms(Summarize(pl.burst.PerConn).P95), tl.pings, pl.pings, tl.dropped, pl.dropped)
	}
}
