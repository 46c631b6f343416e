package sfu_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/classroom/sfu"
)

// svcWatcher reads a subscriber's VP9 packets and keeps what their
// descriptors say. Order does not matter: on a loaded machine a packet
// lost on loopback comes back late, retransmitted (NACK), so holes and
// markers are judged over what arrived, leaving out the newest packets.
type svcWatcher struct {
	mu         sync.Mutex
	pkts       int
	maxS, perT [3]int // packets per spatial, temporal layer since reset
	since      time.Time
	started    bool
	last, ext  int64          // the newest sequence number, extended past wraps
	seen       map[int64]bool // every sequence number that arrived (padding too)
	pics       map[uint32]*svcPic
}

// svcPic is one picture as it arrived: its highest sequence number and
// those that carried the marker.
type svcPic struct {
	top     int64
	markers []int64
}

func (w *svcWatcher) watch(t *testing.T, pc *webrtc.PeerConnection) {
	w.seen, w.pics = map[int64]bool{}, map[uint32]*svcPic{}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() != webrtc.RTPCodecTypeVideo {
			go func() {
				for {
					if _, _, err := tr.ReadRTP(); err != nil {
						return
					}
				}
			}()
			return
		}
		go func() {
			for {
				p, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				w.packet(p)
			}
		}()
	})
}

func (w *svcWatcher) packet(p *rtp.Packet) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ext := int64(p.SequenceNumber)
	if w.started {
		ext = w.ext + int64(int16(p.SequenceNumber-uint16(w.ext)))
	}
	if !w.started || ext > w.ext {
		w.ext = ext
	}
	w.started = true
	w.seen[ext] = true
	var d codecs.VP9Packet
	if _, err := d.Unmarshal(p.Payload); len(p.Payload) == 0 || err != nil {
		return // probe padding: its own sequence numbers, no picture
	}
	pic := w.pics[p.Timestamp]
	if pic == nil {
		pic = &svcPic{top: ext}
		w.pics[p.Timestamp] = pic
	}
	pic.top = max(pic.top, ext)
	if p.Marker {
		pic.markers = append(pic.markers, ext)
	}
	if !w.since.IsZero() {
		w.pkts++
		w.maxS[min(int(d.SID), 2)]++
		w.perT[min(int(d.TID), 2)]++
	}
}

// reset starts counting layers afresh (holes and markers are judged over
// everything).
func (w *svcWatcher) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.since, w.pkts, w.maxS, w.perT = time.Now(), 0, [3]int{}, [3]int{}
}

// snapshot returns the layer counts since reset, the sequence numbers
// that never arrived (holes in the numbering: dropped packets not closed
// up) and the pictures whose marker is not exactly on their last packet,
// both leaving out the newest 60 packets (a retransmission may be on its
// way).
func (w *svcWatcher) snapshot() (pkts int, perS, perT [3]int, holes, badMarker int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	lo, hi := w.ext, w.ext-60
	for s := range w.seen {
		lo = min(lo, s)
	}
	for s := lo; s <= hi; s++ {
		if !w.seen[s] {
			holes++
		}
	}
	for _, pic := range w.pics {
		if pic.top <= hi && (len(pic.markers) != 1 || pic.markers[0] != pic.top) {
			badMarker++
		}
	}
	return w.pkts, w.maxS, w.perT, holes, badMarker
}

