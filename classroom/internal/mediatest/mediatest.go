// Package mediatest is the WHIP/WHEP harness of the live-class tests: pion
// peers on loopback that publish a known stream to an edge (Publisher) and
// watch it (Subscriber), checking every payload byte for byte, counting
// what the edge's PLIs and NACKs ask for, and able to stall or vanish like
// a real classroom. Tests of the SFU, cascade, recording and leak checks
// drive the same peers, so what "the lesson arrived intact" means is
// written once. It is a test helper: only tests import it.
package mediatest

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/sfu"
)

// Edge is what the peers need of an edge: one HTTP call, failing the test
// if it cannot be made, answering the response and its body.
type Edge interface {
	Do(t testing.TB, ctx context.Context, method, path, token, ctype string, body []byte) (*http.Response, []byte)
}

// LoopbackAPI gives test peers the edge's settings restricted to
// 127.0.0.1/udp4 with no mDNS: nothing touches the outside interface.
func LoopbackAPI(t testing.TB) *webrtc.API {
	t.Helper()
	a, err := sfu.NewAPI([]net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Offer creates a complete (non-trickle) offer.
func Offer(t testing.TB, ctx context.Context, pc *webrtc.PeerConnection) []byte {
	t.Helper()
	o, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("ICE gathering did not complete")
	}
	return []byte(pc.LocalDescription().SDP)
}

// PayloadFor is frame n's payload: a fake VP8 payload descriptor and frame
// header (keyframe or not), the frame number, then bytes derived from it, so
// a receiver can check every byte.
func PayloadFor(n uint64, key bool) []byte {
	p := []byte{0x10, 0x01, 0x00, 0x00, 0x9d, 0x01, 0x2a}
	if key {
		p[1] = 0x00 // VP8 frame header: P bit clear = keyframe
	}
	p = binary.BigEndian.AppendUint64(p, n)
	for i := range 600 {
		p = append(p, byte((n+uint64(i))%251))
	}
	return p
}

// IsKeyframe reports whether a PayloadFor payload is a keyframe.
func IsKeyframe(payload []byte) bool { return len(payload) > 1 && payload[1]&1 == 0 }

// PayloadLen is the length of every PayloadFor payload.
const PayloadLen = 7 + 8 + 600

// Publisher is a pion peer that WHIPs one VP8 track and sends a packet
// every 5 ms; like a real encoder it sends a keyframe first and then only
// when asked by a PLI.
type Publisher struct {
	PC       *webrtc.PeerConnection
	Location string
	PLIs     atomic.Int64
	NACKs    atomic.Int64
	NeedKey  atomic.Bool
	// Like OBS: ignore PLIs and send a keyframe every KeyEvery packets.
	IgnorePLI atomic.Bool
	KeyEvery  atomic.Int64
	Started   time.Time
	// Packets written, so rate checks compare with what was sent: on a
	// loaded machine the publisher's ticker slows down too.
	SentVideo, SentAudio atomic.Int64
	// Keyframes sent, and when the last one was (unix nanos): on a loaded
	// machine the ticker lags, so "every KeyEvery packets" drifts from
	// any wall-clock schedule.
	Keys, LastKey atomic.Int64
}

// Publish WHIPs a VP8 and Opus stream to the session as token and sends
// until the test ends.
func Publish(t testing.TB, ctx context.Context, e Edge, sessionID, token string) *Publisher {
	t.Helper()
	return PublishCodec(t, ctx, e, sessionID, token, webrtc.MimeTypeVP8)
}

// PublishCodec is Publish with another video codec (the payloads stay the
// fake VP8-shaped ones: the SFU forwards bytes and never parses them).
func PublishCodec(t testing.TB, ctx context.Context, e Edge, sessionID, token, videoMime string) *Publisher {
	t.Helper()
	return PublishFmtp(t, ctx, e, sessionID, token, videoMime, "")
}

// SendTracks adds a teacher's sendonly tracks to pc: video of videoMime
// (with fmtp) and Opus audio. It returns both tracks and the video's
// transceiver, whose sender carries the edge's keyframe requests.
func SendTracks(t testing.TB, pc *webrtc.PeerConnection, videoMime, fmtp string) (video, audio *webrtc.TrackLocalStaticRTP, videoTr *webrtc.RTPTransceiver) {
	t.Helper()
	video, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: videoMime, ClockRate: 90000, SDPFmtpLine: fmtp}, "video", "teacher")
	if err != nil {
		t.Fatal(err)
	}
	if videoTr, err = pc.AddTransceiverFromTrack(video, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	audio, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "teacher")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(audio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	return video, audio, videoTr
}

