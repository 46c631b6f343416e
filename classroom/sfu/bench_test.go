package sfu_test

// BenchmarkForward measures the SFU forwarding one publisher's RTP to N
// subscribers, all real pion peers on 127.0.0.1, against a baseline in the
// same run: one goroutine doing what the SFU must at minimum do per packet
// and subscriber — SRTP-encrypt it and send it by UDP — to N plain UDP
// receivers. b.N is the number of packets the publisher sends, paced at
// benchRate packets/s (1100-byte payloads: ~9.7 Mbit/s, about 4× a
// 2.5 Mbit/s lesson) in frames of benchFrame packets, the last marked.
// Each reports delivered packets/s (summed over subscribers), loss %, and
// process CPU µs per delivered packet. sfu-nobatch is the SFU with
// Config.NoFrameBatch (one system call per packet per subscriber).
//
//	go test -run '^$' -bench Forward -benchtime 3000x ./classroom/sfu/
//
// Limits of this first version: everything runs in one process, so CPU
// includes the test peers (publisher encrypt, subscribers decrypt) and the
// baseline's receivers — the two CPU figures are comparable with each
// other, not an SFU-alone figure; p99 forwarding delay is not measured.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/sfu"
)

const (
	benchPayload = 1100 // bytes of RTP payload, a typical video packet
	benchRate    = 1000 // packets/s the publisher sends
	benchFrame   = 9    // packets per video frame
)

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pace sleeps until packet i is due at benchRate after start.
func pace(start time.Time, i int) {
	if d := time.Until(start.Add(time.Duration(i) * time.Second / benchRate)); d > 0 {
		time.Sleep(d)
	}
}

var loopback = []net.IP{net.IPv4(127, 0, 0, 1)}

func BenchmarkForward(b *testing.B) {
	for _, n := range []int{1, 8, 32, 64} {
		b.Run(fmt.Sprintf("baseline-srtp-udp/subs=%d", n), func(b *testing.B) { benchBaseline(b, n) })
		b.Run(fmt.Sprintf("sfu/subs=%d", n), func(b *testing.B) { benchSFU(b, n, false) })
		// Every packet to a subscriber by its own system call, as
		// before frame batching (batchconn.go).
		b.Run(fmt.Sprintf("sfu-nobatch/subs=%d", n), func(b *testing.B) { benchSFUOpts(b, n, false, false, true) })
		b.Run(fmt.Sprintf("sfu-simulcast/subs=%d", n), func(b *testing.B) { benchSFU(b, n, true) })
		// Layer choice on (the default): gcc on every subscriber and
		// the chooser; counted once every subscriber is on the top
		// layer, so no probe padding is counted.
		b.Run(fmt.Sprintf("sfu-simulcast-choose/subs=%d", n), func(b *testing.B) { benchSFUOpts(b, n, true, true, false) })
	}
}

func report(b *testing.B, elapsed, cpu time.Duration, sent, received int64) {
	b.ReportMetric(float64(received)/elapsed.Seconds(), "pkts/s")
	if received > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(received), "cpu-µs/pkt")
	}
	if sent > 0 {
		b.ReportMetric(100*float64(sent-received)/float64(sent), "loss%")
	}
	b.ReportMetric(0, "ns/op") // per-op time is meaningless here
}

// waitQuiet waits until got reaches want or stops growing for 300 ms and
// returns when the last packet arrived.
func waitQuiet(got func() int64, last *atomic.Int64, want int64) time.Time {
	prev, still := int64(-1), time.Now()
	for {
		g := got()
		if g >= want {
			break
		}
		if g != prev {
			prev, still = g, time.Now()
		} else if time.Since(still) > 300*time.Millisecond {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Unix(0, last.Load())
}

func benchBaseline(b *testing.B, n int) {
	var got, last atomic.Int64
	var dsts []net.Addr
	for range n {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		_ = c.(*net.UDPConn).SetReadBuffer(4 << 20)
		dsts = append(dsts, c.LocalAddr())
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := c.ReadFrom(buf); err != nil {
					return
				}
				got.Add(1)
				last.Store(time.Now().UnixNano())
			}
		}()
	}
	out, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	// One SRTP context per receiver, as each subscriber has its own keys.
	ctxs := make([]*srtp.Context, n)
	for i := range ctxs {
		key, salt := make([]byte, 16), make([]byte, 14)
		key[0], salt[0] = byte(i), byte(i)
		if ctxs[i], err = srtp.CreateContext(key, salt, srtp.ProtectionProfileAes128CmHmacSha1_80); err != nil {
			b.Fatal(err)
		}
	}
	payload := make([]byte, benchPayload)
	plain := make([]byte, 0, 1500)
	enc := make([]byte, 0, 1500)
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	for i := range b.N {
		h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(i), Timestamp: uint32(i * 3000), SSRC: 1}
		for j, d := range dsts {
			pkt := rtp.Packet{Header: h, Payload: payload}
			m, err := pkt.MarshalTo(plain[:cap(plain)])
			if err != nil {
				b.Fatal(err)
			}
			if enc, err = ctxs[j].EncryptRTP(enc[:0], plain[:m], nil); err != nil {
				b.Fatal(err)
			}
			_, _ = out.WriteTo(enc, d)
		}
		pace(start, i)
	}
	sent := int64(b.N) * int64(n)
	end := waitQuiet(got.Load, &last, sent)
	b.StopTimer()
	report(b, end.Sub(start), cpuTime()-cpu0, sent, got.Load())
}

func benchSFU(b *testing.B, n int, simulcast bool) { benchSFUOpts(b, n, simulcast, false, false) }

