package discovery

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/logtest"
	"github.com/campusedge/campusedge/edge/netnstest"
	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

// The tests in this file that call netnstest.Isolate run in their own user
// and network namespace, with multicast on lo: nothing they send can leave
// the machine, and no root is needed.

func TestAdvertiseBrowse(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	log, _ := testLogger(t)
	adv, err := Advertise(context.Background(), testConfig(log, "lo"))
	if err != nil {
		t.Fatal(err)
	}
	defer adv.Close()
	if st := adv.Status(); !st.Active || !slices.Equal(st.Interfaces, []string{"lo"}) || st.Problem != "" {
		t.Fatalf("Status = %+v, want active on lo without problem", st)
	}
	f, err := Browse(ctxTimeout(t, 5*time.Second), BrowseOptions{Interface: "lo", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	want := Found{
		Instance: testInstance,
		Host:     "edge-test.local.",
		Addr:     net.IPv4(127, 0, 0, 1).To4(),
		Port:     8443,
		Info:     Info{Version: "1", EdgeID: "k3x9q2m7ab", School: "sch-042", API: "/api/v1"},
		URL:      "http://127.0.0.1:8443",
	}
	if f.Instance != want.Instance || f.Host != want.Host || !f.Addr.Equal(want.Addr) || f.Port != want.Port || f.Info != want.Info || f.URL != want.URL || f.Zone != "" {
		t.Fatalf("Browse = %+v\nwant     %+v", f, want)
	}

	// Another edge id: nothing acceptable answers, and the error says why.
	_, err = Browse(ctxTimeout(t, 300*time.Millisecond), BrowseOptions{EdgeID: "other", Logger: log})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Browse for another edge id = %v, want DeadlineExceeded", err)
	}
}

func TestBrowseIgnoresBadTXT(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	log, logs := testLogger(t)
	// Advertise a bad record through the library alone, then a good edge.
	z, err := newZone("Bad Edge", "bad.local.", 9999, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"v=2", "id=x", "api=/x"})
	if err != nil {
		t.Fatal(err)
	}
	lo, _ := net.InterfaceByName("lo")
	bad, err := mdns.NewServer(&mdns.Config{Zone: z, Iface: lo, Logger: slog.NewLogLogger(log.Handler(), slog.LevelDebug)})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Shutdown()
	_, err = Browse(ctxTimeout(t, 500*time.Millisecond), BrowseOptions{Logger: log})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Browse with only a bad edge = %v, want DeadlineExceeded", err)
	}
	if !strings.Contains(logs.String(), "ignoring edge with bad TXT record") {
		t.Fatalf("bad TXT not logged; logs:\n%s", logs)
	}
	adv, err := Advertise(context.Background(), testConfig(log, "lo"))
	if err != nil {
		t.Fatal(err)
	}
	defer adv.Close()
	f, err := Browse(ctxTimeout(t, 5*time.Second), BrowseOptions{Logger: log})
	if err != nil || f.Port != 8443 {
		t.Fatalf("Browse = %+v, %v; want the good edge", f, err)
	}
}

func TestAnnounceAndGoodbye(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	log, _ := testLogger(t)
	l := listenMDNS(t, "udp4", "lo")
	adv, err := Advertise(context.Background(), testConfig(log, "lo"))
	if err != nil {
		t.Fatal(err)
	}
	isAnnouncement := func(p packet) bool {
		return p.msg.Response && p.dst.Equal(group4().IP) && hasAnswer(p.msg, dns.TypeSRV, 120) && hasAnswer(p.msg, dns.TypePTR, 120)
	}
	l.await(t, 3*time.Second, "announcement", isAnnouncement)
	if f, err := Browse(ctxTimeout(t, 5*time.Second), BrowseOptions{Logger: log}); err != nil {
		t.Fatalf("before Close: %v", err)
	} else if f.Port != 8443 {
		t.Fatalf("before Close: found %+v", f)
	}

	if err := adv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := adv.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	bye := l.await(t, 3*time.Second, "goodbye (TTL 0)", func(p packet) bool {
		return p.msg.Response && p.dst.Equal(group4().IP) && hasAnswer(p.msg, dns.TypePTR, 0)
	})
	for _, rr := range bye.msg.Answer {
		if rr.Header().Ttl != 0 {
			t.Fatalf("goodbye carries a live record: %v", rr)
		}
		if ptr, ok := rr.(*dns.PTR); ok && sameName(ptr.Hdr.Name, serviceName) && !sameName(ptr.Ptr, testInstance+"."+serviceName) {
			t.Fatalf("goodbye withdraws %q", ptr.Ptr)
		}
	}
	if st := adv.Status(); st.Active {
		t.Fatalf("Status after Close = %+v", st)
	}
	// And nobody answers any more.
	if f, err := Browse(ctxTimeout(t, 1500*time.Millisecond), BrowseOptions{Logger: log}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after Close Browse = %+v, %v; want DeadlineExceeded", f, err)
	}
}

