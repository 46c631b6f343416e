package sfu

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/webrtc/v4"
)

// TestJoinBurstWaitsForPrimingSlots: ten subscribers join at once, mid
// group of pictures, on an edge whose priming budget sends their cached
// pictures together in about four seconds while each one's queue holds
// two seconds of the live stream. Primed all at once, every joiner's live
// packets would pile up behind the burst and overflow its queue. With two
// priming slots the others get the cached keyframe, wait (taking their
// live packets off the queue) and go on at the publisher's next keyframe:
// no packet is dropped, and every joiner gets a stream with no gap in its
// sequence numbers that starts at a keyframe and skips only to one.
func TestJoinBurstWaitsForPrimingSlots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lo := []net.IP{net.IPv4(127, 0, 0, 1)}
	// 10 joiners × ~75 kB of cached pictures at 1 Mbit/s (past its 256 kB
	// burst): ~4 s together; the live stream is 120 packets/s.
	s, err := New(Config{ICEAddrs: lo, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NoLayers: true,
		QueuePackets: 256, PrimeBitrate: 1_000_000, PrimeConcurrent: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The joiners read in this process, slowed by -race on a busy
	// machine: a receive buffer like the edge's own keeps the kernel from
	// dropping a priming burst at their sockets before they read it.
	std, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	api, err := newAPI(lo, bufferedNet{Net: std}, nil, roleBoth, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	offer := func(pc *webrtc.PeerConnection) string { return gatheredOffer(t, ctx, pc) }
	const keyEvery = 30
	sent, frameNo, stopSend := testLesson(t, ctx, s, api, keyEvery)
	defer stopSend()
	// Join mid group: half a second after a keyframe, with the cache
	// holding two groups' worth of the first second.
	for frameNo.Load() < 2*keyEvery+keyEvery/2 {
		time.Sleep(5 * time.Millisecond)
	}

	const joiners = 10
	// What a joiner saw: its first packet (a keyframe's?), the last
	// lesson packet, and what broke its stream: a gap in its RTP sequence
	// numbers, or a jump in the lesson's numbering to anything but a
	// keyframe's start (skipping stale cached pictures is allowed).
	type seen struct {
		mu             sync.Mutex
		started, key   bool
		prevSeq        uint16
		prev, last     uint32
		gaps, badJumps int
	}
	views := make([]*seen, joiners)
	var wg sync.WaitGroup
	for i := range joiners {
		v := &seen{}
		views[i] = v
		spc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			t.Fatal(err)
		}
		defer spc.Close()
		if _, err := spc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
		spc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			for {
				p, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				if len(p.Payload) < 6 {
					continue
				}
				n := binary.BigEndian.Uint32(p.Payload[2:])
				key := p.Payload[0]&0x10 != 0 && p.Payload[1]&1 == 0
				v.mu.Lock()
				switch {
				case !v.started:
					v.started, v.key = true, key
				case p.SequenceNumber != v.prevSeq+1:
					v.gaps++
				case n != v.prev+1 && !key:
					v.badJumps++
				}
				v.prevSeq, v.prev, v.last = p.SequenceNumber, n, max(v.last, n)
				v.mu.Unlock()
			}
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, sans, err := s.Subscribe(ctx, "r", offer(spc))
			if err != nil {
				t.Error(err)
				return
			}
			if err := spc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sans}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	time.Sleep(5 * time.Second) // the burst's priming, and live packets after it
	stopSend()
	last := sent.Load() - 1
	deadline := time.Now().Add(10 * time.Second)
	for i, v := range views {
		for {
			v.mu.Lock()
			done := v.started && v.last == last
			v.mu.Unlock()
			if done || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		v.mu.Lock()
		if !v.started || !v.key || v.last != last || v.gaps > 0 || v.badJumps > 0 {
			t.Errorf("joiner %d: first packet a keyframe %v, last %d of %d sent; %d gaps in its sequence numbers, %d jumps to a packet other than a keyframe's first", i, v.key, v.last, last, v.gaps, v.badJumps)
		}
		v.mu.Unlock()
	}
	tot := s.Totals()
	if tot.Dropped != 0 {
		t.Errorf("the edge dropped %d packets", tot.Dropped)
	}
	if tot.PrimeWaits == 0 || tot.PrimeKeyframeStarts == 0 {
		t.Errorf("%d joiners waited for a priming slot, %d started at a keyframe: want some of each", tot.PrimeWaits, tot.PrimeKeyframeStarts)
	}
	t.Logf("waited %d, started at a keyframe %d", tot.PrimeWaits, tot.PrimeKeyframeStarts)
}

// gatheredOffer is pc's offer with every candidate.
func gatheredOffer(t *testing.T, ctx context.Context, pc *webrtc.PeerConnection) string {
	o, err := pc.CreateOffer(nil)
	if err != nil {
		t.Error(err)
		return ""
	}
	sdp, err := Gather(ctx, pc, o)
	if err != nil {
		t.Error(err)
	}
	return sdp
}

// testLesson publishes a VP8-shaped lesson to room "r" of s: 30 frames/s
// of 4 packets of 1,000 bytes, each numbered in its payload (bytes 2–5), a
// keyframe every keyEvery frames; like OBS, it ignores keyframe requests.
// It returns the packets sent so far, the last frame sent and stop, which
// returns once sending has stopped.
func testLesson(t *testing.T, ctx context.Context, s *SFU, api *webrtc.API, keyEvery int) (*atomic.Uint32, *atomic.Int64, func()) {
	ppc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ppc.Close() })
	track, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "t")
	if _, err := ppc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	_, ans, err := s.Publish(ctx, "r", gatheredOffer(t, ctx, ppc))
	if err != nil {
		t.Fatal(err)
	}
	if err := ppc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
		t.Fatal(err)
	}
	const fps, perFrame = 30, 4
	sent, frameNo := &atomic.Uint32{}, &atomic.Int64{}
	sendCtx, cancel := context.WithCancel(ctx)
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		payload := make([]byte, 1000)
		start := time.Now()
		for f := 0; sendCtx.Err() == nil; f++ {
			time.Sleep(time.Until(start.Add(time.Duration(f) * time.Second / fps)))
			for i := range perFrame {
				payload[0], payload[1] = 0x00, 0x01
				if i == 0 {
					payload[0] = 0x10
					if f%keyEvery == 0 {
						payload[1] = 0x00
					}
				}
				n := sent.Load()
				binary.BigEndian.PutUint32(payload[2:], n)
				_ = track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(n), Timestamp: uint32(f * 3000), Marker: i == perFrame-1}, Payload: payload})
				sent.Add(1)
			}
			frameNo.Store(int64(f))
		}
	}()
	return sent, frameNo, func() { cancel(); <-sending }
}