func benchSFUOpts(b *testing.B, n int, simulcast, choose, noBatch bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Simulcast: every subscriber takes the top layer (layer choice off,
	// so no probe padding), while the two lower layers (a quarter and a
	// sixteenth of its packets) reach the forwarders and are offered to
	// every subscriber too: the cost measured is the layers', not the
	// estimator's.
	s, err := sfu.New(sfu.Config{ICEAddrs: loopback, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), QueuePackets: 2048, NoLayers: simulcast && !choose, NoFrameBatch: noBatch})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	api, err := sfu.NewAPI(loopback)
	if err != nil {
		b.Fatal(err)
	}

	// Publisher.
	ppc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		b.Fatal(err)
	}
	defer ppc.Close()
	var tracks []*webrtc.TrackLocalStaticRTP
	rids := []string{""}
	if simulcast {
		rids = []string{"f", "h", "q"}
	}
	var sender *webrtc.RTPSender
	for i, rid := range rids {
		var opts []func(*webrtc.TrackLocalStaticRTP)
		if rid != "" {
			opts = append(opts, webrtc.WithRTPStreamID(rid))
		}
		track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "bench", opts...)
		if err != nil {
			b.Fatal(err)
		}
		tracks = append(tracks, track)
		if i == 0 {
			tr, err := ppc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
			if err != nil {
				b.Fatal(err)
			}
			sender = tr.Sender()
		} else if err := sender.AddEncoding(track); err != nil {
			b.Fatal(err)
		}
	}
	_, answer, err := s.Publish(ctx, "bench", completeOffer(b, ctx, ppc))
	if err != nil {
		b.Fatal(err)
	}
	if err := ppc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		b.Fatal(err)
	}
	var midID, ridID uint8
	for _, e := range sender.GetParameters().HeaderExtensions {
		switch e.URI {
		case "urn:ietf:params:rtp-hdrext:sdes:mid":
			midID = uint8(e.ID)
		case "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id":
			ridID = uint8(e.ID)
		}
	}
	payload := make([]byte, benchPayload)
	payload[0] = 0x10 // a VP8 keyframe start: the subscriber's first switch needs one
	var seq atomic.Uint32
	send := func() {
		i := seq.Add(1) - 1
		for k, track := range tracks {
			if k > 0 && i%(1<<(2*k)) != 0 {
				continue // the lower layers: a quarter, a sixteenth of the packets
			}
			// Frames of benchFrame packets, the last one marked, as an
			// encoder sends them (the edge batches a frame per subscriber).
			j := i >> (2 * k)
			h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(j), Timestamp: j / benchFrame * 3000, Marker: j%benchFrame == benchFrame-1}
			if simulcast {
				_ = h.SetExtension(midID, []byte("0"))
				_ = h.SetExtension(ridID, []byte(rids[k]))
			}
			_ = track.WriteRTP(&rtp.Packet{Header: h, Payload: payload})
		}
	}
	// Warm up: the SFU learns the track from its first packets.
	warm, stopWarm := context.WithCancel(ctx)
	warmed := make(chan struct{})
	go func() {
		defer close(warmed)
		// Stopped at a frame's end: a subscriber's socket keeps an
		// incomplete frame's packets until the rest comes.
		for warm.Err() == nil || seq.Load()%benchFrame != 0 {
			send()
			time.Sleep(5 * time.Millisecond)
		}
	}()

	var got, last atomic.Int64
	var counting atomic.Bool
	for range n {
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			b.Fatal(err)
		}
		defer pc.Close()
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			b.Fatal(err)
		}
		var first atomic.Bool
		pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			buf := make([]byte, 1500)
			for {
				k, _, err := tr.Read(buf)
				if err != nil {
					return
				}
				if k > 0 && buf[0]&0x20 != 0 {
					continue // a probe's padding, not a forwarded packet
				}
				first.Store(true)
				if counting.Load() {
					got.Add(1)
					last.Store(time.Now().UnixNano())
				}
			}
		})
		_, ans, err := s.Subscribe(ctx, "bench", completeOffer(b, ctx, pc))
		if err != nil {
			b.Fatal(err)
		}
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
			b.Fatal(err)
		}
		for !first.Load() {
			if ctx.Err() != nil {
				b.Fatal("subscriber got no media")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// With layer choice on, wait (up to 30 s) for every subscriber to
	// climb to the top layer; on a loaded machine some do not, and the
	// benchmark says how many did (top-subs).
	top := 0
	for deadline := time.Now().Add(30 * time.Second); choose && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		top = 0
		for _, l := range s.Links("bench") {
			if l.Layers > 0 && l.Layer == l.Layers-1 {
				top++
			}
		}
		if top == n {
			break
		}
	}
	stopWarm()
	<-warmed
	time.Sleep(100 * time.Millisecond) // drain warm-up packets
	counting.Store(true)

	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	total := (b.N + benchFrame - 1) / benchFrame * benchFrame // whole frames
	for i := range total {
		send()
		pace(start, i)
	}
	sent := int64(total) * int64(n)
	end := waitQuiet(got.Load, &last, sent)
	b.StopTimer()
	report(b, end.Sub(start), cpuTime()-cpu0, sent, got.Load())
	if choose {
		b.ReportMetric(float64(top), "top-subs")
	}
}

func completeOffer(tb testing.TB, ctx context.Context, pc *webrtc.PeerConnection) string {
	tb.Helper()
	o, err := pc.CreateOffer(nil)
	if err != nil {
		tb.Fatal(err)
	}
	sdp, err := sfu.Gather(ctx, pc, o)
	if err != nil {
		tb.Fatal(err)
	}
	return sdp
}