func TestServiceEnumeration(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	log, _ := testLogger(t)
	adv, err := Advertise(context.Background(), testConfig(log, "lo"))
	if err != nil {
		t.Fatal(err)
	}
	defer adv.Close()
	enumQuery := &dns.Msg{Question: []dns.Question{q("_services._dns-sd._udp.local.", dns.TypePTR)}}

	isEnumPTR := func(m *dns.Msg) bool {
		for _, rr := range m.Answer {
			if ptr, ok := rr.(*dns.PTR); ok && sameName(ptr.Hdr.Name, enumName) && sameName(ptr.Ptr, "_campusedge._tcp.local.") {
				return true
			}
		}
		return false
	}

	t.Run("one-shot querier gets a unicast answer", func(t *testing.T) {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b, _ := enumQuery.Pack()
		if _, err := c.WriteToUDP(b, group4()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 9000)
		deadline := time.Now().Add(3 * time.Second)
		for {
			c.SetReadDeadline(deadline)
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("no answer to the enumeration query: %v", err)
			}
			m := new(dns.Msg)
			if m.Unpack(buf[:n]) == nil && isEnumPTR(m) {
				return
			}
		}
	})
	t.Run("port-5353 querier gets a multicast answer", func(t *testing.T) {
		l := listenMDNS(t, "udp4", "lo")
		l.send(t, enumQuery)
		l.await(t, 3*time.Second, "multicast answer to the enumeration query", func(p packet) bool {
			// An answer, not an announcement: only the enumeration PTR.
			return p.msg.Response && p.dst.Equal(group4().IP) && len(p.msg.Answer) == 1 && isEnumPTR(p.msg)
		})
	})
}

func TestMulticastAnswerToPort5353(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	// IPv6 multicast does not work on lo (netnstest.AddVeth): use a veth
	// inside the namespace for it, with IPv4 on it too.
	if err := netnstest.AddVeth("ve0", "10.9.0.1/24", "fe80::1/64"); err != nil {
		t.Fatal(err)
	}
	log, _ := testLogger(t)
	adv, err := Advertise(context.Background(), testConfig(log, "lo", "ve0"))
	if err != nil {
		t.Fatal(err)
	}
	defer adv.Close()
	if st := adv.Status(); !slices.Equal(st.Interfaces, []string{"lo", "ve0"}) {
		t.Fatalf("Status = %+v", st)
	}
	for _, tc := range []struct{ family, iface, group string }{
		{"udp4", "lo", "224.0.0.251"},
		{"udp4", "ve0", "224.0.0.251"},
		{"udp6", "ve0", "ff02::fb"},
	} {
		t.Run(tc.family+"-"+tc.iface, func(t *testing.T) {
			l := listenMDNS(t, tc.family, tc.iface)
			// A TXT question: the announcements carry PTR and SRV too, so a
			// message with the TXT record alone is our answer.
			l.send(t, &dns.Msg{Question: []dns.Question{q(instanceFQDN, dns.TypeTXT)}})
			p := l.await(t, 3*time.Second, "multicast TXT answer", func(p packet) bool {
				return p.msg.Response && len(p.msg.Answer) == 1 && p.msg.Answer[0].Header().Rrtype == dns.TypeTXT && p.dst.Equal(net.ParseIP(tc.group))
			})
			if p.msg.Answer[0].Header().Class != dns.ClassINET|cacheFlush {
				t.Fatalf("TXT answer class %#x, want IN with cache-flush", p.msg.Answer[0].Header().Class)
			}
			if p.src.Port != mdnsPort {
				t.Fatalf("answer from port %d, want 5353", p.src.Port)
			}
		})
	}
}

