//go:build linux

package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/netnstest"
)

var discoveryRuns = flag.Int("discovery-runs", 0, "TestDiscoveryBench: classterm starts to time (0 skips the test; docs/BENCHMARKS.md uses 50)")

// TestDiscoveryBench times what a teacher waits for when a classroom
// terminal boots: `classterm -pair CODE` exec → its "edge found" log line,
// with edged advertising on another host of a two-host LAN (network
// namespaces joined by a veth pair). In the same run, as the peer, a
// standard DNS-SD browser on the terminal's host: `avahi-browse -rp` exec →
// its first resolved line for the edge, through a running avahi-daemon (which
// has the edge in its cache after the first run, so the peer is favoured).
// Opt-in (root, avahi):
//
//	go test ./edge/e2e -run TestDiscoveryBench -count=1 -v -discovery-runs=50
func TestDiscoveryBench(t *testing.T) {
	n := *discoveryRuns
	if n <= 0 {
		t.Skip("figure test: run with -discovery-runs=50 (see docs/BENCHMARKS.md)")
	}
	netnstest.RequireRoot(t)
	a, b := netnstest.NewPair(t)
	av := b.StartAvahi(t)
	edged, _, _ := startEdgedIn(t, a)
	defer edged.Stop()

	var term, avahi, took []time.Duration
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		// The code is wrong on purpose: the bench stops each terminal as
		// soon as it has found the edge, before pairing matters.
		start := time.Now()
		p := b.Start(t, nil, built.classterm, "-data", filepath.Join(t.TempDir(), "t"+strconv.Itoa(i)), "-pair", "000000", "-discover-timeout", "10s")
		if err := p.WaitOutput(ctx, `msg="edge found"`); err != nil {
			cancel()
			t.Fatalf("run %d: %v\n%s", i, err, p.Output())
		}
		term = append(term, time.Since(start))
		_ = p.Stop()
		line, _ := findLine(p.Output(), `msg="edge found"`)
		if d, err := time.ParseDuration(logValue(line, "took")); err == nil {
			took = append(took, d)
		}

		start = time.Now()
		w := av.Watch(t, serviceType)
		at, err := w.WaitEvent(ctx, "=", schoolName)
		cancel()
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		avahi = append(avahi, at.Sub(start))
		_ = w.Stop()
	}
	p := func(d []time.Duration, q float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[min(len(s)-1, max(0, int(q*float64(len(s))+0.5)-1))]
	}
	t.Logf("discovery over a veth LAN, %d runs each (machine: %s)", n, machineLine())
	t.Logf("| %-52s | %8s | %8s | %8s |", "what", "p50", "p95", "max")
	for _, r := range []struct {
		name string
		d    []time.Duration
	}{
		{"classterm exec → edge found", term},
		{"  of which DNS-SD browse (classterm's took=)", took},
		{"avahi-browse -rp exec → resolved (warm avahi-daemon)", avahi},
	} {
		if len(r.d) == 0 {
			t.Errorf("%s: no samples", r.name)
			continue
		}
		t.Logf("| %-52s | %8s | %8s | %8s |", r.name, p(r.d, .5).Round(10*time.Microsecond), p(r.d, .95).Round(10*time.Microsecond), slices.Max(r.d).Round(10*time.Microsecond))
	}
	t.Logf("ratio classterm p50 ÷ avahi-browse p50 = %.2f", float64(p(term, .5))/float64(p(avahi, .5)))
}

// machineLine names the machine the figures come from.
func machineLine() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	return fmt.Sprintf("%d CPUs %s, %s, load %s", runtime.NumCPU(), model, runtime.Version(), strings.TrimSpace(string(load)))
}
