package discovery

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/miekg/dns"

	"github.com/campusedge/campusedge/edge/netnstest"
)

const (
	testKeyName = "campusedge-key"
	testSecret  = "c2VjcmV0LWZvci10aGUtY2FtcHVzZWRnZS10ZXN0cyE="
	badSecret   = "d3Jvbmctc2VjcmV0LWZvci10aGUtY2FtcHVzZWRnZSE="
)

// A key as tsig-keygen itself writes it parses; broken ones say why.
func TestParseTSIGKey(t *testing.T) {
	out, err := exec.Command("tsig-keygen", "-a", "hmac-sha256", "campusedge-key").Output()
	if err != nil {
		t.Skipf("tsig-keygen (bind9-utils): %v", err)
	}
	k, err := ParseTSIGKey(out)
	if err != nil || k.Name != "campusedge-key." || k.Algorithm != dns.HmacSHA256 || len(k.Secret) != 44 {
		t.Fatalf("tsig-keygen output: %+v %v\n%s", k, err, out)
	}
	for _, c := range []struct{ in, want string }{
		{"", "no 'key"},
		{`key "k" { secret "` + testSecret + `"; };`, "no algorithm"},
		{`key "k" { algorithm hmac-md4; secret "` + testSecret + `"; };`, "not supported"},
		{`key "k" { algorithm hmac-sha256; secret "c2hvcnQ="; };`, "shorter than 16"},
		{`key "k" { algorithm hmac-sha256; secret "not base64!"; };`, "not base64"},
		{`key "a b" { algorithm hmac-sha256; secret "` + testSecret + `"; };`, "not a domain name"},
		{strings.Repeat("#", 5000), "more than"},
	} {
		if _, err := ParseTSIGKey([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseTSIGKey(%.40q) = %v, want an error with %q", c.in, err, c.want)
		}
	}
	// Comments and the first of several keys.
	k, err = ParseTSIGKey([]byte("# edge key\n// made by hand\nkey \"Edge.Key\" {\n algorithm HMAC-SHA512;\n secret \"" + testSecret + "\";\n};\nkey \"other\" { algorithm hmac-sha1; secret \"" + badSecret + "\"; };\n"))
	if err != nil || k.Name != "edge.key." || k.Algorithm != dns.HmacSHA512 || k.Secret != testSecret {
		t.Fatalf("commented key: %+v %v", k, err)
	}
}

func TestParseResolvConf(t *testing.T) {
	rc := ParseResolvConf([]byte("# DHCP\nnameserver 10.0.0.53\nnameserver ::1 # v6\nnameserver bogus\ndomain old.example\nsearch Classrooms.School.example school.example local bad\\name school.example\noptions ndots:2\n"))
	if !slices.Equal(rc.Nameservers, []string{"10.0.0.53:53", "[::1]:53"}) {
		t.Errorf("nameservers %v", rc.Nameservers)
	}
	if !slices.Equal(rc.Search, []string{"classrooms.school.example.", "school.example."}) {
		t.Errorf("search %v", rc.Search)
	}
	if rc := ParseResolvConf([]byte("search a.example\ndomain b.example\n")); !slices.Equal(rc.Search, []string{"b.example."}) {
		t.Errorf("the last of search/domain wins, as in glibc: %v", rc.Search)
	}
	if rc := ParseResolvConf([]byte("nameserver 10.0.0.1\n")); rc.Search != nil {
		t.Errorf("no search line: %v", rc.Search)
	}
}

// A Chinese school name too long for a DNS label is cut on a character
// boundary, and the unicast records carry it as one label that zone files,
// named-checkzone and miekg/dns all read back intact.
func TestPublicationChineseName(t *testing.T) {
	name := "北京市海淀区中关村第三小学教育集团分校实验教学点" // 24 characters, 72 bytes
	inst := InstanceName(name)
	if len(inst) > 63 || !utf8.ValidString(inst) || !strings.HasPrefix(name, inst) || utf8.RuneCountInString(inst) != 21 {
		t.Fatalf("InstanceName(%q) = %q (%d bytes)", name, inst, len(inst))
	}
	p := Publication{Zone: "school.test.", Instance: inst, Host: "campusedge.school.test.", Port: 8080, TTL: 30,
		Info:  Info{Version: "1", EdgeID: "k3x9q2m7ab", School: "bj-003", API: "/api/v1", HTTPSPort: 8443},
		Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("2001:db8::3")}}
	if err := p.check(); err != nil {
		t.Fatal(err)
	}
	got, ok := instanceIn(p.InstanceFQDN(), "_campusedge._tcp.school.test.")
	if !ok || got != inst {
		t.Fatalf("instance label round trip: %q %v", got, ok)
	}
	snippet := p.ZoneSnippet()
	zp := dns.NewZoneParser(strings.NewReader(snippet), "", "")
	var n int
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		n++
		if srv, ok := rr.(*dns.SRV); ok {
			if l, _ := instanceIn(srv.Hdr.Name, "_campusedge._tcp.school.test."); l != inst {
				t.Errorf("SRV owner in the snippet reads back as %q", l)
			}
		}
	}
	if err := zp.Err(); err != nil || n != 7 {
		t.Fatalf("snippet parses to %d records (%v):\n%s", n, err, snippet)
	}
	// BIND's own checker accepts a zone made of the snippet.
	if _, err := exec.LookPath("named-checkzone"); err == nil {
		dir := t.TempDir()
		zone := "$TTL 30\n@ IN SOA ns.school.test. admin.school.test. 1 60 60 600 30\n@ IN NS ns.school.test.\nns IN A 10.1.2.1\n" + snippet
		path := filepath.Join(dir, "z")
		if err := os.WriteFile(path, []byte(zone), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("named-checkzone", "school.test", path).CombinedOutput(); err != nil {
			t.Fatalf("named-checkzone: %v\n%s", err, out)
		}
	}
	d := p.DnsmasqSnippet()
	if !strings.Contains(d, "srv-host=campusedge-k3x9q2m7ab._campusedge._tcp.school.test,campusedge.school.test,8080,0,0") ||
		!strings.Contains(d, `txt-record=campusedge-k3x9q2m7ab._campusedge._tcp.school.test,"v=1","id=k3x9q2m7ab"`) {
		t.Errorf("dnsmasq snippet:\n%s", d)
	}
}

