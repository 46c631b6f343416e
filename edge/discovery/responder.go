package discovery

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// What hashicorp/mdns v1.0.7 lacks for DNS-SD browsers, and this file adds
// next to each of its servers (FIELD-NOTES, "DNS-SD with hashicorp/mdns"):
//
//   - Multicast answers to full mDNS queriers. The library answers every
//     query by unicast to the sender's address and port. A querier on port
//     5353 (avahi-daemon, mDNSResponder, Android) shares that port with every
//     other mDNS socket on its host, and Linux delivers a unicast datagram to
//     only one of them, so on the edge's own host (or any host running two
//     mDNS stacks) the answer is lost. RFC 6762 section 6 says to answer such
//     queriers by multicast, which every socket joined to the group receives.
//     The library's sockets also turn multicast loopback off, so our sockets
//     turn it on: a browser on the same host must hear the answer.
//   - Announcements when the service appears (RFC 6762 section 8.3) and
//     goodbyes (TTL 0, section 10.1) when it goes, so browsers learn of the
//     change at once instead of after the 120 s record TTL.
//
// Legacy one-shot queriers (source port other than 5353, like the library's
// own client and our Browse) are left to the library, which answers them by
// unicast as section 6.7 requires.
//
// Enumeration of service types (_services._dns-sd._udp.local PTR, RFC 6763
// section 9) is answered by the library's MDNSService itself in v1.0.7; the
// answers here come from the same records, so they include it too.

const (
	mdnsPort     = 5353
	maxPacket    = 9000 // RFC 6762 section 17: the largest mDNS message
	maxQuestions = 16   // questions looked at per query; the rest are ignored
	answerGap    = time.Second
	announceN    = 3
	announceGap  = time.Second
	cacheFlush   = 1 << 15
)

// group4 and group6 return the mDNS group addresses (functions, not
// variables: nothing in the package is shared mutable state).
func group4() *net.UDPAddr { return &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: mdnsPort} }

func group6() *net.UDPAddr { return &net.UDPAddr{IP: net.ParseIP("ff02::fb"), Port: mdnsPort} }

// respond computes the multicast response to one packet received on the mDNS
// port, or nil when none is due. It is pure (zone is read-only) so that it can
// be fuzzed: packet is arbitrary, possibly hostile bytes. An error means the
// packet was not a well-formed DNS message.
func respond(z mdns.Zone, packet []byte, srcPort int) (*dns.Msg, error) {
	if len(packet) > maxPacket {
		return nil, fmt.Errorf("packet of %d bytes exceeds the mDNS maximum of %d", len(packet), maxPacket)
	}
	var q dns.Msg
	if err := q.Unpack(packet); err != nil {
		return nil, fmt.Errorf("unpack: %w", err)
	}
	// Responses, non-zero opcode or rcode: silently ignored (RFC 6762 section 18).
	if q.Response || q.Opcode != dns.OpcodeQuery || q.Rcode != dns.RcodeSuccess {
		return nil, nil
	}
	if srcPort != mdnsPort {
		return nil, nil // legacy querier: the library answers by unicast
	}
	questions := q.Question
	if len(questions) > maxQuestions {
		questions = questions[:maxQuestions]
	}
	var answer, extra []dns.RR
	for _, qq := range questions {
		if c := qq.Qclass &^ cacheFlush; c != dns.ClassINET && c != dns.ClassANY {
			continue
		}
		for _, rr := range z.Records(dns.Question{Name: qq.Name, Qtype: qq.Qtype, Qclass: dns.ClassINET}) {
			if qq.Qtype == dns.TypeANY || qq.Qtype == rr.Header().Rrtype {
				answer = appendUnique(answer, rr)
			} else {
				extra = appendUnique(extra, rr)
			}
		}
	}
	// Known-answer suppression (RFC 6762 section 7.1): skip what the querier
	// already holds with at least half its TTL left.
	knownTTL := knownAnswers(q.Answer)
	kept := answer[:0]
	for _, rr := range answer {
		if id, ok := rrIdentity(rr); !ok || knownTTL[id] < rr.Header().Ttl/2 || knownTTL[id] == 0 {
			kept = append(kept, rr)
		}
	}
	answer = kept
	if len(answer) == 0 {
		return nil, nil
	}
	keptExtra := extra[:0]
	for _, rr := range extra {
		if !contains(answer, rr) {
			keptExtra = append(keptExtra, rr)
		}
	}
	setCacheFlush(answer)
	setCacheFlush(keptExtra)
	return &dns.Msg{
		MsgHdr:   dns.MsgHdr{Response: true, Authoritative: true},
		Compress: true,
		Answer:   answer,
		Extra:    keptExtra,
	}, nil
}

func contains(rrs []dns.RR, rr dns.RR) bool {
	k, ok := rrIdentity(rr)
	if !ok {
		return false
	}
	for _, x := range rrs {
		if kx, ok := rrIdentity(x); ok && kx == k {
			return true
		}
	}
	return false
}

