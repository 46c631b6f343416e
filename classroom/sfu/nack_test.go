package sfu

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// sentLog records what the responder writes below it.
type sentLog struct {
	mu   sync.Mutex
	pkts []rtp.Packet
}

func (l *sentLog) Write(h *rtp.Header, payload []byte, _ interceptor.Attributes) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pkts = append(l.pkts, rtp.Packet{Header: *h, Payload: append([]byte(nil), payload...)})
	return len(payload), nil
}

func (l *sentLog) wait(t *testing.T, n int) []rtp.Packet {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		l.mu.Lock()
		if len(l.pkts) >= n {
			out := append([]rtp.Packet(nil), l.pkts...)
			l.mu.Unlock()
			return out
		}
		l.mu.Unlock()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Fatalf("%d packets written, want %d", len(l.pkts), n)
	return nil
}

// nackFeed hands the responder one RTCP compound per Read.
type nackFeed chan []byte

func (f nackFeed) Read(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
	return copy(b, <-f), a, nil
}

// TestNACKResponder: a NACKed packet is sent again by RTX (its original
// sequence number first, then the payload as sent), once however often it
// is asked for within the round trip, and a packet never sent or long
// overwritten is not answered; without RTX it goes again as it was.
func TestNACKResponder(t *testing.T) {
	for _, rtx := range []bool{true, false} {
		i, err := nackResponderFactory{}.NewInterceptor("")
		if err != nil {
			t.Fatal(err)
		}
		info := &interceptor.StreamInfo{SSRC: 1111, RTCPFeedback: []interceptor.RTCPFeedback{{Type: "nack"}}}
		if rtx {
			info.SSRCRetransmission, info.PayloadTypeRetransmission = 2222, 97
		}
		below := &sentLog{}
		w := i.BindLocalStream(info, below)
		feed := make(nackFeed, 4)
		r := i.BindRTCPReader(feed)
		// The caller reuses its header (the subscriber track does), the
		// payloads are its own.
		var h rtp.Header
		for seq := uint16(65000); seq != 1000; seq++ { // across the wrap, more than the history
			h = rtp.Header{Version: 2, SSRC: 1111, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(seq) * 10}
			p := []byte{byte(seq), byte(seq >> 8), 0xab}
			if _, err := w.Write(&h, p, nil); err != nil {
				t.Fatal(err)
			}
		}
		sent := len(below.wait(t, 1536))
		ask := func(seqs ...uint16) {
			var pairs []rtcp.NackPair
			for _, s := range seqs {
				pairs = append(pairs, rtcp.NackPair{PacketID: s})
			}
			b, err := (&rtcp.TransportLayerNack{MediaSSRC: 1111, Nacks: pairs}).Marshal()
			if err != nil {
				t.Fatal(err)
			}
			feed <- b
			if _, _, err := r.Read(make([]byte, 1500), nil); err != nil {
				t.Fatal(err)
			}
		}
		ask(900, 65100)  // 65100: overwritten (the history is 1024 packets)
		ask(900)         // again at once: already on its way
		ask(1000, 65200) // never sent; long gone
		time.Sleep(50 * time.Millisecond)
		got := below.wait(t, sent+1)[sent:]
		if len(got) != 1 {
			t.Fatalf("rtx=%v: %d packets sent again, want 1: %+v", rtx, len(got), got)
		}
		p := got[0]
		want := []byte{byte(900 & 0xff), byte(900 >> 8), 0xab}
		if rtx {
			if p.SSRC != 2222 || p.PayloadType != 97 || binary.BigEndian.Uint16(p.Payload) != 900 || string(p.Payload[2:]) != string(want) {
				t.Errorf("RTX packet: ssrc %d pt %d payload %x", p.SSRC, p.PayloadType, p.Payload)
			}
		} else if p.SSRC != 1111 || p.SequenceNumber != 900 || p.Timestamp != 9000 || string(p.Payload) != string(want) {
			t.Errorf("resent packet: ssrc %d seq %d ts %d payload %x", p.SSRC, p.SequenceNumber, p.Timestamp, p.Payload)
		}
		// After the round trip (none measured: 5 ms) it may go again.
		ask(900)
		below.wait(t, sent+2)
	}
}

// TestRTXLeavesInOrder: NACKs answered at once (each on its own goroutine)
// still send their RTX packets with sequence numbers in the order they
// leave, and a flood of NACKs does not pile up resends.
func TestRTXLeavesInOrder(t *testing.T) {
	i, err := nackResponderFactory{}.NewInterceptor("")
	if err != nil {
		t.Fatal(err)
	}
	info := &interceptor.StreamInfo{SSRC: 1111, RTCPFeedback: []interceptor.RTCPFeedback{{Type: "nack"}},
		SSRCRetransmission: 2222, PayloadTypeRetransmission: 97}
	below := &sentLog{}
	// A socket that takes its time: resends that overlap would interleave.
	slow := interceptor.RTPWriterFunc(func(h *rtp.Header, p []byte, a interceptor.Attributes) (int, error) {
		if h.SSRC == 2222 {
			time.Sleep(time.Duration(h.SequenceNumber%3) * 200 * time.Microsecond)
		}
		return below.Write(h, p, a)
	})
	w := i.BindLocalStream(info, slow)
	feed := make(nackFeed, 64)
	r := i.BindRTCPReader(feed)
	const n = 400
	for seq := uint16(0); seq < n; seq++ {
		h := rtp.Header{Version: 2, SSRC: 1111, PayloadType: 96, SequenceNumber: seq}
		if _, err := w.Write(&h, []byte{byte(seq), 0xab}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// 40 NACKs of 10 packets each, read back to back.
	for k := range 40 {
		var pairs []rtcp.NackPair
		for j := range 10 {
			pairs = append(pairs, rtcp.NackPair{PacketID: uint16(k*10 + j)})
		}
		b, err := (&rtcp.TransportLayerNack{MediaSSRC: 1111, Nacks: pairs}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		feed <- b
		if _, _, err := r.Read(make([]byte, 1500), nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	below.mu.Lock()
	var rtx []rtp.Packet
	for _, p := range below.pkts {
		if p.SSRC == 2222 {
			rtx = append(rtx, p)
		}
	}
	below.mu.Unlock()
	if len(rtx) == 0 {
		t.Fatal("nothing sent again")
	}
	for k := 1; k < len(rtx); k++ {
		if rtx[k].SequenceNumber != rtx[k-1].SequenceNumber+1 {
			t.Fatalf("RTX sequence numbers out of order at %d: %d after %d", k, rtx[k].SequenceNumber, rtx[k-1].SequenceNumber)
		}
	}
	t.Logf("%d of %d NACKed packets sent again, in order", len(rtx), n)
}
