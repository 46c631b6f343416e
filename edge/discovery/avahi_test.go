//go:build linux

package discovery

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/campusedge/campusedge/edge/netnstest"
)

// These tests check what a standard DNS-SD browser (avahi) sees. They need
// root for network namespaces, veths and avahi-daemon; without root they
// skip, except under CI=true, where they fail.

// Environment of TestHelperAdvertise.
const (
	envHelper   = "CAMPUSEDGE_HELPER_ADVERTISE"
	envIface    = "CAMPUSEDGE_HELPER_IFACE"
	envInstance = "CAMPUSEDGE_HELPER_INSTANCE"
	envHost     = "CAMPUSEDGE_HELPER_HOST"
	envPort     = "CAMPUSEDGE_HELPER_PORT"
	envQuiet    = "CAMPUSEDGE_HELPER_NO_ANNOUNCE"
)

// TestHelperAdvertise is not a test: it is the advertiser process that the
// avahi tests start inside a namespace (netnstest.Netns.ExecTest). It
// advertises until SIGTERM, then closes (sending goodbyes). A later test can
// run a built edged in the same place with Netns.Start instead.
func TestHelperAdvertise(t *testing.T) {
	if os.Getenv(envHelper) != "1" {
		return
	}
	port, err := strconv.Atoi(os.Getenv(envPort))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute) // never outlive a lost parent for long
	defer cancel()
	log, logs := testLogger(t)
	announcements := announceN
	if os.Getenv(envQuiet) == "1" {
		announcements = 0
	}
	adv, err := advertise(context.Background(), Config{
		Instance:   os.Getenv(envInstance),
		HostName:   os.Getenv(envHost),
		Port:       port,
		Info:       Info{EdgeID: "k3x9q2m7ab", School: "sch-042"},
		Interfaces: []string{os.Getenv(envIface)},
		Logger:     log,
	}, announcements)
	if err != nil {
		t.Fatal(err)
	}
	st := adv.Status()
	fmt.Printf("ADVERTISING active=%v interfaces=%v problem=%q\n", st.Active, st.Interfaces, st.Problem)
	<-ctx.Done()
	if err := adv.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Println("CLOSED")
	fmt.Print(logs.String())
}

func startHelper(t *testing.T, ns *netnstest.Netns, instance, host string, port int, env ...string) *netnstest.Process {
	t.Helper()
	p := ns.ExecTest(t, append(env,
		envHelper+"=1",
		envIface+"="+ns.Link,
		envInstance+"="+instance,
		envHost+"="+host,
		envPort+"="+strconv.Itoa(port),
	), "TestHelperAdvertise")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "ADVERTISING active=true"); err != nil {
		t.Fatalf("%v\n%s", err, p.Output())
	}
	return p
}

func checkAvahiService(t *testing.T, s netnstest.AvahiService, addr string, port int) {
	t.Helper()
	txt := s.TXTMap()
	want := map[string]string{"v": "1", "id": "k3x9q2m7ab", "school": "sch-042", "api": "/api/v1"}
	for k, v := range want {
		if txt[k] != v {
			t.Errorf("avahi sees TXT %s=%q, want %q (TXT %q)", k, txt[k], v, s.TXT)
		}
	}
	if _, err := ParseTXT(s.TXT); err != nil {
		t.Errorf("TXT as avahi sees it does not parse: %v", err)
	}
	if s.Address != addr || s.Port != port || s.Type != ServiceType || s.Domain != "local" {
		t.Errorf("avahi resolved %+v, want address %s port %d", s, addr, port)
	}
}