func TestRegisterConfigErrors(t *testing.T) {
	addrs := func() ([]netip.Addr, error) { return nil, nil }
	for _, c := range []struct {
		cfg  RegisterConfig
		want string
	}{
		{RegisterConfig{Zone: "", Instance: "S", Port: 80, Info: Info{EdgeID: "e1"}, Addrs: addrs}, "zone is empty"},
		{RegisterConfig{Zone: "a b.", Instance: "S", Port: 80, Info: Info{EdgeID: "e1"}, Addrs: addrs}, "not a fully qualified"},
		{RegisterConfig{Zone: "school.test.", Instance: "S.x", Port: 80, Info: Info{EdgeID: "e1"}, Addrs: addrs}, "instance name"},
		{RegisterConfig{Zone: "school.test.", Instance: "S", Port: 0, Info: Info{EdgeID: "e1"}, Addrs: addrs}, "not a TCP port"},
		{RegisterConfig{Zone: "school.test.", Instance: "S", Port: 80, Info: Info{EdgeID: "bad id"}, Addrs: addrs}, "invalid Info"},
		{RegisterConfig{Zone: "school.test.", Server: "10.0.0.1", Instance: "S", Port: 80, Info: Info{EdgeID: "e1"}, Addrs: addrs}, "needs -dns-tsig-key-file"},
	} {
		if _, err := Register(context.Background(), c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Register(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
}

const testZoneBody = `$TTL 30
@	IN SOA ns.school.test. admin.school.test. 1 60 60 600 30
@	IN NS ns.school.test.
ns	IN A 127.0.0.1
b._dns-sd._udp.classrooms	IN PTR school.test.
`

// Against a real BIND (in this test's own network namespace): the update
// is applied and confirmed, an address change follows, Close removes the
// records; a wrong secret, an unknown key and an unreachable server fail
// with errors that say what to do; the records browse back with
// BrowseDomains and UnicastBrowse.
func TestRegisterWithBIND(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	netnstest.StartBINDHere(t, []string{"127.0.0.1"},
		[]netnstest.TSIGSecret{{Name: testKeyName, Algorithm: "hmac-sha256", Secret: testSecret}, {Name: "other-key", Algorithm: "hmac-sha256", Secret: badSecret}},
		[]netnstest.BINDZone{{Name: "school.test", Body: testZoneBody, UpdateKey: testKeyName}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var addrs atomicAddrs
	addrs.set(netip.MustParseAddr("10.9.8.7"), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("fe80::1"))
	log, logs := testLogger(t)
	cfg := func(secret, name string) RegisterConfig {
		return RegisterConfig{Zone: "School.Test", Server: "127.0.0.1", Key: &TSIGKey{Name: name, Algorithm: dns.HmacSHA256, Secret: secret},
			Instance: "第一中学 Main", Port: 8080, Info: Info{EdgeID: "k3x9q2m7ab", School: "s1", HTTPSPort: 8443},
			Addrs: addrs.get, Poll: 50 * time.Millisecond, Logger: log}
	}
	reg, err := Register(ctx, cfg(testSecret, "campusedge-key."))
	if err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, reg, func(s DNSStatus) bool { return s.LastConfirmed != nil })
	if st.Mode != "dynamic_update" || !slices.Equal(st.Addrs, []string{"10.9.8.7"}) || st.Error != "" || len(st.Records) != 5 {
		t.Fatalf("status: %+v", st)
	}
	res := &Resolver{Servers: []string{"127.0.0.1:53"}}
	browse, err := BrowseDomains(ctx, res, "classrooms.school.test")
	if !slices.Equal(browse, []string{"school.test.", "classrooms.school.test."}) {
		t.Fatalf("browse domains: %v %v", browse, err)
	}
	found, skipped, err := UnicastBrowse(ctx, res, "school.test.", "", log)
	if err != nil || len(found) != 1 || len(skipped) != 0 {
		t.Fatalf("UnicastBrowse: %+v %v %v", found, skipped, err)
	}
	if f := found[0]; f.Instance != "第一中学 Main" || f.HTTPSURL != "https://10.9.8.7:8443" || f.Info.EdgeID != "k3x9q2m7ab" || f.Port != 8080 {
		t.Fatalf("found %+v", f)
	}
	if _, skipped, _ := UnicastBrowse(ctx, res, "school.test.", "another", log); len(skipped) != 1 || !strings.Contains(skipped[0], "another edge (id k3x9q2m7ab") {
		t.Fatalf("a paired terminal must skip another edge: %v", skipped)
	}

	// The address changes: the record follows.
	addrs.set(netip.MustParseAddr("10.9.8.9"))
	waitStatus(t, reg, func(s DNSStatus) bool {
		return slices.Equal(s.Addrs, []string{"10.9.8.9"}) && s.LastConfirmed != nil && s.Error == ""
	})
	for {
		ips, _ := LookupAddrs(ctx, res, "campusedge.school.test")
		if slices.Equal(ips, []netip.Addr{netip.MustParseAddr("10.9.8.9")}) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("A record did not follow: %v", ips)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Close removes the edge's records (the shared enumeration PTR stays).
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := res.Query(ctx, "campusedge.school.test.", dns.TypeA); !isNoData(err) {
		t.Fatalf("A record after Close: %v", err)
	}
	if _, _, err := UnicastBrowse(ctx, res, "school.test.", "", log); err == nil {
		t.Fatal("the instance is still browsable after Close")
	}

	// Refusals, each with its reason, logged and in Status.
	for _, c := range []struct {
		cfg  RegisterConfig
		want string
	}{
		{cfg(badSecret, "campusedge-key."), "BADSIG"},
		{cfg(testSecret, "unknown-key."), "BADKEY"},
		{cfg(badSecret, "other-key."), "REFUSED"}, // a valid key the zone does not grant
	} {
		reg, err := Register(ctx, c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		st := waitStatus(t, reg, func(s DNSStatus) bool { return s.Error != "" })
		if !strings.Contains(st.Error, c.want) || st.LastConfirmed != nil || st.ErrorAt == nil {
			t.Errorf("key %s: status %+v, want an error with %s", c.cfg.Key.Name, st, c.want)
		}
		_ = reg.Close()
	}
	if !strings.Contains(logs.String(), "DNS update refused or failed") {
		t.Errorf("refusals not logged:\n%s", logs.String())
	}
	unreach := cfg(testSecret, testKeyName+".")
	unreach.Server, unreach.Timeout = "127.0.0.2:5399", 500*time.Millisecond
	reg, err = Register(ctx, unreach)
	if err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, reg, func(s DNSStatus) bool { return s.Error != "" }); !strings.Contains(st.Error, "cannot reach the DNS server") {
		t.Errorf("unreachable server: %q", st.Error)
	}
	_ = reg.Close()
}

// Manual mode (no -dns-server): nothing is sent; Status has the records
// and the snippets, and a dnsmasq on another host serving the dnsmasq
// snippet as the console shows it answers UnicastBrowse.
func TestRegisterManualAndDnsmasq(t *testing.T) {
	a, b := netnstest.NewPair(t)
	reg, err := Register(context.Background(), RegisterConfig{Zone: "school.test.", Instance: "Main School", Port: 8080,
		Info: Info{EdgeID: "k3x9q2m7ab", HTTPSPort: 8443},
		Addrs: func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.0.0.5")}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	st := reg.Status()
	if st.Mode != "manual" || st.LastUpdate != nil || !strings.Contains(st.ZoneSnippet, "campusedge.school.test.\t30\tIN\tA\t10.0.0.5") {
		t.Fatalf("manual status: %+v", st)
	}
	b.StartDnsmasq(t, st.DnsmasqSnippet)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := &Resolver{Servers: []string{b.Addr.String() + ":53"}, Timeout: 500 * time.Millisecond, Dial: a.DialContext}
	browse, _ := BrowseDomains(ctx, res, "school.test")
	if !slices.Equal(browse, []string{"school.test."}) {
		t.Errorf("browse domains from dnsmasq: %v", browse)
	}
	found, _, err := UnicastBrowse(ctx, res, "school.test", "", nil)
	if err != nil || len(found) != 1 || found[0].HTTPSURL != "https://10.0.0.5:8443" || found[0].Instance != "campusedge-k3x9q2m7ab" || found[0].Info.EdgeID != "k3x9q2m7ab" {
		t.Fatalf("dnsmasq with the console's snippet: %+v %v\n%s", found, err, st.DnsmasqSnippet)
	}
}

type atomicAddrs struct {
	ch chan []netip.Addr
}

func (a *atomicAddrs) set(as ...netip.Addr) {
	if a.ch == nil {
		a.ch = make(chan []netip.Addr, 1)
	} else {
		<-a.ch
	}
	a.ch <- as
}

func (a *atomicAddrs) get() ([]netip.Addr, error) {
	as := <-a.ch
	a.ch <- as
	return as, nil
}

func waitStatus(t *testing.T, reg *Registrar, ok func(DNSStatus) bool) DNSStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := reg.Status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never came: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
