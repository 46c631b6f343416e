package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/edge/discovery"
	"github.com/campusedge/campusedge/edge/netnstest"
	"github.com/campusedge/campusedge/edge/termagent"
)

// routed is the school network of the unicast DNS-SD tests: segment A
// (the server VLAN: the edge and a terminal, on a bridge) and segment B (a
// classroom VLAN), joined by a router namespace that forwards unicast and,
// having no multicast routing, no multicast: mDNS from B never reaches A.
// The router runs the school's DNS server (BIND, started by the test).
type routed struct {
	edge, termA, router, termB *netnstest.Netns
	dnsA, dnsB                 netip.Addr // the router's addresses = the DNS server
}

const (
	testZone     = "school.test."
	searchDomain = "classrooms.school.test" // B's DHCP search domain: a browse-domain PTR points it at the zone
	tsigName     = "campusedge-key"
	tsigSecret   = "c2VjcmV0LWZvci10aGUtY2FtcHVzZWRnZS10ZXN0cyE=" // base64, 32 bytes
	wrongSecret  = "d3Jvbmctc2VjcmV0LWZvci10aGUtY2FtcHVzZWRnZSE="
)

func ipcmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newRouted(t testing.TB) *routed {
	t.Helper()
	netnstest.RequireRoot(t)
	id := fmt.Sprintf("%06x", time.Now().UnixNano()&0xffffff)
	r := &routed{dnsA: netip.MustParseAddr("10.201.1.1"), dnsB: netip.MustParseAddr("10.201.2.1")}
	ns := func(role string) string {
		name := "cetest-" + id + "-" + role
		ipcmd(t, "netns", "add", name)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
		ipcmd(t, "-n", name, "link", "set", "lo", "up")
		return name
	}
	br, rt := ns("bra"), ns("rt")
	r.router = &netnstest.Netns{Name: rt, Link: "rta", Addr: r.dnsA}
	ipcmd(t, "-n", br, "link", "add", "br0", "type", "bridge")
	ipcmd(t, "-n", br, "link", "set", "br0", "up")
	// A host on segment A: a veth from its namespace to the bridge.
	attach := func(nsName, role, link string) {
		ipcmd(t, "-n", br, "link", "add", "p"+role, "type", "veth", "peer", "name", link, "netns", nsName)
		ipcmd(t, "-n", br, "link", "set", "p"+role, "master", "br0")
		ipcmd(t, "-n", br, "link", "set", "p"+role, "up")
	}
	r.edge = &netnstest.Netns{Name: ns("edge"), Link: "eth0", Addr: netip.MustParseAddr("10.201.1.10")}
	r.termA = &netnstest.Netns{Name: ns("terma"), Link: "eth0", Addr: netip.MustParseAddr("10.201.1.20")}
	attach(r.edge.Name, "edge", "eth0")
	attach(r.termA.Name, "terma", "eth0")
	attach(rt, "rt", "rta")
	// Segment B is one veth from the router to the classroom terminal.
	r.termB = &netnstest.Netns{Name: ns("termb"), Link: "eth0", Addr: netip.MustParseAddr("10.201.2.20")}
	ipcmd(t, "-n", rt, "link", "add", "rtb", "type", "veth", "peer", "name", "eth0", "netns", r.termB.Name)
	sys := func(n, link string) {
		if out, err := exec.Command("ip", "netns", "exec", n, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/"+link+"/disable_ipv6").CombinedOutput(); err != nil {
			t.Fatalf("disable IPv6 on %s in %s: %v %s", link, n, err, out)
		}
	}
	for _, h := range []struct {
		n        *netnstest.Netns
		addr, gw string
	}{{r.edge, "10.201.1.10/24", "10.201.1.1"}, {r.termA, "10.201.1.20/24", "10.201.1.1"}, {r.termB, "10.201.2.20/24", "10.201.2.1"}} {
		sys(h.n.Name, h.n.Link)
		ipcmd(t, "-n", h.n.Name, "addr", "add", h.addr, "dev", h.n.Link)
		ipcmd(t, "-n", h.n.Name, "link", "set", h.n.Link, "up")
		ipcmd(t, "-n", h.n.Name, "route", "add", "default", "via", h.gw)
		// mDNS goes out of the segment's link; the router does not
		// forward it (no multicast routing).
		ipcmd(t, "-n", h.n.Name, "route", "add", "224.0.0.0/4", "dev", h.n.Link)
	}
	sys(rt, "rta")
	sys(rt, "rtb")
	ipcmd(t, "-n", rt, "addr", "add", "10.201.1.1/24", "dev", "rta")
	ipcmd(t, "-n", rt, "addr", "add", "10.201.2.1/24", "dev", "rtb")
	ipcmd(t, "-n", rt, "link", "set", "rta", "up")
	ipcmd(t, "-n", rt, "link", "set", "rtb", "up")
	if out, err := exec.Command("ip", "netns", "exec", rt, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("ip_forward: %v %s", err, out)
	}
	return r
}