// A pion publisher sends VP9 L3T3 (one SSRC, real payload descriptors;
// the pictures are not decodable, the descriptors are what the edge
// reads) to the SFU; two pion subscribers on loopback: one held at its
// lowest layer (as the master's grid holds a classroom's return video)
// gets only spatial layer 0 at half the frame rate, the other climbs by
// the chooser's probes to all three spatial layers. Both see sequence
// numbers without a gap and the marker on the last packet of each
// picture they get; the publisher is asked for keyframes (the climb);
// audio reaches both.
func TestVP9SVCForwardedByLayer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := sfu.New(sfu.Config{ICEAddrs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	plis := svcPublish(t, ctx, s)
	time.Sleep(1200 * time.Millisecond) // the layers measured
	subscribe := func(low bool) *svcWatcher { return svcSubscribe(t, ctx, s, low) }
	low, full := subscribe(true), subscribe(false)
	// The full subscriber climbs by probes; ~4 s on loopback, allow 25
	// on a loaded machine.
	climbed := false
	for end := time.Now().Add(25 * time.Second); time.Now().Before(end); {
		time.Sleep(250 * time.Millisecond)
		if _, perS, _, _, _ := full.snapshot(); perS[2] > 0 {
			climbed = true
			break
		}
		full.reset()
	}
	if !climbed {
		t.Fatalf("the unconstrained subscriber got no packet of spatial layer 2 within 25 s (links %+v)", s.Links("class"))
	}
	full.reset()
	low.reset()
	time.Sleep(2 * time.Second)
	lp, lowS, lowT, lowGaps, lowBad := low.snapshot()
	fp, fullS, fullT, fullGaps, fullBad := full.snapshot()
	t.Logf("held low: %d packets, per spatial layer %v, per temporal %v, holes %d, misplaced markers %d", lp, lowS, lowT, lowGaps, lowBad)
	t.Logf("full: %d packets, per spatial layer %v, per temporal %v, holes %d, misplaced markers %d; PLIs %d; links %+v", fp, fullS, fullT, fullGaps, fullBad, plis.get(), s.Links("class"))
	if lp == 0 || lowS[1] != 0 || lowS[2] != 0 || lowT[2] != 0 {
		t.Errorf("held low: per spatial layer %v, per temporal %v; want only S0 at T0–T1", lowS, lowT)
	}
	if lowT[0] == 0 || lowT[1] == 0 {
		t.Errorf("held low: per temporal layer %v, want T0 and T1", lowT)
	}
	if fullS[0] == 0 || fullS[1] == 0 || fullS[2] == 0 || fullT[2] == 0 {
		t.Errorf("full: per spatial layer %v, per temporal %v; want all three of each", fullS, fullT)
	}
	// A hole is a dropped layer's packet not closed up (what loopback
	// loses comes back by NACK).
	if lowGaps != 0 || fullGaps != 0 {
		t.Errorf("holes in the sequence numbers: held low %d, full %d", lowGaps, fullGaps)
	}
	if lowBad != 0 || fullBad != 0 {
		t.Errorf("pictures with the marker misplaced: held low %d, full %d", lowBad, fullBad)
	}
	// What the metrics count: one subscriber at S0 T1, one at S2 T2
	// (polled: on a loaded machine the chooser may move the full one down
	// for a moment).
	var got map[[2]int]int
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if got = s.SVCLayers(); len(got) == 2 && got[[2]int{0, 1}] == 1 && got[[2]int{2, 2}] == 1 {
			break
		}
	}
	if len(got) != 2 || got[[2]int{0, 1}] != 1 || got[[2]int{2, 2}] != 1 {
		t.Errorf("SVCLayers %v, want one subscriber at S0T1 and one at S2T2", got)
	}
	if plis.get() == 0 {
		t.Error("the publisher was never asked for a keyframe")
	}
	links := s.Links("class")
	if len(links) != 2 {
		t.Fatalf("links %+v", links)
	}
	for _, l := range links {
		if l.Layers != 4 {
			t.Errorf("link %+v: want 4 layers to choose from (s0t1 s0t2 s1t2 s2t2)", l)
		}
	}
}

// atomicCounter is a small mutex-guarded counter and flag for the test
// publisher's RTCP reader.
type atomicCounter struct {
	mu   sync.Mutex
	n    int
	flag bool
}

func (c *atomicCounter) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *atomicCounter) set() { c.mu.Lock(); c.flag = true; c.mu.Unlock() }
func (c *atomicCounter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *atomicCounter) take() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.flag
	c.flag = false
	return f
}

// svcPublish starts a pion publisher of VP9 L3T3 and Opus in s's room
// "class" and returns its count of keyframe requests. 30 pictures a
// second: S0 one 600-byte packet (~150 kbit/s), S1 two of 1000 (~630
// kbit/s with S0), S2 four of 1000 (~1.6 Mbit/s in all); a keyframe when
// asked and every 3 s.
func svcPublish(t *testing.T, ctx context.Context, s *sfu.SFU) *atomicCounter {
	t.Helper()
	vp9 := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP9, ClockRate: 90000, SDPFmtpLine: "profile-id=0"}
	return layeredPublish(t, ctx, s, vp9, 40000, func(i int, key bool, seq uint16) []*rtp.Packet {
		pkts := sfu.VP9Picture(i, key, seq, [3]int{1, 2, 4}, 1000)
		pkts[0].Payload = pkts[0].Payload[:600]
		return pkts
	})
}

