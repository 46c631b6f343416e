// NACK responder: answers a subscriber's NACK from the packets the edge
// sent it, without copying any packet.

package sfu

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// nackHistory is how many packets a stream keeps for retransmission: about
// 3.8 s of the lesson's video, far more than a LAN's or a city link's
// round trip.
const nackHistory = 1024

// nackResponderFactory makes the edge's NACK responder, which takes the
// place of pion's (nack.NewResponderInterceptor) for the SFU's own
// connections. pion's copies every packet sent into a pool buffer, and
// builds its RTX form, in case it is asked for again: a payload copy per
// packet per subscriber, about an eighth of edged's CPU at 40 viewers
// (TestBenchJanus -bench.cpuprofile). This one keeps the header by value
// and the payload by reference, which holds because everything the edge
// sends to a subscriber is a publisher packet's payload, never written
// again once read (forwarder.run), or a padding packet of its own; the
// RTX packet is built only when a NACK asks for it. Peers that reuse their
// payload buffers (a test's TrackLocalStaticRTP.Write) must keep pion's.
type nackResponderFactory struct{}

func (nackResponderFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &nackResponder{streams: map[uint32]*nackStream{}}, nil
}

type nackResponder struct {
	interceptor.NoOp
	mu      sync.Mutex
	streams map[uint32]*nackStream // by media SSRC
	// rtt is the last round trip measured from a receiver report: a packet is not sent again within it (plus a margin),
	// the retransmission still being on its way.
	rtt time.Duration
}

type nackStream struct {
	w       interceptor.RTPWriter
	rtxSSRC uint32
	rtxPT   uint8
	mu      sync.Mutex
	ring    [nackHistory]nackEntry
	rtxSeq  uint16
	started bool
	highest uint16
	// sendMu keeps resends of one stream one at a time, so RTX sequence
	// numbers leave in the order they were given; pending bounds the
	// resends waiting for it (a NACK flood must not pile up goroutines:
	// one beyond it is dropped, and the receiver asks again).
	sendMu  sync.Mutex
	pending atomic.Int32
}

// maxPendingResends bounds a stream's resends waiting to be sent.
const maxPendingResends = 32

type nackEntry struct {
	hdr     rtp.Header
	payload []byte
	valid   bool
	resent  time.Time
}

// BindLocalStream keeps every packet sent on a video stream that
// negotiated NACK.
func (n *nackResponder) BindLocalStream(info *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	nackOK := false
	for _, fb := range info.RTCPFeedback {
		if fb.Type == "nack" && fb.Parameter == "" {
			nackOK = true
		}
	}
	if !nackOK {
		return writer
	}
	s := &nackStream{w: writer, rtxSSRC: info.SSRCRetransmission, rtxPT: info.PayloadTypeRetransmission}
	n.mu.Lock()
	n.streams[info.SSRC] = s
	n.mu.Unlock()
	ssrc := info.SSRC
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if h.SSRC == ssrc {
			s.keep(h, payload)
		}
		return writer.Write(h, payload, a)
	})
}

// UnbindLocalStream forgets the stream's packets.
func (n *nackResponder) UnbindLocalStream(info *interceptor.StreamInfo) {
	n.mu.Lock()
	delete(n.streams, info.SSRC)
	n.mu.Unlock()
}

// BindRTCPReader answers NACKs and measures the round trip from receiver
// reports.
func (n *nackResponder) BindRTCPReader(reader interceptor.RTCPReader) interceptor.RTCPReader {
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		i, attr, err := reader.Read(b, a)
		if err != nil {
			return 0, nil, err
		}
		if attr == nil {
			attr = interceptor.Attributes{}
		}
		pkts, err := attr.GetRTCPPackets(b[:i])
		if err != nil {
			return 0, nil, err
		}
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.ReceiverReport:
				n.updateRTT(p.Reports)
			case *rtcp.SenderReport:
				n.updateRTT(p.Reports)
			case *rtcp.TransportLayerNack:
				n.mu.Lock()
				s, rtt := n.streams[p.MediaSSRC], n.rtt
				n.mu.Unlock()
				if s != nil && s.pending.Add(1) <= maxPendingResends {
					// Not on the reader's goroutine: a write waits for the
					// socket, and RTCP must keep flowing meanwhile.
					go func() {
						defer s.pending.Add(-1)
						s.resend(p, rtt+5*time.Millisecond)
					}()
				} else if s != nil {
					s.pending.Add(-1)
				}
			}
		}
		return i, attr, nil
	})
}

func (n *nackResponder) updateRTT(reports []rtcp.ReceptionReport) {
	now := ntp32(time.Now())
	for _, r := range reports {
		if r.LastSenderReport == 0 {
			continue
		}
		if d := now - r.LastSenderReport - r.Delay; d < 1<<31 {
			n.mu.Lock()
			n.rtt = time.Duration(uint64(d) * uint64(time.Second) >> 16)
			n.mu.Unlock()
		}
	}
}

// ntp32 is the middle 32 bits of t's NTP timestamp (RFC 3550 §6.4.1).
func ntp32(t time.Time) uint32 {
	ns := uint64(t.UnixNano()) + 2208988800*uint64(time.Second)
	sec, frac := ns/uint64(time.Second), ns%uint64(time.Second)
	return uint32(sec<<16) | uint32((frac<<16)/uint64(time.Second))
}

// keep stores h (by value, without its header extensions: the caller's
// extension slice is reused) and payload (by reference).
func (s *nackStream) keep(h *rtp.Header, payload []byte) {
	e := nackEntry{hdr: *h, payload: payload, valid: true}
	e.hdr.Extension, e.hdr.Extensions, e.hdr.ExtensionProfile = false, nil, 0
	s.mu.Lock()
	if !s.started || int16(h.SequenceNumber-s.highest) > 0 {
		s.highest, s.started = h.SequenceNumber, true
	}
	s.ring[h.SequenceNumber%nackHistory] = e
	s.mu.Unlock()
}

// resend sends again every packet n asks for that the stream still has
// and did not send again within gap, by RTX when negotiated.
func (s *nackStream) resend(n *rtcp.TransportLayerNack, gap time.Duration) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	for _, pair := range n.Nacks {
		pair.Range(func(seq uint16) bool {
			s.mu.Lock()
			e := &s.ring[seq%nackHistory]
			now := time.Now()
			if !e.valid || e.hdr.SequenceNumber != seq || int16(s.highest-seq) < 0 || now.Sub(e.resent) < gap {
				s.mu.Unlock()
				return true
			}
			e.resent = now
			h, payload := e.hdr, e.payload
			if s.rtxSSRC != 0 && s.rtxPT != 0 {
				// RFC 4588: the original sequence number, then the
				// payload, on the RTX stream, without padding.
				p := make([]byte, 2+len(payload))
				binary.BigEndian.PutUint16(p, seq)
				copy(p[2:], payload)
				payload = p
				h.SSRC, h.PayloadType, h.SequenceNumber = s.rtxSSRC, s.rtxPT, s.rtxSeq
				h.Padding, h.PaddingSize = false, 0
				s.rtxSeq++
			}
			s.mu.Unlock()
			_, _ = s.w.Write(&h, payload, nil)
			return true
		})
	}
}