// TestNoMulticastOnHostLo runs in the plain test process, where lo has no
// MULTICAST flag: Advertise must not fail, must say why it is inactive, and
// never looks at any interface but lo.
func TestNoMulticastOnHostLo(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skipf("no lo here: %v", err)
	}
	if lo.Flags&net.FlagMulticast != 0 {
		t.Skip("lo is multicast-capable in this environment; TestNoMulticastInNetns covers this case")
	}
	log, logs := testLogger(t)
	cfg := testConfig(log, "lo")
	cfg.Rescan = -1
	adv, err := Advertise(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Advertise failed without multicast: %v", err)
	}
	defer adv.Close()
	checkInactive(t, adv, logs, "lo: interface has no MULTICAST flag")
}

func checkInactive(t *testing.T, adv *Advertiser, logs *logtest.Buffer, reason string) {
	t.Helper()
	st := adv.Status()
	if st.Active || len(st.Interfaces) != 0 {
		t.Fatalf("Status = %+v, want inactive", st)
	}
	for _, want := range []string{reason, "terminals must use -edge URL"} {
		if !strings.Contains(st.Problem, want) {
			t.Fatalf("Problem %q does not contain %q", st.Problem, want)
		}
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), reason) {
		t.Fatalf("no warning logged; logs:\n%s", logs)
	}
}