// TestAvahiCrossHost: the edge in namespace A, avahi-daemon and
// avahi-browse in namespace B, joined by a veth.
func TestAvahiCrossHost(t *testing.T) {
	a, b := netnstest.NewPair(t)
	av := b.StartAvahi(t)
	instance := "Cross Host 第一中学"
	helper := startHelper(t, a, instance, "edge-a.local.", 8081)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	s, err := av.Resolve(ctx, ServiceType, instance)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("avahi-browse -rtp resolved %q in %v (including avahi-browse start-up)", s.Name, time.Since(start).Round(time.Millisecond))
	checkAvahiService(t, s, a.Addr.String(), 8081)
	if s.Host != "edge-a.local" {
		t.Errorf("avahi host %q, want edge-a.local", s.Host)
	}

	// Service-type enumeration (_services._dns-sd._udp.local), as
	// `avahi-browse -a` does it.
	all, err := av.BrowseAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !hasAvahi(all, func(s netnstest.AvahiService) bool { return s.Type == ServiceType && s.Name == instance }) {
		t.Fatalf("avahi-browse -a does not list %s: %+v", ServiceType, all)
	}

	// Goodbye: stopping the edge removes it from avahi's cache at once
	// (without goodbyes it would stay for the 120 s TTL).
	if err := helper.Stop(); err != nil {
		t.Fatalf("advertiser exit: %v\n%s", err, helper.Output())
	}
	if !strings.Contains(helper.Output(), "CLOSED") {
		t.Fatalf("advertiser did not close cleanly:\n%s", helper.Output())
	}
	gone := time.Now()
	for {
		svcs, err := av.Browse(ctx, ServiceType)
		if err == nil && !hasAvahi(svcs, func(s netnstest.AvahiService) bool { return s.Name == instance && s.Event != "-" }) {
			t.Logf("avahi dropped the edge %v after its goodbye", time.Since(gone).Round(time.Millisecond))
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("avahi still lists the edge after its goodbye: %+v, %v", svcs, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAvahiSameHost: avahi-daemon and the edge in the same namespace,
// sharing port 5353 — the case hashicorp/mdns alone fails. As on a real
// box, avahi-daemon runs first; the edge then binds 5353 after it, so
// Linux hands unicast datagrams to port 5353 to the edge's sockets, and
// the library's unicast answers never reach avahi. The edge sends no
// announcements here, so avahi can only learn of it by asking and being
// answered by multicast.
func TestAvahiSameHost(t *testing.T) {
	_, b := netnstest.NewPair(t)
	av := b.StartAvahi(t)
	instance := "Same Host School"
	startHelper(t, b, instance, "edge-b.local.", 8082, envQuiet+"=1")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	s, err := av.Resolve(ctx, ServiceType, instance)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("avahi-browse -rtp resolved %q in %v on the edge's own host", s.Name, time.Since(start).Round(time.Millisecond))
	checkAvahiService(t, s, b.Addr.String(), 8082)
}

func hasAvahi(svcs []netnstest.AvahiService, match func(netnstest.AvahiService) bool) bool {
	for _, s := range svcs {
		if match(s) {
			return true
		}
	}
	return false
}

// TestAvahiChineseSchoolName: a Chinese school name longer than a DNS
// label (72 bytes) becomes an instance name cut at 63 bytes on a
// character boundary, and avahi-browse -rtp on another host shows it
// intact: every character whole, nothing escaped or replaced.
func TestAvahiChineseSchoolName(t *testing.T) {
	a, b := netnstest.NewPair(t)
	av := b.StartAvahi(t)
	school := "北京市海淀区中关村第三小学教育集团分校实验教学点"
	instance := InstanceName(school)
	if len(instance) > 63 || !utf8.ValidString(instance) || !strings.HasPrefix(school, instance) || utf8.RuneCountInString(instance) != 21 {
		t.Fatalf("InstanceName(%q) = %q (%d bytes)", school, instance, len(instance))
	}
	startHelper(t, a, instance, "edge-zh.local.", 8083)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := av.Resolve(ctx, ServiceType, instance)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != instance {
		t.Fatalf("avahi shows %q, want %q", s.Name, instance)
	}
	t.Logf("avahi-browse -rtp on another host shows %q (%d bytes)", s.Name, len(s.Name))
	checkAvahiService(t, s, a.Addr.String(), 8083)
}