// TestJoinSlotsBoundHandshakesInFlight: with one join slot, a second WHEP
// subscriber is answered only once the first one's connection is up, or
// after joinSlotMax when it never comes up.
func TestJoinSlotsBoundHandshakesInFlight(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lo := []net.IP{net.IPv4(127, 0, 0, 1)}
	s, err := New(Config{ICEAddrs: lo, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NoLayers: true, JoinConcurrent: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	api, err := NewAPI(lo)
	if err != nil {
		t.Fatal(err)
	}
	_, _, stop := testLesson(t, ctx, s, api, 30)
	defer stop()
	viewer := func() *webrtc.PeerConnection {
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close() })
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
		return pc
	}
	subscribe := func(pc *webrtc.PeerConnection) chan string {
		offer := gatheredOffer(t, ctx, pc)
		answered := make(chan string, 1)
		go func() {
			_, ans, err := s.Subscribe(ctx, "r", offer)
			if err != nil {
				t.Error(err)
			}
			answered <- ans
		}()
		return answered
	}

	// The first never applies its answer: the second waits for its slot
	// until joinSlotMax has passed since the first took it.
	start := time.Now()
	<-subscribe(viewer())
	b := viewer()
	ansB := <-subscribe(b)
	if waited := time.Since(start); waited < joinSlotMax || waited > joinSlotMax+5*time.Second {
		t.Fatalf("the second subscriber was answered after %v; want about joinSlotMax (%v), when the first one's slot timed out", waited, joinSlotMax)
	}
	// The second connects: its slot comes back then, and the third is
	// answered at once.
	up := make(chan struct{})
	var once sync.Once
	b.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(up) })
		}
	})
	if err := b.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ansB}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-up:
	case <-ctx.Done():
		t.Fatal("the second subscriber did not connect")
	}
	offer := gatheredOffer(t, ctx, viewer())
	start = time.Now()
	if _, _, err := s.Subscribe(ctx, "r", offer); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > joinSlotMax*3/4 {
		t.Fatalf("the third subscriber waited %v after the second one connected", waited)
	}
	// The third does not connect either: a fourth whose deadline comes
	// before the slot's gives up waiting.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, _, err := s.Subscribe(short, "r", gatheredOffer(t, ctx, viewer())); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a subscriber waiting past its deadline: %v, want a deadline error", err)
	}
}