func appendUnique(rrs []dns.RR, rr dns.RR) []dns.RR {
	if contains(rrs, rr) {
		return rrs
	}
	return append(rrs, rr)
}

// knownAnswers maps the identity of each known answer in a query to the
// longest TTL it is listed with. A query holds at most a few hundred
// records (maxPacket bytes), each packed once.
func knownAnswers(rrs []dns.RR) map[string]uint32 {
	m := make(map[string]uint32, len(rrs))
	for _, rr := range rrs {
		if id, ok := rrIdentity(rr); ok && rr.Header().Ttl > m[id] {
			m[id] = rr.Header().Ttl
		}
	}
	return m
}

// rrIdentity is what makes two records the same record: their wire form
// with TTL and the cache-flush bit left out, ASCII case folded. Comparing
// wire forms rather than strings matters: miekg/dns spells a name it
// unpacked with escapes ("\231\172…") while ours are raw UTF-8.
func rrIdentity(rr dns.RR) (string, bool) {
	c := dns.Copy(rr)
	h := c.Header()
	h.Ttl = 0
	h.Class &^= cacheFlush
	var buf [maxPacket]byte
	n, err := dns.PackRR(c, buf[:], 0, nil, false)
	if err != nil {
		return "", false
	}
	b := buf[:n]
	for i, x := range b {
		if x >= 'A' && x <= 'Z' {
			b[i] = x + 'a' - 'A'
		}
	}
	return string(b), true
}

// setCacheFlush marks the records only this host owns (RFC 6762 section
// 10.2), so a browser replaces rather than adds to what it cached; shared
// PTR records must not carry the bit.
func setCacheFlush(rrs []dns.RR) {
	for _, rr := range rrs {
		switch rr.Header().Rrtype {
		case dns.TypeSRV, dns.TypeTXT, dns.TypeA, dns.TypeAAAA:
			rr.Header().Class = dns.ClassINET | cacheFlush
		}
	}
}

// announcement is the unsolicited response sent when the service appears.
func announcement(z *zone) *dns.Msg {
	rrs := z.announcement()
	setCacheFlush(rrs)
	return &dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}, Compress: true, Answer: rrs}
}

// goodbyeMsg withdraws the service: its shared PTR records and its SRV and TXT
// with TTL 0. The host's A/AAAA records are left alone, since the host name
// may also be the one the system's own mDNS daemon publishes.
func goodbyeMsg(z *zone) *dns.Msg {
	var rrs []dns.RR
	for _, rr := range z.announcement() {
		switch rr.Header().Rrtype {
		case dns.TypePTR, dns.TypeSRV, dns.TypeTXT:
			rr.Header().Ttl = 0
			rrs = append(rrs, rr)
		}
	}
	return &dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}, Compress: true, Answer: rrs}
}

// responder owns our own pair of mDNS sockets on one interface: it answers
// port-5353 queriers by multicast and sends announcements and goodbyes.
type responder struct {
	ifi  net.Interface
	zone *zone
	log  *slog.Logger
	c4   *ipv4.PacketConn // nil when IPv4 multicast is unavailable here
	c6   *ipv6.PacketConn // nil when IPv6 multicast is unavailable here
	wg   sync.WaitGroup

	mu   sync.Mutex
	last map[rrKey]time.Time // when each record was last multicast in an answer
}

type rrKey struct {
	name  string
	rtype uint16
	v6    bool // IPv4 and IPv6 are separate links to a browser
}

func startResponder(ifi net.Interface, z *zone, log *slog.Logger) (*responder, error) {
	r := &responder{ifi: ifi, zone: z, log: log, last: make(map[rrKey]time.Time)}
	var err4, err6 error
	r.c4, err4 = listen4(&ifi)
	r.c6, err6 = listen6(&ifi)
	if r.c4 == nil && r.c6 == nil {
		return nil, fmt.Errorf("mDNS sockets: %w", errors.Join(err4, err6))
	}
	if err4 != nil {
		log.Debug("no IPv4 mDNS on interface", "iface", ifi.Name, "err", err4)
	}
	if err6 != nil {
		log.Debug("no IPv6 mDNS on interface", "iface", ifi.Name, "err", err6)
	}
	if r.c4 != nil {
		r.wg.Add(1)
		go r.read4()
	}
	if r.c6 != nil {
		r.wg.Add(1)
		go r.read6()
	}
	return r, nil
}

// listen4 opens a socket on port 5353 (shared with other mDNS stacks via
// SO_REUSEADDR, which net.ListenMulticastUDP sets), joined to 224.0.0.251 on
// ifi, sending on ifi with TTL 255 (RFC 6762 section 11) and loopback on.
func listen4(ifi *net.Interface) (*ipv4.PacketConn, error) {
	c, err := net.ListenMulticastUDP("udp4", ifi, group4())
	if err != nil {
		return nil, err
	}
	restrict(c, false)
	p := ipv4.NewPacketConn(c)
	err = errors.Join(
		p.SetMulticastInterface(ifi),
		p.SetMulticastLoopback(true),
		p.SetMulticastTTL(255),
		p.SetControlMessage(ipv4.FlagInterface, true),
	)
	if err != nil {
		c.Close()
		return nil, err
	}
	return p, nil
}