// Watch makes pc a WHEP viewer of sessionID that reads and drops whatever
// it receives: a recvonly video and audio transceiver, the offer, the
// edge's answer. It returns the resource's Location.
func Watch(t testing.TB, ctx context.Context, e Edge, pc *webrtc.PeerConnection, sessionID, token string) string {
	t.Helper()
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
		}
	})
	resp, body := e.Do(t, ctx, "POST", "/whep/"+sessionID, token, "application/sdp", Offer(t, ctx, pc))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHEP: %d %s", resp.StatusCode, body)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	return resp.Header.Get("Location")
}

// PublishFmtp is PublishCodec with a codec fmtp line (an H264 profile).
func PublishFmtp(t testing.TB, ctx context.Context, e Edge, sessionID, token, videoMime, fmtp string) *Publisher {
	t.Helper()
	pc, err := LoopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	track, audio, tr := SendTracks(t, pc, videoMime, fmtp)
	p := &Publisher{PC: pc}
	p.NeedKey.Store(true)
	go func() {
		for {
			pkts, _, err := tr.Sender().ReadRTCP()
			if err != nil {
				return
			}
			for _, pk := range pkts {
				switch pk.(type) {
				case *rtcp.PictureLossIndication:
					p.PLIs.Add(1)
					if !p.IgnorePLI.Load() {
						p.NeedKey.Store(true)
					}
				case *rtcp.TransportLayerNack:
					p.NACKs.Add(1)
				}
			}
		}
	}()
	resp, body := e.Do(t, ctx, "POST", "/whip/"+sessionID, token, "application/sdp", Offer(t, ctx, pc))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHIP: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/sdp" {
		t.Fatalf("WHIP answer Content-Type %q", ct)
	}
	OnlyLoopback(t, "the WHIP answer", string(body))
	p.Location = resp.Header.Get("Location")
	if !strings.HasPrefix(p.Location, "/whip/"+sessionID+"/") {
		t.Fatalf("WHIP Location %q", p.Location)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	sendCtx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	p.Started = time.Now()
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for n := uint64(0); ; n++ {
			select {
			case <-sendCtx.Done():
				return
			case <-tick.C:
			}
			if k := p.KeyEvery.Load(); k > 0 && n%uint64(k) == 0 {
				p.NeedKey.Store(true)
			}
			key := p.NeedKey.Swap(false)
			_ = track.WriteRTP(&rtp.Packet{
				Header:  rtp.Header{Version: 2, Marker: true, PayloadType: 96, SequenceNumber: uint16(n), Timestamp: uint32(n * 3000)},
				Payload: PayloadFor(n, key),
			})
			p.SentVideo.Add(1)
			if key {
				p.LastKey.Store(time.Now().UnixNano())
				p.Keys.Add(1)
			}
			if n%4 == 0 { // an Opus packet every 20 ms
				_ = audio.WriteRTP(&rtp.Packet{
					Header:  rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(n / 4), Timestamp: uint32(n / 4 * 960)},
					Payload: []byte{0xfc, 0xff, 0xfe, byte(n / 4)},
				})
				p.SentAudio.Add(1)
			}
		}
	}()
	return p
}

