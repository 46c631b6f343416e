package termagent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/campusedge/campusedge/edge/logtest"
	"github.com/campusedge/campusedge/edge/netnstest"
	"github.com/campusedge/campusedge/edge/pairing/pairingtest"
)

// verify accepts the edge only when /api/v1/edge names the id the DNS
// answer named, the paired id, over the pinned key.
func TestVerifyEdgeID(t *testing.T) {
	e := pairingtest.Start(t, pairingtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := FindOptions{Log: quietLog()}
	if info, err := o.verify(ctx, e.URL, "edge-test-01"); err != nil || info.ID != "edge-test-01" {
		t.Fatalf("unpaired, right id: %+v %v", info, err)
	}
	if _, err := o.verify(ctx, e.URL, "decoy-edge"); err == nil || !strings.Contains(err.Error(), "is edge edge-test-01, not decoy-edge as its DNS record says") {
		t.Fatalf("DNS answer naming another id: %v", err)
	}
	o.WantID, o.Pin = "edge-test-01", e.Pin()
	if _, err := o.verify(ctx, e.URL, "edge-test-01"); err != nil {
		t.Fatalf("paired, pinned: %v", err)
	}
	o.WantID = "my-edge"
	if _, err := o.verify(ctx, e.URL, ""); err == nil || !strings.Contains(err.Error(), "another edge (edge-test-01), not this terminal's edge my-edge") {
		t.Fatalf("another edge: %v", err)
	}
	o.WantID, o.Pin = "edge-test-01", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	if _, err := o.verify(ctx, e.URL, "edge-test-01"); err == nil || !strings.Contains(err.Error(), "not the one this terminal paired with") {
		t.Fatalf("another key: %v", err)
	}
}

func TestNormalizeCode(t *testing.T) {
	for in, want := range map[string]string{"１２３４５６": "123456", " 12３4５6\u3000": "123456", "123456": "123456", "一二三": "一二三"} {
		if got := NormalizeCode(in); got != want {
			t.Errorf("NormalizeCode(%q) = %q, want %q", in, got, want)
		}
	}
	if _, err := Pair(context.Background(), "https://127.0.0.1:1", "１２３", "n", "v"); err == nil || !strings.Contains(err.Error(), "6 digits") {
		t.Errorf("short full-width code: %v", err)
	}
}

// Find in this test's own network namespace: a real DNS server (miekg/dns)
// on 127.0.0.1:53 serves a browse domain and two instances, the first a
// decoy naming another edge id but pointing at the real edge. An unpaired
// terminal skips the decoy after asking the edge who it is; a paired one
// skips it by its TXT id; both find the edge by dns-sd; the well-known
// name works alone; and with nothing there every step says why.
func TestFindUnicast(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	e := pairingtest.Start(t, pairingtest.Options{})
	u, _ := url.Parse(e.URL)
	zone := map[string][]string{
		"b._dns-sd._udp.class.test.": {"b._dns-sd._udp.class.test. 30 IN PTR school.test."},
		"_campusedge._tcp.school.test.": {"_campusedge._tcp.school.test. 30 IN PTR Decoy._campusedge._tcp.school.test.",
			"_campusedge._tcp.school.test. 30 IN PTR Real\\ One._campusedge._tcp.school.test."},
		"decoy._campusedge._tcp.school.test.":      {"Decoy._campusedge._tcp.school.test. 30 IN SRV 0 0 8080 edge.school.test.", `Decoy._campusedge._tcp.school.test. 30 IN TXT "v=1" "id=decoy-edge" "api=/api/v1" "https=` + u.Port() + `"`},
		"real\\ one._campusedge._tcp.school.test.": {"Real\\ One._campusedge._tcp.school.test. 30 IN SRV 0 0 8080 edge.school.test.", `Real\ One._campusedge._tcp.school.test. 30 IN TXT "v=1" "id=edge-test-01" "api=/api/v1" "https=` + u.Port() + `"`},
		"edge.school.test.":                        {"edge.school.test. 30 IN A 127.0.0.1"},
		"campusedge.school.test.":                  {"campusedge.school.test. 30 IN A 127.0.0.1"},
	}
	forward(t, "127.0.0.1:8443", u.Host) // the well-known name assumes the default HTTPS port
	srv := serveDNS(t, zone)
	defer srv.Shutdown()
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.1\nsearch class.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logs := &logtest.Buffer{}
	o := FindOptions{ResolvConf: rc, MDNSTimeout: 200 * time.Millisecond, Log: slog.New(slog.NewTextHandler(logs, nil))}
	r, err := Find(ctx, o)
	if err != nil || r.Method != "dns-sd" || r.Found.Info.EdgeID != "edge-test-01" || r.Found.Instance != "Real One" || r.Found.HTTPSURL != e.URL {
		t.Fatalf("unpaired Find: %+v %v\n%s", r, err, logs)
	}
	if !strings.Contains(logs.String(), "is edge edge-test-01, not decoy-edge as its DNS record says") {
		t.Errorf("the decoy was not checked and ignored:\n%s", logs)
	}
	o.WantID, o.Pin, o.All = "edge-test-01", e.Pin(), true
	r, err = Find(ctx, o)
	if err != nil || r.Method != "dns-sd" || len(r.Steps) != 3 || r.Steps[0].Problem == "" || r.Steps[2].Method != "well-known" || r.Steps[2].Problem != "" {
		t.Fatalf("paired Find, all steps: %+v %v", r, err)
	}

	// Nothing in the search domain: each step says why.
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.1\nsearch nothing.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err = Find(ctx, o)
	if err == nil || len(r.Steps) != 3 || !strings.Contains(r.Steps[1].Problem, "NXDOMAIN") || !strings.Contains(r.Steps[2].Problem, "campusedge.nothing.test.") {
		t.Fatalf("nothing there: %+v %v", r.Steps, err)
	}
}

// serveDNS answers from zone (lower-case owner name → records) on
// 127.0.0.1:53 over UDP; NXDOMAIN for other names.
func serveDNS(t *testing.T, zone map[string][]string) *dns.Server {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		rrs, ok := zone[strings.ToLower(q.Question[0].Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, s := range rrs {
			rr, err := dns.NewRR(s)
			if err != nil {
				panic(err)
			}
			if rr.Header().Rrtype == q.Question[0].Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go func() { _ = srv.ActivateAndServe() }()
	return srv
}

// forward relays TCP connections from listen to target until the test ends.
func forward(t *testing.T, listen, target string) {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				d, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer d.Close()
				go func() { _, _ = io.Copy(d, c) }()
				_, _ = io.Copy(c, d)
			}()
		}
	}()
}

// FuzzParseEdgeInfo: whatever a host on the network answers at
// /api/v1/edge, the parser returns an error or a valid id.
func FuzzParseEdgeInfo(f *testing.F) {
	for _, s := range []string{
		`{"id":"edge-test-01","school":"s","school_name":"第一中学","https_port":8443}`,
		`{"id":""}`, `{"id":"a b"}`, `{"id":1}`, `[]`, `null`, ``, `{"id":"` + strings.Repeat("x", 100) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEdgeInfo(b)
		if err != nil {
			return
		}
		if e.ID == "" || len(e.ID) > 64 || strings.ContainsAny(e.ID, " /:?#") {
			t.Fatalf("accepted id %q from %q", e.ID, b)
		}
	})
}
