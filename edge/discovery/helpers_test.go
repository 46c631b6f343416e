package discovery

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/logtest"
	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// testLogger logs into a buffer that is printed if the test fails. (Logging
// through t directly would panic when a library goroutine logs after the
// test has ended.)
func testLogger(t testing.TB) (*slog.Logger, *logtest.Buffer) {
	buf := &logtest.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func testConfig(log *slog.Logger, ifaces ...string) Config {
	return Config{
		Instance:   testInstance,
		HostName:   "edge-test.local.",
		Port:       8443,
		Info:       Info{EdgeID: "k3x9q2m7ab", School: "sch-042"},
		Interfaces: ifaces,
		Logger:     log,
	}
}

// packet is one mDNS message a test socket received.
type packet struct {
	msg *dns.Msg
	src *net.UDPAddr
	dst net.IP // destination address: the group for multicast
	ifi int    // index of the interface it arrived on
}

// mdnsListener is a test socket on port 5353 joined to the mDNS group on
// one interface, like a full mDNS querier (avahi-daemon) has.
type mdnsListener struct {
	conn *net.UDPConn
	p4   *ipv4.PacketConn
	p6   *ipv6.PacketConn
	ch   chan packet
	ifi  *net.Interface
}

func listenMDNS(t *testing.T, family, ifname string) *mdnsListener {
	t.Helper()
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	l := &mdnsListener{ch: make(chan packet, 256), ifi: ifi}
	if family == "udp4" {
		l.conn, err = net.ListenMulticastUDP("udp4", ifi, group4())
		if err != nil {
			t.Fatal(err)
		}
		l.p4 = ipv4.NewPacketConn(l.conn)
		if err := errors.Join(l.p4.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true), l.p4.SetMulticastLoopback(true), l.p4.SetMulticastInterface(ifi)); err != nil {
			t.Fatal(err)
		}
	} else {
		l.conn, err = net.ListenMulticastUDP("udp6", ifi, group6())
		if err != nil {
			t.Fatal(err)
		}
		l.p6 = ipv6.NewPacketConn(l.conn)
		if err := errors.Join(l.p6.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true), l.p6.SetMulticastLoopback(true), l.p6.SetMulticastInterface(ifi)); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			var n int
			var src net.Addr
			var dst net.IP
			var ifi int
			var err error
			if l.p4 != nil {
				var cm *ipv4.ControlMessage
				n, cm, src, err = l.p4.ReadFrom(buf)
				if cm != nil {
					dst, ifi = cm.Dst, cm.IfIndex
				}
			} else {
				var cm *ipv6.ControlMessage
				n, cm, src, err = l.p6.ReadFrom(buf)
				if cm != nil {
					dst, ifi = cm.Dst, cm.IfIndex
				}
			}
			if err != nil {
				return
			}
			m := new(dns.Msg)
			if m.Unpack(buf[:n]) != nil {
				continue
			}
			select {
			case l.ch <- packet{msg: m, src: src.(*net.UDPAddr), dst: dst, ifi: ifi}:
			default:
			}
		}
	}()
	t.Cleanup(func() { l.conn.Close(); <-done })
	return l
}

// send sends m from port 5353 to the group.
func (l *mdnsListener) send(t *testing.T, m *dns.Msg) {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	dst := group4()
	if l.p6 != nil {
		dst = group6()
	}
	if _, err := l.conn.WriteToUDP(b, dst); err != nil {
		t.Fatal(err)
	}
}

// await returns the first packet for which match is true, or fails t when
// none arrives within d.
func (l *mdnsListener) await(t *testing.T, d time.Duration, what string, match func(packet) bool) packet {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case p := <-l.ch:
			// With IP_MULTICAST_ALL a socket hears the group on every
			// interface; a test means the one it listens on.
			if p.ifi == l.ifi.Index && match(p) {
				return p
			}
		case <-timer.C:
			t.Fatalf("no %s within %v", what, d)
			return packet{}
		}
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func hasAnswer(m *dns.Msg, rtype uint16, ttl uint32) bool {
	for _, rr := range m.Answer {
		if rr.Header().Rrtype == rtype && rr.Header().Ttl == ttl {
			return true
		}
	}
	return false
}