// startBIND runs named in the router namespace with the school's zone:
// updates to it only with the TSIG key, a browse-domain PTR that sends
// B's search domain to the zone, and a decoy instance naming another edge
// id but pointing at the real edge's host.
func (r *routed) startBIND(t testing.TB) *netnstest.Process {
	t.Helper()
	zone := `$TTL 30
@	IN SOA ns.school.test. admin.school.test. 1 60 60 600 30
@	IN NS ns.school.test.
ns	IN A 10.201.1.1
b._dns-sd._udp.classrooms	IN PTR school.test.
_campusedge._tcp	IN PTR Decoy._campusedge._tcp.school.test.
Decoy._campusedge._tcp	IN SRV 0 0 8080 campusedge.school.test.
Decoy._campusedge._tcp	IN TXT "v=1" "id=decoy-edge-0001" "school=x" "api=/api/v1" "https=8443"
`
	return r.router.StartBIND(t, []string{r.dnsA.String(), r.dnsB.String()},
		[]netnstest.TSIGSecret{{Name: tsigName, Algorithm: "hmac-sha256", Secret: tsigSecret}},
		[]netnstest.BINDZone{{Name: "school.test", Body: zone, UpdateKey: tsigName}})
}

func (r *routed) keyFile(t testing.TB, secret string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edge.key")
	body := fmt.Sprintf("key \"%s\" {\n\talgorithm hmac-sha256;\n\tsecret \"%s\";\n};\n", tsigName, secret)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// resolvConf is a terminal's resolv.conf as DHCP would write it.
func (r *routed) resolvConf(t testing.TB, server netip.Addr) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte("# from DHCP\nnameserver "+server.String()+"\nsearch "+searchDomain+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// dig runs dig in n against the school's DNS.
func dig(t testing.TB, n *netnstest.Netns, server netip.Addr, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := n.Command(ctx, "dig", append([]string{"@" + server.String(), "+short", "+time=1", "+tries=2"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// edgeClient reaches the edge's HTTP API from inside its namespace.
func edgeClient(n *netnstest.Netns) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: n.DialContext,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the test reads the edge's own API
}

func adminCall(t *testing.T, c *http.Client, token, method, url string, body any, out any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode >= 300 {
		var e map[string]any
		_ = json.NewDecoder(res.Body).Decode(&e)
		t.Fatalf("%s %s: %d %v", method, url, res.StatusCode, e)
	}
	if out != nil {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
}

// fullWidth writes ASCII digits as full-width ones (０-９), as a Chinese
// input method types them.
func fullWidth(code string) string {
	var b strings.Builder
	for _, c := range code {
		b.WriteRune(c - '0' + '０')
	}
	return b.String()
}

const longChineseName = "北京市海淀区中关村第三小学教育集团分校实验教学点" // 24 characters, 72 bytes: cut to 21 (63 bytes)

// TestUnicastDNSSDAcrossRouter: the edge on segment A registers itself in
// the school's BIND by TSIG-signed dynamic update; a classterm on segment
// B, where no mDNS from A arrives, finds it by unicast DNS-SD alone (B's
// search domain -> browse domain -> PTR/SRV/TXT), ignores a decoy record
// naming another edge id, pairs with a code typed in full-width digits,
// and after the edge's address changes follows the record to the new
// address. dig on B sees the records; a terminal on A finds the edge by
// mDNS first; the records are removed at shutdown; a wrong TSIG key is
// refused, logged and shown in the console API.
func TestUnicastDNSSDAcrossRouter(t *testing.T) {
	r := newRouted(t)
	bins, err := bintest.Build(context.Background(), t.TempDir(), bintest.LikeThisTest(), bintest.Cmd("edged"), bintest.Cmd("classterm"))
	if err != nil {
		t.Fatal(err)
	}
	edged, classterm := bins[0], bins[1]
	r.startBIND(t)

	data := t.TempDir()
	edgeArgs := func(key string) []string {
		return []string{"-data", data, "-listen", ":8080", "-https-listen", ":8443", "-school", "bj-hd-003", "-school-name", longChineseName,
			"-dns-zone", testZone, "-dns-server", r.dnsA.String(), "-dns-tsig-key-file", key, "-log-level", "debug"}
	}
	edge := r.edge.Start(t, nil, edged, edgeArgs(r.keyFile(t, tsigSecret))...)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := edge.WaitOutput(ctx, "DNS-SD records published and confirmed"); err != nil {
		t.Fatalf("%v\n%s", err, edge.Output())
	}
	hc := edgeClient(r.edge)
	var info struct{ ID string }
	adminCall(t, hc, "", "GET", "http://127.0.0.1:8080/api/v1/edge", nil, &info)
	token := readToken(t, data)
	inst := discovery.InstanceName(longChineseName)

	// dig on B sees what the edge published.
	ptrs := dig(t, r.termB, r.dnsB, "PTR", "_campusedge._tcp."+testZone)
	if !strings.Contains(ptrs, "Decoy._campusedge._tcp") || strings.Count(ptrs, "_campusedge._tcp.school.test.") != 2 {
		t.Fatalf("dig PTR on B: %q", ptrs)
	}
	if a := dig(t, r.termB, r.dnsB, "A", "campusedge."+testZone); strings.TrimSpace(a) != "10.201.1.10" {
		t.Fatalf("dig A campusedge.%s on B: %q", testZone, a)
	}
	txt := dig(t, r.termB, r.dnsB, "TXT", discovery.Publication{Zone: testZone, Instance: inst}.InstanceFQDN())
	if !strings.Contains(txt, `"id=`+info.ID+`"`) || !strings.Contains(txt, `"https=8443"`) {
		t.Fatalf("dig TXT on B: %q", txt)
	}
	if b := dig(t, r.termB, r.dnsB, "PTR", "b._dns-sd._udp."+searchDomain); strings.TrimSpace(b) != testZone {
		t.Fatalf("browse domain on B: %q", b)
	}

	// avahi-browse on B sees the same records, by wide-area (unicast) DNS-SD.
	rcB := r.resolvConf(t, r.dnsB)
	av := r.termB.StartAvahiWideArea(t, rcB)
	for {
		svcs := av.BrowseDomain(ctx, 3*time.Second, "school.test", discovery.ServiceType)
		if i := slices.IndexFunc(svcs, func(s netnstest.AvahiService) bool { return s.Name == inst }); i >= 0 {
			t.Logf("avahi-browse -rpk -d school.test on B: %+v", svcs)
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("avahi-browse -d school.test on B never showed %q: %+v", inst, svcs)
		}
	}
	t.Logf("avahi-browse -rpk -d school.test on B lists %q", inst)

	// Pair from B by unicast DNS-SD alone, with a code typed in full-width digits.
	var room struct{ ID string }
	adminCall(t, hc, token, "POST", "http://127.0.0.1:8080/api/v1/classrooms", map[string]string{"name": "三年级二班", "room_code": "r302"}, &room)
	var pc struct{ Code string }
	adminCall(t, hc, token, "POST", "http://127.0.0.1:8080/api/v1/classrooms/"+room.ID+"/pairing-codes", nil, &pc)
	termData := t.TempDir()
	start := time.Now()
	term := r.termB.Start(t, nil, classterm, "-data", termData, "-pair", fullWidth(pc.Code), "-name", "board-b",
		"-resolv-conf", rcB, "-log-level", "debug")
	if err := term.WaitOutput(ctx, "msg=connected"); err != nil {
		t.Fatalf("%v\n%s", err, term.Output())
	}
	t.Logf("classterm on B paired and connected %v after exec", time.Since(start).Round(time.Millisecond))
	out := term.Output()
	for _, want := range []string{"method=dns-sd url=https://10.201.1.10:8443", "msg=paired"} {
		if !strings.Contains(out, want) {
			t.Errorf("classterm on B: no %q in its log", want)
		}
	}
	if !regexp.MustCompile(`msg="discovery step found no edge" method=mdns`).MatchString(out) {
		t.Errorf("classterm on B: the mDNS step did not fail first (multicast crossed the router?)")
	}
	st, err := termagent.LoadState(termData)
	if err != nil || st.EdgeID != info.ID {
		t.Fatalf("credential: %+v %v", st, err)
	}

	// -diagnose on B: every method, what it found.
	diag, _ := r.termB.Command(ctx, classterm, "-diagnose", "-data", termData, "-resolv-conf", rcB).CombinedOutput()
	t.Logf("classterm -diagnose on B:\n%s", diag)
	for _, re := range []string{`mdns\s+FAILED`, `dns-sd in classrooms\.school\.test\.\s+found https://10\.201\.1\.10:8443`,
		`well-known in classrooms\.school\.test\.\s+found https://10\.201\.1\.10:8443`, `result: edge ` + info.ID + ` at https://10\.201\.1\.10:8443, by dns-sd`} {
		if !regexp.MustCompile(re).Match(diag) {
			t.Errorf("-diagnose on B: no line matching %q", re)
		}
	}

	// -diagnose says why not: a search domain without records, no search domain.
	for _, c := range []struct{ resolv, want string }{
		{"nameserver 10.201.2.1\nsearch empty.school.test\n", `dns-sd in empty\.school\.test\.\s+FAILED.*NXDOMAIN`},
		{"nameserver 10.201.2.1\n", `dns-sd\s+FAILED.*no search domain`},
	} {
		path := filepath.Join(t.TempDir(), "resolv.conf")
		if err := os.WriteFile(path, []byte(c.resolv), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := r.termB.Command(ctx, classterm, "-diagnose", "-data", termData, "-resolv-conf", path).CombinedOutput()
		if err == nil || !regexp.MustCompile(c.want).Match(out) || !strings.Contains(string(out), "result: no edge found") {
			t.Errorf("-diagnose with %q: %v, want a line matching %q:\n%s", c.resolv, err, c.want, out)
		}
	}

	// The edge's address changes (a new DHCP lease): the record follows
	// within seconds and the terminal reconnects at the new address.
	moved := time.Now()
	ipcmd(t, "-n", r.edge.Name, "addr", "del", "10.201.1.10/24", "dev", r.edge.Link)
	ipcmd(t, "-n", r.edge.Name, "addr", "add", "10.201.1.11/24", "dev", r.edge.Link)
	ipcmd(t, "-n", r.edge.Name, "route", "replace", "default", "via", "10.201.1.1")
	for {
		if a := strings.TrimSpace(dig(t, r.termB, r.dnsB, "A", "campusedge."+testZone)); a == "10.201.1.11" {
			break
		}
		if time.Since(moved) > 15*time.Second {
			t.Fatalf("the A record did not follow the new address within 15 s\n%s", edge.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("the A record followed the edge's new address in %v", time.Since(moved).Round(time.Millisecond))
	if err := term.WaitOutput(ctx, `msg="edge found at a new address" url=https://10.201.1.11:8443`); err != nil {
		t.Fatalf("%v\n%s", err, term.Output())
	}
	if err := waitCount(ctx, term, "msg=connected", 2); err != nil {
		t.Fatalf("%v\n%s", err, term.Output())
	}
	t.Logf("classterm reconnected to the new address %v after the change", time.Since(moved).Round(time.Millisecond))
	// Looking for its own edge again, the paired terminal ignored the
	// decoy instance that names another edge id.
	if !regexp.MustCompile(`ignoring a DNS-SD instance.*another edge \(id decoy-edge-0001`).MatchString(term.Output()) {
		t.Errorf("the paired terminal did not log ignoring the decoy record naming another edge id")
	}

	// A terminal on the edge's own segment finds it by mDNS first.
	diagA, _ := r.termA.Command(ctx, classterm, "-diagnose", "-data", t.TempDir(), "-resolv-conf", r.resolvConf(t, r.dnsA)).CombinedOutput()
	t.Logf("classterm -diagnose on A:\n%s", diagA)
	if !regexp.MustCompile(`(?m)^mdns\s+found https://10\.201\.1\.11:8443`).Match(diagA) || !strings.Contains(string(diagA), "by mdns") {
		t.Errorf("classterm on the edge's segment did not find it by mDNS first")
	}

	// Shutdown removes the records.
	if err := edge.Stop(); err != nil {
		t.Fatalf("edged exit: %v", err)
	}
	if !strings.Contains(edge.Output(), "DNS-SD records removed") {
		t.Errorf("edged did not log the removal")
	}
	if a := dig(t, r.termB, r.dnsB, "A", "campusedge."+testZone); strings.TrimSpace(a) != "" {
		t.Errorf("campusedge.%s still has %q after shutdown", testZone, a)
	}
	if p := dig(t, r.termB, r.dnsB, "PTR", "_campusedge._tcp."+testZone); strings.Contains(p, "\\") || strings.Count(p, "\n") != 1 {
		t.Errorf("the service PTR still names the edge after shutdown (only the decoy should be left): %q", p)
	}

	// A wrong TSIG key: refused, logged, and shown in the console API.
	bad := r.edge.Start(t, nil, edged, edgeArgs(r.keyFile(t, wrongSecret))...)
	if err := bad.WaitOutput(ctx, "BADSIG"); err != nil {
		t.Fatalf("%v\n%s", err, bad.Output())
	}
	var ds struct {
		DNS struct {
			Error, Mode   string
			LastConfirmed *time.Time `json:"last_confirmed"`
		}
		Links []struct {
			Label, URL string
			QRPNG      string `json:"qr_png"`
		}
	}
	adminCall(t, hc, token, "GET", "http://127.0.0.1:8080/api/v1/discovery", nil, &ds)
	if !strings.Contains(ds.DNS.Error, "refused the update's TSIG signature") || ds.DNS.LastConfirmed != nil || ds.DNS.Mode != "dynamic_update" {
		t.Errorf("console API with a wrong key: %+v", ds.DNS)
	}
	var health struct {
		Status string
		Checks map[string]struct {
			OK     bool
			Detail string
		}
	}
	res, err := hc.Get("http://127.0.0.1:8080/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(res.Body).Decode(&health)
	res.Body.Close()
	if c := health.Checks["dns_sd"]; health.Status != "degraded" || c.OK || !strings.Contains(c.Detail, "BADSIG") {
		t.Errorf("/healthz with a wrong key: %+v", health)
	}
	if len(ds.Links) != 2 || !strings.HasPrefix(ds.Links[0].QRPNG, "data:image/png;base64,") {
		t.Errorf("console API links: %+v", ds.Links)
	}
	if a := dig(t, r.termB, r.dnsB, "A", "campusedge."+testZone); strings.TrimSpace(a) != "" {
		t.Errorf("an update with a wrong key changed the zone: %q", a)
	}
}

func waitCount(ctx context.Context, p *netnstest.Process, s string, n int) error {
	for strings.Count(p.Output(), s) < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d× %q: %w", n, s, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func readToken(t *testing.T, data string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
