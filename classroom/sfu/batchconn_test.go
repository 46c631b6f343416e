package sfu

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// TestBatchConnHoldsAFrame: what is written under a hold reaches the
// receiver only when the frame's last packet is released, then every
// packet as its own datagram, in order; a write outside a hold, or a new
// frame, sends what waits first.
func TestBatchConnHoldsAFrame(t *testing.T) {
	var reg connRegistry
	raw, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := newBatchConn(raw, &reg)
	defer c.Close()
	if reg.find(c.key) != c {
		t.Fatalf("registry does not find the conn at %v", c.key)
	}
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	dst := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	pkt := func(i, size int) []byte { return bytes.Repeat([]byte{byte(i)}, size) }
	write := func(i, size int) {
		t.Helper()
		if n, err := c.WriteToAddrPort(pkt(i, size), dst); err != nil || n != size {
			t.Fatalf("write %d: %d %v", i, n, err)
		}
	}
	// recv returns the next datagram, or nil when none comes in d.
	buf := make([]byte, 2000)
	recv := func(d time.Duration) []byte {
		_ = rx.SetReadDeadline(time.Now().Add(d))
		n, err := rx.Read(buf)
		if err != nil {
			return nil
		}
		return append([]byte(nil), buf[:n]...)
	}
	expect := func(i, size int) {
		t.Helper()
		got := recv(2 * time.Second)
		if !bytes.Equal(got, pkt(i, size)) {
			t.Fatalf("want packet %d (%d bytes), got %d bytes starting %v", i, size, len(got), got[:min(len(got), 1)])
		}
	}

	// A frame of four: three equal, the last shorter.
	for i := range 4 {
		c.hold(i == 0)
		size := 1200
		if i == 3 {
			size = 700
		}
		write(i, size)
		if i < 3 {
			c.release(false)
			if got := recv(50 * time.Millisecond); got != nil {
				t.Fatalf("packet %d sent before its frame was complete", got[0])
			}
		} else {
			c.release(true)
		}
	}
	for i := range 4 {
		size := 1200
		if i == 3 {
			size = 700
		}
		expect(i, size)
	}
	if canSegment && c.noGSO {
		t.Fatal("the kernel refused a segmented send on loopback")
	}

	// Two held, then a write outside a hold (audio, RTCP): the held go first.
	for i := 10; i < 12; i++ {
		c.hold(false)
		write(i, 1000)
		c.release(false)
	}
	write(12, 100)
	expect(10, 1000)
	expect(11, 1000)
	expect(12, 100)

	// Held packets of different sizes, then a new frame: each in order.
	c.hold(false)
	write(20, 500)
	write(21, 900) // larger than the batch's segments: the batch goes first
	write(22, 300)
	write(23, 300) // after a shorter one: a new batch
	c.release(false)
	c.hold(true) // a new frame sends what waits
	c.release(false)
	for i, size := range []int{500, 900, 300, 300} {
		expect(20+i, size)
	}
	if got := recv(50 * time.Millisecond); got != nil {
		t.Fatalf("unexpected datagram of %d bytes", len(got))
	}

	// Without segmentation (the kernel refused it) nothing waits.
	c.noGSO = true
	c.hold(false)
	write(30, 800)
	expect(30, 800)
	c.release(false)

	c.Close()
	if reg.find(c.key) != nil {
		t.Fatal("a closed conn is still registered")
	}
}

// TestSubscriberBatchesOnItsSocket: through a real SFU on loopback, a
// subscriber finds its batching socket once connected and gets every
// packet of every frame, in order, each frame sent in one segmented send.
func TestSubscriberBatchesOnItsSocket(t *testing.T) {
	if !canSegment {
		t.Skip("no segmented sends on this system")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lo := []net.IP{net.IPv4(127, 0, 0, 1)}
	s, err := New(Config{ICEAddrs: lo, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NoLayers: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	api, err := NewAPI(lo)
	if err != nil {
		t.Fatal(err)
	}
	offer := func(pc *webrtc.PeerConnection) string {
		o, err := pc.CreateOffer(nil)
		if err != nil {
			t.Fatal(err)
		}
		sdp, err := Gather(ctx, pc, o)
		if err != nil {
			t.Fatal(err)
		}
		return sdp
	}
	ppc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer ppc.Close()
	track, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "t")
	if _, err := ppc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	_, ans, err := s.Publish(ctx, "r", offer(ppc))
	if err != nil {
		t.Fatal(err)
	}
	if err := ppc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
		t.Fatal(err)
	}
	const frames, perFrame = 20, 5
	var seq atomic.Uint32
	sendFrame := func(key bool) {
		payload := make([]byte, 1000)
		for i := range perFrame {
			payload[0], payload[1] = 0x00, 0x01
			if i == 0 {
				payload[0] = 0x10
				if key {
					payload[1] = 0x00
				}
			}
			n := seq.Add(1) - 1
			binary.BigEndian.PutUint32(payload[2:], n)
			_ = track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(n), Timestamp: n / perFrame * 3000, Marker: i == perFrame-1}, Payload: payload})
		}
	}
	warm, stopWarm := context.WithCancel(ctx)
	warmed := make(chan struct{})
	go func() { // until the subscriber is in: the SFU learns the track from its packets
		defer close(warmed)
		for warm.Err() == nil {
			sendFrame(true)
			time.Sleep(20 * time.Millisecond)
		}
	}()

	spc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer spc.Close()
	if _, err := spc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	got := make(chan uint32, 4096)
	spc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if len(p.Payload) >= 6 {
				got <- binary.BigEndian.Uint32(p.Payload[2:])
			}
		}
	})
	sub, sans, err := s.Subscribe(ctx, "r", offer(spc))
	if err != nil {
		t.Fatal(err)
	}
	if err := spc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sans}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got: // connected and primed
	case <-ctx.Done():
		t.Fatal("the subscriber got no media")
	}
	stopWarm()
	<-warmed
	c := sub.conn.Load()
	if c == nil {
		t.Fatal("the subscriber found no batching socket")
	}
	time.Sleep(200 * time.Millisecond)
	for len(got) > 0 {
		<-got
	}
	// Each frame must arrive whole before the next is sent: its last
	// packet sends it, not the next frame or the next sender report (a
	// second later).
	want := seq.Load()
	for f := range frames {
		sendFrame(f == 0)
		due := time.After(700 * time.Millisecond)
		for range perFrame {
			select {
			case n := <-got:
				if n != want {
					t.Fatalf("packet %d arrived where %d was due", n, want)
				}
				want++
			case <-due:
				t.Fatalf("frame %d: packet %d did not arrive within 700 ms", f, want)
			}
		}
	}
	c.mu.Lock()
	refused := c.noGSO
	c.mu.Unlock()
	if refused {
		t.Fatal("the kernel refused the segmented sends")
	}
}