func listen6(ifi *net.Interface) (*ipv6.PacketConn, error) {
	c, err := net.ListenMulticastUDP("udp6", ifi, group6())
	if err != nil {
		return nil, err
	}
	restrict(c, true)
	p := ipv6.NewPacketConn(c)
	err = errors.Join(
		p.SetMulticastInterface(ifi),
		p.SetMulticastLoopback(true),
		p.SetMulticastHopLimit(255),
		p.SetControlMessage(ipv6.FlagInterface, true),
	)
	if err != nil {
		c.Close()
		return nil, err
	}
	return p, nil
}

// restrict makes c hear only the interface it joined on (see newServer);
// the readers also check the arrival interface, which covers other systems.
func restrict(c *net.UDPConn, v6 bool) {
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { restrictToJoined(fd, v6) })
	}
}

func (r *responder) read4() {
	defer r.wg.Done()
	buf := make([]byte, maxPacket+1)
	for {
		n, cm, src, err := r.c4.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Debug("mDNS read", "iface", r.ifi.Name, "err", err)
			continue
		}
		// With IP_MULTICAST_ALL (Linux's default) a socket also gets the
		// group's packets from other interfaces; answer only our own.
		if cm != nil && cm.IfIndex != 0 && cm.IfIndex != r.ifi.Index {
			continue
		}
		r.handle(buf[:n], src, false)
	}
}

func (r *responder) read6() {
	defer r.wg.Done()
	buf := make([]byte, maxPacket+1)
	for {
		n, cm, src, err := r.c6.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Debug("mDNS read", "iface", r.ifi.Name, "err", err)
			continue
		}
		if cm != nil && cm.IfIndex != 0 && cm.IfIndex != r.ifi.Index {
			continue
		}
		r.handle(buf[:n], src, true)
	}
}

func (r *responder) handle(packet []byte, src net.Addr, v6 bool) {
	ua, ok := src.(*net.UDPAddr)
	if !ok {
		return
	}
	resp, err := respond(r.zone, packet, ua.Port)
	if err != nil {
		r.log.Debug("ignoring malformed mDNS packet", "iface", r.ifi.Name, "from", ua.String(), "err", err)
		return
	}
	if resp == nil || !r.allow(resp, v6) {
		return
	}
	r.sendOn(resp, "answer", !v6, v6) // answer on the family the query came by
}

// allow drops from resp the answers multicast on this interface within the
// last second (RFC 6762 section 6), which also bounds how much multicast a
// flood of queries can make us send. It reports whether any answer is left.
func (r *responder) allow(resp *dns.Msg, v6 bool) bool {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := resp.Answer[:0]
	for _, rr := range resp.Answer {
		k := rrKey{name: rr.Header().Name, rtype: rr.Header().Rrtype, v6: v6}
		if t, ok := r.last[k]; ok && now.Sub(t) < answerGap {
			continue
		}
		r.last[k] = now // keys are our own record names only: the map stays small
		kept = append(kept, rr)
	}
	resp.Answer = kept
	return len(kept) > 0
}

// send multicasts m on every address family this responder has.
func (r *responder) send(m *dns.Msg, what string) { r.sendOn(m, what, true, true) }

// sendOn multicasts m on the chosen address families.
func (r *responder) sendOn(m *dns.Msg, what string, v4, v6 bool) {
	buf, err := m.Pack()
	if err != nil {
		r.log.Warn("cannot pack mDNS "+what, "iface", r.ifi.Name, "err", err)
		return
	}
	if len(buf) > maxPacket {
		r.log.Warn("mDNS "+what+" too large; not sent", "iface", r.ifi.Name, "bytes", len(buf))
		return
	}
	if v4 && r.c4 != nil {
		if _, err := r.c4.WriteTo(buf, nil, group4()); err != nil {
			r.log.Debug("mDNS send", "what", what, "iface", r.ifi.Name, "family", "ipv4", "err", err)
		}
	}
	if v6 && r.c6 != nil {
		dst := &net.UDPAddr{IP: group6().IP, Port: mdnsPort, Zone: r.ifi.Name}
		if _, err := r.c6.WriteTo(buf, nil, dst); err != nil {
			r.log.Debug("mDNS send", "what", what, "iface", r.ifi.Name, "family", "ipv6", "err", err)
		}
	}
}

// close stops the readers and closes the sockets.
func (r *responder) close() {
	if r.c4 != nil {
		r.c4.Close()
	}
	if r.c6 != nil {
		r.c6.Close()
	}
	r.wg.Wait()
}