// Subscriber is a pion peer that WHEPs and counts the packets it receives,
// checking each payload byte for byte.
type Subscriber struct {
	PC        *webrtc.PeerConnection
	Location  string
	Got       atomic.Int64
	Bad       atomic.Int64
	Audio     atomic.Int64 // Opus packets received
	VideoMime atomic.Pointer[string]
	Stall     atomic.Bool  // stop reading
	FirstKey  atomic.Int64 // unix nanos of the first keyframe
}

// Subscribe WHEPs the session as token and reads until the test ends.
func Subscribe(t testing.TB, ctx context.Context, e Edge, sessionID, token string) *Subscriber {
	t.Helper()
	pc, err := LoopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	s := &Subscriber{PC: pc}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			mime := tr.Codec().MimeType
			s.VideoMime.Store(&mime)
		}
		if tr.Kind() == webrtc.RTPCodecTypeAudio {
			for {
				pkt, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				if len(pkt.Payload) == 4 && pkt.Payload[0] == 0xfc && tr.Codec().MimeType == webrtc.MimeTypeOpus {
					s.Audio.Add(1)
				}
			}
		}
		for {
			for s.Stall.Load() {
				time.Sleep(50 * time.Millisecond)
				if pc.ConnectionState() == webrtc.PeerConnectionStateClosed {
					return
				}
			}
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			pl := pkt.Payload
			if len(pl) != PayloadLen || !bytes.Equal(pl, PayloadFor(binary.BigEndian.Uint64(pl[7:15]), IsKeyframe(pl))) {
				s.Bad.Add(1)
				continue
			}
			if IsKeyframe(pl) {
				s.FirstKey.CompareAndSwap(0, time.Now().UnixNano())
			}
			s.Got.Add(1)
		}
	})
	resp, body := e.Do(t, ctx, "POST", "/whep/"+sessionID, token, "application/sdp", Offer(t, ctx, pc))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHEP: %d %s", resp.StatusCode, body)
	}
	OnlyLoopback(t, "the WHEP answer", string(body))
	s.Location = resp.Header.Get("Location")
	if !strings.HasPrefix(s.Location, "/whep/"+sessionID+"/") {
		t.Fatalf("WHEP Location %q", s.Location)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	return s
}

// OnlyLoopback fails unless every candidate in sdp is on 127.0.0.1.
func OnlyLoopback(t testing.TB, who, sdp string) {
	t.Helper()
	n := 0
	for _, l := range strings.Split(sdp, "\n") {
		if strings.HasPrefix(l, "a=candidate:") {
			n++
			if !strings.Contains(l, " 127.0.0.1 ") {
				t.Errorf("%s has a candidate off loopback: %s", who, l)
			}
		}
	}
	if n == 0 {
		t.Errorf("%s has no candidates", who)
	}
}

// KeptUp counts over d the video packets sub received and pub sent.
func KeptUp(sub *Subscriber, pub *Publisher, d time.Duration) (got, sent int64) {
	g0, s0 := sub.Got.Load(), pub.SentVideo.Load()
	time.Sleep(d)
	return sub.Got.Load() - g0, pub.SentVideo.Load() - s0
}

// FullRate is the share of what was sent a subscriber that keeps up must
// receive in a window (packets in flight at its edges account for the rest).
const FullRate = 0.75

// Gain returns how many packets s receives during d.
func Gain(s *Subscriber, d time.Duration) int64 {
	before := s.Got.Load()
	time.Sleep(d)
	return s.Got.Load() - before
}

// VanishingAPI is LoopbackAPI with every ICE packet on conn, so closing
// conn makes the peer vanish without a goodbye (no DTLS close_notify), as a
// terminal that loses power does.
func VanishingAPI(t testing.TB, conn net.PacketConn) *webrtc.API {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		t.Fatal(err)
	}
	var se webrtc.SettingEngine
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) })
	se.SetICEUDPMux(ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: conn}))
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
}
