package discovery

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func FuzzParseTXT(f *testing.F) {
	for _, s := range []string{
		"v=1\nid=k3x9q2m7ab\nschool=sch-042\napi=/api/v1",
		"v=1\nid=a\napi=/x\nv=2",
		"V=1\nID=a\nAPI=//evil/x",
		"v=2\nid=a\napi=/x",
		"v\nid\napi",
		"v=1\nid=a b\napi=/x",
		"v=1\nid=a\nschool=北京\napi=/x",
		"",
		"=\n==\n\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fields := strings.Split(s, "\n")
		info, err := ParseTXT(fields)
		if err != nil {
			return
		}
		// Whatever is accepted is sane and survives a round trip.
		if info.Version != "1" || info.EdgeID == "" || !strings.HasPrefix(info.API, "/") || strings.HasPrefix(info.API, "//") {
			t.Fatalf("accepted %+v from %q", info, fields)
		}
		again, err := ParseTXT(info.TXT())
		if err != nil || again != info {
			t.Fatalf("round trip of %+v: %+v, %v", info, again, err)
		}
	})
}

// FuzzRespond feeds arbitrary bytes to the responder's packet handling, as
// anyone on the LAN can.
func FuzzRespond(f *testing.F) {
	z := testZone(f)
	add := func(m *dns.Msg) {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint16(5353))
		f.Add(b, uint16(40000))
	}
	add(&dns.Msg{Question: []dns.Question{q("_campusedge._tcp.local.", dns.TypePTR)}})
	add(&dns.Msg{Question: []dns.Question{q("_services._dns-sd._udp.local.", dns.TypePTR)}})
	add(&dns.Msg{Question: []dns.Question{q(instanceFQDN, dns.TypeANY), q("edge-test.local.", dns.TypeANY)}})
	add(&dns.Msg{Question: []dns.Question{{Name: instanceFQDN, Qtype: dns.TypeTXT, Qclass: dns.ClassINET | cacheFlush}}})
	add(&dns.Msg{
		Question: []dns.Question{q("_campusedge._tcp.local.", dns.TypePTR)},
		Answer:   []dns.RR{&dns.PTR{Hdr: dns.RR_Header{Name: "_campusedge._tcp.local.", Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 4500}, Ptr: "x._campusedge._tcp.local."}},
	})
	add(&dns.Msg{MsgHdr: dns.MsgHdr{Response: true}, Answer: []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "x.local.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: []byte{1, 2, 3, 4}}}})
	f.Add([]byte{}, uint16(5353))
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 12, 0, 1}, uint16(5353)) // compression loop
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0}, uint16(5353))                    // 65535 questions claimed
	f.Fuzz(func(t *testing.T, packet []byte, port uint16) {
		m, err := respond(z, packet, int(port))
		if err != nil {
			if m != nil {
				t.Fatal("message and error")
			}
			return
		}
		if m == nil {
			return
		}
		if port != mdnsPort {
			t.Fatalf("multicast answer to a legacy querier on port %d", port)
		}
		if !m.Response || len(m.Question) != 0 || len(m.Answer) == 0 {
			t.Fatalf("bad response %v", m)
		}
		b, err := m.Pack()
		if err != nil {
			t.Fatalf("response does not pack: %v", err)
		}
		if len(b) > maxPacket {
			t.Fatalf("response of %d bytes", len(b))
		}
		// Only our own records ever go out.
		for _, rr := range append(m.Answer, m.Extra...) {
			if _, ok := z.names[mustCanonical(t, rr.Header().Name)]; !ok {
				t.Fatalf("answer about a foreign name: %v", rr)
			}
		}
		if len(m.Answer)+len(m.Extra) > 16 {
			t.Fatalf("%d records in one response", len(m.Answer)+len(m.Extra))
		}
	})
}

func mustCanonical(t *testing.T, name string) string {
	k, ok := canonical(name)
	if !ok {
		t.Fatalf("name %q does not encode", name)
	}
	return k
}
