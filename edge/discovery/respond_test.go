package discovery

import (
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

const testInstance = "Springfield 第一中学"

func testZone(t testing.TB) *zone {
	t.Helper()
	z, err := newZone(testInstance, "edge-test.local.", 8443,
		[]net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP("::1")},
		Info{EdgeID: "k3x9q2m7ab", School: "sch-042"}.TXT())
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// query packs a query as a browser would send it; the instance name goes
// through miekg/dns's escaping just as it would off the wire.
func query(t testing.TB, qs ...dns.Question) []byte {
	t.Helper()
	m := &dns.Msg{Question: qs}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func q(name string, qtype uint16) dns.Question {
	return dns.Question{Name: name, Qtype: qtype, Qclass: dns.ClassINET}
}

var instanceFQDN = `Springfield\ \231\172\172\228\184\128\228\184\173\229\173\166._campusedge._tcp.local.`

func TestRespond(t *testing.T) {
	z := testZone(t)
	t.Run("service PTR from 5353: PTR answer, SRV TXT A AAAA additional", func(t *testing.T) {
		m, err := respond(z, query(t, q("_campusedge._tcp.local.", dns.TypePTR)), 5353)
		if err != nil || m == nil {
			t.Fatalf("respond = %v, %v", m, err)
		}
		if !m.Response || !m.Authoritative || m.Id != 0 || len(m.Question) != 0 {
			t.Fatalf("bad header: %v", m.MsgHdr)
		}
		if len(m.Answer) != 1 || m.Answer[0].(*dns.PTR).Ptr != testInstance+"._campusedge._tcp.local." {
			t.Fatalf("answer = %v", m.Answer)
		}
		types := map[uint16]bool{}
		for _, rr := range m.Extra {
			types[rr.Header().Rrtype] = true
			if rr.Header().Class&cacheFlush == 0 {
				t.Errorf("unique record without cache-flush: %v", rr)
			}
		}
		for _, want := range []uint16{dns.TypeSRV, dns.TypeTXT, dns.TypeA, dns.TypeAAAA} {
			if !types[want] {
				t.Errorf("no %s in additional section: %v", dns.TypeToString[want], m.Extra)
			}
		}
		if m.Answer[0].Header().Class&cacheFlush != 0 {
			t.Errorf("shared PTR carries cache-flush")
		}
	})
	t.Run("escaped, differently cased instance name still matches", func(t *testing.T) {
		name := strings.Replace(instanceFQDN, "_campusedge._tcp.local.", "_CampusEdge._TCP.LOCAL.", 1)
		m, err := respond(z, query(t, q(name, dns.TypeTXT)), 5353)
		if err != nil || m == nil || len(m.Answer) != 1 {
			t.Fatalf("respond = %v, %v", m, err)
		}
		if txt := m.Answer[0].(*dns.TXT).Txt; strings.Join(txt, " ") != "v=1 id=k3x9q2m7ab school=sch-042 api=/api/v1" {
			t.Fatalf("TXT = %q", txt)
		}
	})
	t.Run("SRV and host A", func(t *testing.T) {
		m, _ := respond(z, query(t, q(instanceFQDN, dns.TypeSRV), q("EDGE-TEST.local.", dns.TypeA)), 5353)
		if m == nil || len(m.Answer) != 2 {
			t.Fatalf("respond = %v", m)
		}
		srv := m.Answer[0].(*dns.SRV)
		if srv.Port != 8443 || srv.Target != "edge-test.local." {
			t.Fatalf("SRV = %v", srv)
		}
		if a := m.Answer[1].(*dns.A); !a.A.Equal(net.IPv4(127, 0, 0, 1)) {
			t.Fatalf("A = %v", a)
		}
		for _, rr := range m.Extra {
			if dns.IsDuplicate(rr, m.Answer[1]) {
				t.Fatalf("additional repeats an answer: %v", m.Extra)
			}
		}
	})
	t.Run("service type enumeration", func(t *testing.T) {
		m, _ := respond(z, query(t, q("_services._dns-sd._udp.local.", dns.TypePTR)), 5353)
		if m == nil || len(m.Answer) != 1 || m.Answer[0].(*dns.PTR).Ptr != "_campusedge._tcp.local." {
			t.Fatalf("respond = %v", m)
		}
	})
	t.Run("legacy querier is left to the library", func(t *testing.T) {
		if m, err := respond(z, query(t, q("_campusedge._tcp.local.", dns.TypePTR)), 40000); m != nil || err != nil {
			t.Fatalf("respond = %v, %v; want nil, nil", m, err)
		}
	})
	t.Run("other names, responses, opcodes: no answer", func(t *testing.T) {
		if m, _ := respond(z, query(t, q("_http._tcp.local.", dns.TypePTR)), 5353); m != nil {
			t.Fatalf("answered a foreign name: %v", m)
		}
		resp := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true}, Question: []dns.Question{q("_campusedge._tcp.local.", dns.TypePTR)}}
		b, _ := resp.Pack()
		if m, _ := respond(z, b, 5353); m != nil {
			t.Fatalf("answered a response: %v", m)
		}
		upd := &dns.Msg{MsgHdr: dns.MsgHdr{Opcode: dns.OpcodeUpdate}, Question: []dns.Question{q("_campusedge._tcp.local.", dns.TypePTR)}}
		b, _ = upd.Pack()
		if m, _ := respond(z, b, 5353); m != nil {
			t.Fatalf("answered opcode UPDATE: %v", m)
		}
	})
	t.Run("known answer suppression", func(t *testing.T) {
		ptr := &dns.PTR{Hdr: dns.RR_Header{Name: "_campusedge._tcp.local.", Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 100}, Ptr: testInstance + "._campusedge._tcp.local."}
		m := &dns.Msg{Question: []dns.Question{q("_campusedge._tcp.local.", dns.TypePTR)}, Answer: []dns.RR{ptr}}
		b, _ := m.Pack()
		if r, _ := respond(z, b, 5353); r != nil {
			t.Fatalf("answered despite a fresh known answer: %v", r)
		}
		ptr.Hdr.Ttl = 30 // less than half of 120: must be refreshed
		b, _ = m.Pack()
		if r, _ := respond(z, b, 5353); r == nil {
			t.Fatal("no answer although the known answer is about to expire")
		}
	})
	t.Run("garbage and oversize", func(t *testing.T) {
		if _, err := respond(z, []byte{1, 2, 3}, 5353); err == nil {
			t.Fatal("no error for a 3-byte packet")
		}
		if _, err := respond(z, make([]byte, maxPacket+1), 5353); err == nil {
			t.Fatal("no error for an oversize packet")
		}
	})
	t.Run("many duplicate questions give one answer", func(t *testing.T) {
		qs := make([]dns.Question, 100)
		for i := range qs {
			qs[i] = q("_campusedge._tcp.local.", dns.TypePTR)
		}
		m, _ := respond(z, query(t, qs...), 5353)
		if m == nil || len(m.Answer) != 1 || len(m.Extra) != 4 {
			t.Fatalf("respond = %v", m)
		}
	})
}

func TestAnnouncementAndGoodbye(t *testing.T) {
	z := testZone(t)
	a := announcement(z)
	types := map[uint16]int{}
	for _, rr := range a.Answer {
		types[rr.Header().Rrtype]++
		if rr.Header().Ttl == 0 {
			t.Errorf("announcement with TTL 0: %v", rr)
		}
	}
	if types[dns.TypePTR] != 2 || types[dns.TypeSRV] != 1 || types[dns.TypeTXT] != 1 || types[dns.TypeA] != 1 || types[dns.TypeAAAA] != 1 {
		t.Fatalf("announcement records %v: %v", types, a.Answer)
	}
	g := goodbyeMsg(z)
	if len(g.Answer) != 4 {
		t.Fatalf("goodbye = %v", g.Answer)
	}
	for _, rr := range g.Answer {
		if rr.Header().Ttl != 0 {
			t.Errorf("goodbye record with TTL %d: %v", rr.Header().Ttl, rr)
		}
		if rr.Header().Rrtype == dns.TypeA || rr.Header().Rrtype == dns.TypeAAAA {
			t.Errorf("goodbye withdraws the host address: %v", rr)
		}
	}
	if _, err := g.Pack(); err != nil {
		t.Fatal(err)
	}
}
