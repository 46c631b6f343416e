package sfu

import (
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// rtcpLog records the RTCP an interceptor writes.
type rtcpLog struct {
	mu   sync.Mutex
	pkts []rtcp.Packet
}

func (l *rtcpLog) Write(pkts []rtcp.Packet, _ interceptor.Attributes) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pkts = append(l.pkts, pkts...)
	return len(pkts), nil
}

func (l *rtcpLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pkts)
}

// rtpFeed hands the interceptor one marshalled packet per Read.
type rtpFeed chan []byte

func (f rtpFeed) Read(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
	return copy(b, <-f), a, nil
}

// TestTWCCFeedbackReportsEveryPacket: the edge's TWCC feedback lists every
// packet read (by its transport-wide number) in the reports it writes,
// reports nothing for a connection that received nothing, and stops on
// Close.
func TestTWCCFeedbackReportsEveryPacket(t *testing.T) {
	i, err := twccFeedbackFactory{}.NewInterceptor("")
	if err != nil {
		t.Fatal(err)
	}
	var log rtcpLog
	i.BindRTCPWriter(&log)
	time.Sleep(3 * twccFeedbackInterval)
	if n := log.count(); n != 0 {
		t.Fatalf("%d reports before any packet arrived", n)
	}
	const extID = 5
	info := &interceptor.StreamInfo{SSRC: 1234, RTPHeaderExtensions: []interceptor.RTPHeaderExtension{{URI: transportCCURI, ID: extID}}}
	feed := make(rtpFeed, 1)
	r := i.BindRemoteStream(info, feed)
	const n = 20
	for k := range n {
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(100 + k), SSRC: 1234}, Payload: []byte{1, 2, 3}}
		ext, err := (&rtp.TransportCCExtension{TransportSequence: uint16(500 + k)}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.SetExtension(extID, ext); err != nil {
			t.Fatal(err)
		}
		b, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		feed <- b
		buf := make([]byte, 1500)
		if _, _, err := r.Read(buf, nil); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint16]bool{}
	for deadline := time.Now().Add(2 * time.Second); len(seen) < n && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		log.mu.Lock()
		for _, p := range log.pkts {
			cc, ok := p.(*rtcp.TransportLayerCC)
			if !ok {
				continue
			}
			if cc.MediaSSRC != 1234 {
				t.Fatalf("feedback for SSRC %d, want 1234", cc.MediaSSRC)
			}
			for k := range cc.PacketStatusCount {
				seen[cc.BaseSequenceNumber+k] = true
			}
		}
		log.mu.Unlock()
	}
	for k := range n {
		if !seen[uint16(500+k)] {
			t.Fatalf("transport-wide sequence number %d never reported (reported: %v)", 500+k, seen)
		}
	}
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	after := log.count()
	time.Sleep(3 * twccFeedbackInterval)
	if log.count() != after {
		t.Fatal("reports went on after Close")
	}
}
