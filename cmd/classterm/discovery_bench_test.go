package main

import (
	"bufio"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/edge/discovery"
	"github.com/campusedge/campusedge/edge/netnstest"
)

// benchEdge is the routed school network with BIND and a registered edged.
func benchEdge(b *testing.B) (*routed, string) {
	b.Helper()
	r := newRouted(b)
	bins, err := bintest.Build(context.Background(), b.TempDir(), bintest.BuildOptions{}, bintest.Cmd("edged"), bintest.Cmd("classterm"))
	if err != nil {
		b.Fatal(err)
	}
	r.startBIND(b)
	edge := r.edge.Start(b, nil, bins[0], "-data", b.TempDir(), "-listen", ":8080", "-https-listen", ":8443", "-school-name", "第一中学",
		"-dns-zone", testZone, "-dns-server", r.dnsA.String(), "-dns-tsig-key-file", r.keyFile(b, tsigSecret))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := edge.WaitOutput(ctx, "DNS-SD records published and confirmed"); err != nil {
		b.Fatalf("%v\n%s", err, edge.Output())
	}
	return r, bins[1]
}

// timeFind runs `classterm -find` in n b.N times and reports the time from
// exec to the edge's URL on its stdout: p50 and p95 in ms.
func timeFind(b *testing.B, n *netnstest.Netns, classterm, wantURL string, args ...string) {
	b.Helper()
	var d []time.Duration
	b.ResetTimer()
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := n.Command(ctx, classterm, append([]string{"-find", "-data", b.TempDir(), "-log-level", "error"}, args...)...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		line, rerr := bufio.NewReader(out).ReadString('\n')
		took := time.Since(start)
		werr := cmd.Wait()
		cancel()
		if rerr != nil || werr != nil || strings.TrimSpace(line) != wantURL {
			b.Fatalf("classterm -find: %q %v %v", line, rerr, werr)
		}
		d = append(d, took)
	}
	b.StopTimer()
	reportPercentiles(b, "", d)
}

// The floors below run after the timed loop: ResetTimer drops metrics
// reported before it.

func reportPercentiles(b *testing.B, prefix string, d []time.Duration) {
	slices.Sort(d)
	pct := func(p float64) float64 {
		return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), prefix+"p50-ms")
	b.ReportMetric(pct(0.95), prefix+"p95-ms")
	b.ReportMetric(0, "ns/op") // exec-to-found is what counts, not the loop
}

// dnsFloor is the network's part in the same run: one DNS query (SRV)
// from n to the school's server, p50 over 50 queries; a unicast DNS-SD
// lookup makes about eight of them in a row.
func dnsFloor(b *testing.B, n *netnstest.Netns, server string) {
	b.Helper()
	res := &discovery.Resolver{Servers: []string{server + ":53"}, Dial: n.DialContext}
	var d []time.Duration
	for range 50 {
		start := time.Now()
		if _, err := res.Query(context.Background(), "_campusedge._tcp."+testZone, dns.TypePTR); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(start))
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "dns-query-p50-ms")
}

// execFloor is the cost of starting classterm at all: exec to exit of
// `classterm -h`, p50 over 20 runs.
func execFloor(b *testing.B, n *netnstest.Netns, classterm string) {
	b.Helper()
	var d []time.Duration
	for range 20 {
		start := time.Now()
		_ = n.Command(context.Background(), classterm, "-h").Run()
		d = append(d, time.Since(start))
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "exec-floor-p50-ms")
}

// BenchmarkDiscovery measures exec → edge found for a terminal on another
// segment by unicast DNS-SD (after the default 1.5 s mDNS step, and with
// the mDNS step cut to 100 ms) and on the edge's own segment by mDNS, in
// one routed network with BIND. Run with -benchtime=50x (see
// docs/BENCHMARKS.md).
func BenchmarkDiscovery(b *testing.B) {
	r, classterm := benchEdge(b)
	rcB, rcA := r.resolvConf(b, r.dnsB), r.resolvConf(b, r.dnsA)
	b.Run("mdns-same-segment", func(b *testing.B) {
		timeFind(b, r.termA, classterm, "https://10.201.1.10:8443", "-resolv-conf", rcA)
		execFloor(b, r.termA, classterm)
	})
	b.Run("unicast-dns-sd-other-segment", func(b *testing.B) {
		timeFind(b, r.termB, classterm, "https://10.201.1.10:8443", "-resolv-conf", rcB)
		dnsFloor(b, r.termB, r.dnsB.String())
		execFloor(b, r.termB, classterm)
	})
	b.Run("unicast-dns-sd-other-segment-mdns-100ms", func(b *testing.B) {
		timeFind(b, r.termB, classterm, "https://10.201.1.10:8443", "-resolv-conf", rcB, "-mdns-timeout", "100ms")
		execFloor(b, r.termB, classterm)
	})
}