// TestNoMulticastInNetns: the same in a namespace whose lo is still down
// and without MULTICAST; then, when lo comes up with multicast, the
// advertiser notices by itself and becomes findable.
func TestNoMulticastInNetns(t *testing.T) {
	if !netnstest.InNetns() {
		netnstest.RunInNetns(t, t.Name())
		return
	}
	log, logs := testLogger(t)
	cfg := testConfig(log, "lo")
	cfg.Rescan = 20 * time.Millisecond
	adv, err := Advertise(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Advertise failed without multicast: %v", err)
	}
	defer adv.Close()
	checkInactive(t, adv, logs, "lo: interface is down")

	if err := netnstest.SetupLoopbackMulticast(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !adv.Status().Active {
		if time.Now().After(deadline) {
			t.Fatalf("still inactive 5 s after lo came up: %+v", adv.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if f, err := Browse(ctxTimeout(t, 5*time.Second), BrowseOptions{Logger: log}); err != nil || f.Port != 8443 {
		t.Fatalf("Browse = %+v, %v", f, err)
	}
}

// TestAllInterfaces: with no Interfaces, every up multicast interface is
// used. Only in a namespace, whose only interface is lo.
func TestAllInterfaces(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	log, _ := testLogger(t)
	adv, err := Advertise(context.Background(), testConfig(log))
	if err != nil {
		t.Fatal(err)
	}
	defer adv.Close()
	if st := adv.Status(); !st.Active || !slices.Equal(st.Interfaces, []string{"lo"}) {
		t.Fatalf("Status = %+v", st)
	}
}

func TestAdvertiseStopsWithContext(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	log, _ := testLogger(t)
	l := listenMDNS(t, "udp4", "lo")
	ctx, cancel := context.WithCancel(context.Background())
	adv, err := Advertise(ctx, testConfig(log, "lo"))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	l.await(t, 3*time.Second, "goodbye after cancel", func(p packet) bool { return hasAnswer(p.msg, dns.TypePTR, 0) })
	if err := adv.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestAdvertiseConfigErrors(t *testing.T) {
	good := testConfig(nil, "lo")
	good.Rescan = -1
	for name, mutate := range map[string]func(*Config){
		"empty instance":   func(c *Config) { c.Instance = "" },
		"dotted instance":  func(c *Config) { c.Instance = "a.b" },
		"long instance":    func(c *Config) { c.Instance = strings.Repeat("x", 64) },
		"port 0":           func(c *Config) { c.Port = 0 },
		"port 70000":       func(c *Config) { c.Port = 70000 },
		"host not FQDN":    func(c *Config) { c.HostName = "edge.local" },
		"bad edge id":      func(c *Config) { c.Info.EdgeID = "a b" },
		"no edge id":       func(c *Config) { c.Info.EdgeID = "" },
		"bad version":      func(c *Config) { c.Info.Version = "2" },
		"bad api":          func(c *Config) { c.Info.API = "api" },
		"bad iface name":   func(c *Config) { c.Interfaces = []string{"../x"} },
		"empty iface name": func(c *Config) { c.Interfaces = []string{""} },
	} {
		t.Run(name, func(t *testing.T) {
			c := good
			mutate(&c)
			if adv, err := Advertise(context.Background(), c); err == nil {
				adv.Close()
				t.Fatal("Advertise accepted an invalid config")
			}
		})
	}
}

var latencyRuns = flag.Int("latency-runs", 0, "TestDiscoveryLatency: number of discoveries to time (0 skips: a figure, not a check)")

// TestDiscoveryLatency times discovery on lo in a namespace and prints
// percentiles. For docs/BENCHMARKS.md:
//
//	go test ./edge/discovery -run TestDiscoveryLatency -count=1 -v -latency-runs=50
//
// "browse" is a terminal starting Browse while the edge is up (query →
// unicast answer from hashicorp/mdns); "announce" is an edge starting while
// a terminal is already browsing (found from the edge's first announcement).
func TestDiscoveryLatency(t *testing.T) {
	if *latencyRuns <= 0 {
		t.Skip("figure test: run with -latency-runs=50 (see docs/BENCHMARKS.md)")
	}
	if !netnstest.Isolate(t, "-latency-runs="+strconv.Itoa(*latencyRuns)) {
		return
	}
	n := *latencyRuns
	if n < 1 {
		t.Fatal("-latency-runs must be at least 1")
	}
	log, _ := testLogger(t)
	cfg := testConfig(log, "lo")

	adv, err := Advertise(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	browse := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		f, err := Browse(ctxTimeout(t, 5*time.Second), BrowseOptions{Logger: log})
		d := time.Since(start)
		if err != nil || f.Port != cfg.Port {
			t.Fatalf("Browse = %+v, %v", f, err)
		}
		browse = append(browse, d)
	}
	adv.Close()

	// Edge appears while a terminal browses: start Browse, wait until its
	// query is on the wire (so its sockets are listening), then Advertise.
	l := listenMDNS(t, "udp4", "lo")
	announce := make([]time.Duration, 0, n)
	for range n {
		drain(l)
		type result struct {
			f   Found
			err error
			at  time.Time
		}
		res := make(chan result, 1)
		go func() {
			f, err := Browse(ctxTimeout(t, 5*time.Second), BrowseOptions{Logger: log})
			res <- result{f, err, time.Now()}
		}()
		l.await(t, 3*time.Second, "Browse's query", func(p packet) bool {
			return !p.msg.Response && len(p.msg.Question) > 0 && sameName(p.msg.Question[0].Name, serviceName)
		})
		start := time.Now()
		adv, err := Advertise(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		r := <-res
		adv.Close()
		if r.err != nil || r.f.Port != cfg.Port {
			t.Fatalf("Browse = %+v, %v", r.f, r.err)
		}
		announce = append(announce, r.at.Sub(start))
	}
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"browse", browse}, {"announce", announce}} {
		p50, p95, worst := percentiles(m.d)
		t.Logf("discovery latency %-8s runs=%d p50=%v p95=%v max=%v", m.name, len(m.d), p50, p95, worst)
		// A broken Browse waits for a query timeout (1 s) before returning.
		if p95 > 500*time.Millisecond {
			t.Errorf("%s p95 %v: discovery waits for a timeout somewhere", m.name, p95)
		}
	}
}

func drain(l *mdnsListener) {
	for {
		select {
		case <-l.ch:
		default:
			return
		}
	}
}

func percentiles(d []time.Duration) (p50, p95, worst time.Duration) {
	s := slices.Clone(d)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.5) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return at(0.50), at(0.95), s[len(s)-1]
}

// BenchmarkDiscovery times Browse, from its start to the edge found, with
// the edge advertised on lo in a user+network namespace (the benchmark
// re-runs itself there):
//
//	go test ./edge/discovery -run '^$' -bench BenchmarkDiscovery -benchtime 200x
func BenchmarkDiscovery(b *testing.B) {
	if !netnstest.InNetns() {
		netnstest.RunBenchmarkInNetns(b)
		return
	}
	if err := netnstest.SetupLoopbackMulticast(); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	cfg := testConfig(log, "lo")
	adv, err := Advertise(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer adv.Close()
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		f, err := Browse(ctx, BrowseOptions{Logger: log})
		cancel()
		if err != nil || f.Port != cfg.Port {
			b.Fatalf("Browse = %+v, %v", f, err)
		}
	}
}

// TestNoCrossInterfaceAnswers: advertised on lo and on a veth, the edge
// must answer a querier on the veth with the veth's address only. (Linux
// hands every mDNS socket the group's datagrams from all interfaces; the
// library's lo server used to answer veth queriers with 127.0.0.1.)
func TestNoCrossInterfaceAnswers(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	if err := netnstest.AddVeth("ve0", "10.9.0.1/24", ""); err != nil {
		t.Fatal(err)
	}
	log, _ := testLogger(t)
	adv, err := Advertise(context.Background(), testConfig(log, "lo", "ve0"))
	if err != nil {
		t.Fatal(err)
	}
	defer adv.Close()
	ve0, err := net.InterfaceByName("ve0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 9, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := ipv4.NewPacketConn(c).SetMulticastInterface(ve0); err != nil {
		t.Fatal(err)
	}
	b, _ := (&dns.Msg{Question: []dns.Question{q("_campusedge._tcp.local.", dns.TypePTR)}}).Pack()
	if _, err := c.WriteToUDP(b, group4()); err != nil {
		t.Fatal(err)
	}
	// Read every answer for a while: both servers answer within
	// microseconds, so 300 ms is ample for a wrong one to show up.
	var right int
	buf := make([]byte, maxPacket)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	for {
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			break
		}
		m := new(dns.Msg)
		if m.Unpack(buf[:n]) != nil {
			continue
		}
		for _, rr := range append(m.Answer, m.Extra...) {
			if a, ok := rr.(*dns.A); ok {
				if !a.A.Equal(net.IPv4(10, 9, 0, 1)) {
					t.Fatalf("querier on ve0 was told A %v", a.A)
				}
				right++
			}
		}
	}
	if right == 0 {
		t.Fatal("no answer with ve0's address")
	}
}

// TestBrowseWhenIPv6CannotSend: a terminal whose IPv6 has no usable source
// address must still find the edge over IPv4. At boot a terminal's only
// IPv6 address, its link-local one, is "tentative" during duplicate address
// detection and sends fail with EADDRNOTAVAIL; here lo's ::1 is removed,
// which fails the same way. hashicorp/mdns fails the whole query on the first
// failed send, so without Browse's fallback this returns that error.
func TestBrowseWhenIPv6CannotSend(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	if out, err := exec.Command("ip", "-6", "addr", "del", "::1/128", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("removing ::1: %v: %s", err, out)
	}
	log, logs := testLogger(t)
	adv, err := Advertise(context.Background(), testConfig(log, "lo"))
	if err != nil {
		t.Fatal(err)
	}
	defer adv.Close()
	// No interface named, as classterm browses by default.
	f, err := Browse(ctxTimeout(t, 5*time.Second), BrowseOptions{Logger: log})
	if err != nil {
		t.Fatalf("Browse with IPv6 unable to send: %v", err)
	}
	if f.Port != 8443 || !f.Addr.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Fatalf("Browse = %+v", f)
	}
	if !strings.Contains(logs.String(), "browsing on the other") {
		t.Errorf("the IPv6 send did not fail here, so the fallback was not exercised; logs:\n%s", logs.String())
	}
}