// layeredPublish starts a pion publisher in s's room "class" of one video
// track of codec, whose pictures (30 a second, numbered from 0, RTP
// sequence numbers from seq) picture makes, and Opus; a keyframe every
// fourth picture when asked and every 3 s. It returns the publisher's
// count of keyframe requests.
func layeredPublish(t *testing.T, ctx context.Context, s *sfu.SFU, codec webrtc.RTPCodecCapability, seq uint16, picture func(i int, key bool, seq uint16) []*rtp.Packet) *atomicCounter {
	t.Helper()
	pc := loopPeer(t)
	video, err := webrtc.NewTrackLocalStaticRTP(codec, "video", "teacher")
	if err != nil {
		t.Fatal(err)
	}
	vtr, err := pc.AddTransceiverFromTrack(video, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		t.Fatal(err)
	}
	audio, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "teacher")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(audio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	_, answer, err := s.Publish(ctx, "class", string(mediatest.Offer(t, ctx, pc)))
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	needKey, plis := &atomicCounter{}, &atomicCounter{}
	go func() {
		for {
			pkts, _, err := vtr.Sender().ReadRTCP()
			if err != nil {
				return
			}
			for _, p := range pkts {
				switch p.(type) {
				case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
					needKey.set()
					plis.add()
				}
			}
		}
	}()
	go func() {
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		var lastKey time.Time
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			key := false
			if i%4 == 0 && (needKey.take() || time.Since(lastKey) > 3*time.Second) {
				key, lastKey = true, time.Now()
			}
			for _, p := range picture(i, key, seq) {
				_ = video.WriteRTP(p)
				seq++
			}
			_ = audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(i) * 1600}, Payload: []byte{0xfc, 1, 2, 3}})
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for s.RoomStats("class").Tracks < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	return plis
}

// svcSubscribe subscribes a pion peer to s's room "class" (held at its
// lowest layer when low) and watches what it receives.
func svcSubscribe(t *testing.T, ctx context.Context, s *sfu.SFU, low bool) *svcWatcher {
	t.Helper()
	sub := loopPeer(t)
	w := &svcWatcher{}
	w.watch(t, sub)
	ss, answer, err := s.Subscribe(ctx, "class", string(mediatest.Offer(t, ctx, sub)))
	if err != nil {
		t.Fatal(err)
	}
	if low {
		ss.SetHoldLow(func(string) bool { return true })
	}
	if err := sub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	return w
}

// The cascade: a downstream edge pulls the lesson from the upstream one
// (a subscriber there, whose layers the upstream chooses by that link)
// and relays it as its own publisher; its classrooms then choose among the
// SVC layers that arrive. On loopback the pull climbs to the top; the
// downstream's held-low classroom gets spatial layer 0 only, its other
// classroom all three, each gap-free with the marker where it belongs.
func TestVP9SVCThroughCascade(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	up, err := sfu.New(sfu.Config{ICEAddrs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	down, err := sfu.New(sfu.Config{ICEAddrs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	svcPublish(t, ctx, up)
	time.Sleep(1200 * time.Millisecond)

	pull := loopPeer(t)
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pull.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	relay, err := down.Relay("class", sfu.SourceMaster, pull)
	if err != nil {
		t.Fatal(err)
	}
	relay.Expect(2)
	_, answer, err := up.Subscribe(ctx, "class", string(mediatest.Offer(t, ctx, pull)))
	if err != nil {
		t.Fatal(err)
	}
	if err := pull.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for down.RoomStats("class").Tracks < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1200 * time.Millisecond)
	low, full := svcSubscribe(t, ctx, down, true), svcSubscribe(t, ctx, down, false)
	// Two climbs, the pull's and then the classroom's: ~8 s on loopback,
	// allow 40 on a loaded machine.
	climbed := false
	for end := time.Now().Add(40 * time.Second); time.Now().Before(end) && !climbed; {
		time.Sleep(250 * time.Millisecond)
		_, perS, _, _, _ := full.snapshot()
		climbed = perS[2] > 0
		full.reset()
	}
	if !climbed {
		t.Fatalf("the downstream classroom got no packet of spatial layer 2 within 40 s (upstream links %+v, downstream %+v)", up.Links("class"), down.Links("class"))
	}
	full.reset()
	low.reset()
	time.Sleep(2 * time.Second)
	lp, lowS, lowT, lowGaps, lowBad := low.snapshot()
	fp, fullS, fullT, fullGaps, fullBad := full.snapshot()
	t.Logf("downstream held low: %d packets, per spatial layer %v, per temporal %v, holes %d, misplaced markers %d", lp, lowS, lowT, lowGaps, lowBad)
	t.Logf("downstream full: %d packets, per spatial layer %v, per temporal %v, holes %d, misplaced markers %d", fp, fullS, fullT, fullGaps, fullBad)
	if lp == 0 || lowS[1] != 0 || lowS[2] != 0 || lowT[2] != 0 {
		t.Errorf("downstream held low: per spatial layer %v, per temporal %v; want only S0 at T0–T1", lowS, lowT)
	}
	if fullS[0] == 0 || fullS[1] == 0 || fullS[2] == 0 {
		t.Errorf("downstream full: per spatial layer %v; want all three", fullS)
	}
	if lowGaps != 0 || fullGaps != 0 || lowBad != 0 || fullBad != 0 {
		t.Errorf("downstream: holes %d / %d, misplaced markers %d / %d (held low / full)", lowGaps, fullGaps, lowBad, fullBad)
	}
}
