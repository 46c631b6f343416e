package sfu

import (
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// A subscriber whose queue is full (it stopped reading) loses packets
// itself; the forwarder never blocks and the other subscriber gets all.
func TestFullQueueDropsOnlyForThatSubscriber(t *testing.T) {
	f := &forwarder{}
	f.list.Store(&[]*subTrack{})
	fast := &subTrack{fwd: f, q: make(chan qpkt, 4), prime: make(chan []*rtp.Packet, 1)}
	slow := &subTrack{fwd: f, q: make(chan qpkt, 4), prime: make(chan []*rtp.Packet, 1)} // nobody drains it
	f.add(fast)
	f.add(slow)

	ack := make(chan uint16)
	go func() {
		for p := range fast.q {
			ack <- p.pkt.SequenceNumber
		}
	}()
	const n = 1000
	start := time.Now()
	for i := range n {
		pkt := &rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(i)}}
		for _, s := range f.subs() {
			s.offerFrom(f, pkt)
		}
		select {
		case got := <-ack:
			if got != uint16(i) {
				t.Fatalf("fast subscriber got %d, want %d", got, i)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("fast subscriber stuck at packet %d", i)
		}
	}
	close(fast.q)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("forwarding took %v", d)
	}
	if fast.sent.Load() != n || fast.dropped.Load() != 0 {
		t.Errorf("fast: sent %d dropped %d", fast.sent.Load(), fast.dropped.Load())
	}
	if slow.sent.Load() != 4 || slow.dropped.Load() != n-4 {
		t.Errorf("slow: sent %d dropped %d, want 4 and %d", slow.sent.Load(), slow.dropped.Load(), n-4)
	}

	f.remove(slow)
	if subs := f.subs(); len(subs) != 1 || subs[0] != fast {
		t.Errorf("after remove: %v", subs)
	}
}

func TestICEAddrsForListen(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:0":   "127.0.0.1",
		"[::1]:8080":    "::1",
		":8080":         "",
		"0.0.0.0:8080":  "",
		"[::]:8080":     "",
		"example:8080":  "",
		"garbage":       "",
		"10.1.2.3:8080": "10.1.2.3",
	} {
		got := ICEAddrsForListen(listen)
		switch {
		case want == "" && len(got) != 0:
			t.Errorf("%s: %v, want all addresses", listen, got)
		case want != "" && (len(got) != 1 || !got[0].Equal(net.ParseIP(want))):
			t.Errorf("%s: %v, want %s", listen, got, want)
		}
	}
}

func TestHighProfile(t *testing.T) {
	for fmtp, want := range map[string]bool{
		"level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f": false,
		"profile-level-id=4d001f;packetization-mode=1":                           false,
		"packetization-mode=1;profile-level-id=64001f":                           true,
		"packetization-mode=1":                                                   false,
		"":                                                                       false,
	} {
		if got := highProfile(fmtp); got != want {
			t.Errorf("highProfile(%q) = %v, want %v", fmtp, got, want)
		}
	}
}

func TestOffersProfile(t *testing.T) {
	sdp := "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
	if !offersProfile(sdp, "42") || offersProfile(sdp, "64") {
		t.Error("offersProfile misreads the fmtp line")
	}
	if offersProfile("a=fmtp:", "42") {
		t.Error("offersProfile on a bare fmtp line")
	}
}

func TestKeyframeDetection(t *testing.T) {
	cases := []struct {
		name string
		mime string
		p    []byte
		want bool
	}{
		{"vp8 key", "video/VP8", []byte{0x10, 0x00, 0x9d}, true},
		{"vp8 delta", "video/VP8", []byte{0x10, 0x01, 0x9d}, false},
		{"vp8 continuation", "video/VP8", []byte{0x00, 0x00}, false},
		{"vp8 key, 15-bit picture id", "video/VP8", []byte{0x90, 0x80, 0x81, 0x23, 0x00}, true},
		{"vp8 delta, 7-bit picture id + tl0 + tid", "video/VP8", []byte{0x90, 0xe0, 0x11, 0x05, 0x40, 0x01}, false},
		{"vp8 truncated", "video/VP8", []byte{0x90}, false},
		{"h264 idr", "video/H264", []byte{0x65, 0x88}, true},
		{"h264 sps", "video/H264", []byte{0x67, 0x42}, true},
		{"h264 p slice", "video/H264", []byte{0x41, 0x9a}, false},
		{"h264 stap-a sps+pps", "video/H264", []byte{0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce}, true},
		{"h264 stap-a bad size", "video/H264", []byte{0x78, 0x00, 0x09, 0x67}, false},
		{"h264 fu-a idr start", "video/H264", []byte{0x7c, 0x85, 0x00}, true},
		{"h264 fu-a idr middle", "video/H264", []byte{0x7c, 0x05, 0x00}, false},
		{"vp9 never", "video/VP9", []byte{0x00}, false},
		{"empty", "video/VP8", nil, false},
	}
	for _, c := range cases {
		if got := isKeyframeStart(c.p, c.mime); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestGOPCache(t *testing.T) {
	var g gopCache
	pkt := func(ts uint32, key bool) *rtp.Packet {
		b := byte(0x01)
		if key {
			b = 0x00
		}
		return &rtp.Packet{Header: rtp.Header{Timestamp: ts}, Payload: []byte{0x10, b}}
	}
	g.push(pkt(1, false), "video/VP8") // before any keyframe: not cached
	if len(g.pkts) != 0 {
		t.Fatal("cached a delta frame with no keyframe")
	}
	g.push(pkt(2, true), "video/VP8")
	g.push(pkt(2, true), "video/VP8") // second packet of the same keyframe
	g.push(pkt(3, false), "video/VP8")
	if len(g.pkts) != 3 {
		t.Fatalf("cache has %d packets, want 3", len(g.pkts))
	}
	g.push(pkt(4, true), "video/VP8") // a new keyframe starts over
	if len(g.pkts) != 1 || g.pkts[0].Timestamp != 4 {
		t.Fatalf("cache after a new keyframe: %d packets", len(g.pkts))
	}
	for range maxGOPPackets {
		g.push(pkt(5, false), "video/VP8")
	}
	if g.valid || len(g.pkts) != 0 {
		t.Error("an overlong GOP is still cached")
	}
}

// layeredTrack is a subscriber track on a group of layers with these
// bitrates (lowest first), taking layer cur, of publisher p under id.
func layeredTrack(p *Publisher, id string, cur int, rates ...int64) *subTrack {
	g := &layerGroup{}
	for _, r := range rates {
		f := &forwarder{pub: p, grp: g, id: id}
		f.bitrate.Store(r)
		f.lastAt.Store(time.Now().UnixNano())
		g.fwds = append(g.fwds, f)
	}
	t := &subTrack{fwd: g.fwds[0]}
	t.cur.Store(g.fwds[cur])
	return t
}

// On a thin link the screen share's layer is paid for first: with a
// 1.6 Mbit/s budget its 1.2 Mbit/s layer is kept and the camera gets
// what is left (its lowest layer); without the screen marked, the two
// share equally, and the screen could not keep its layer.
func TestSplitGivesScreenShareBudgetFirst(t *testing.T) {
	p := &Publisher{}
	camera := layeredTrack(p, "cam", 1, 150_000, 500_000, 1_500_000)
	screen := layeredTrack(p, "scr", 1, 300_000, 1_200_000)
	c := &chooser{budget: 1_600_000}
	s := &Subscriber{}
	video := []*subTrack{camera, screen}

	equal := s.split(c, video, video)
	if equal[0].budget != equal[1].budget || equal[1].budget >= layerKeep*1_200_000 {
		t.Fatalf("no screen marked: shares %+v, want equal ones too small for the screen's top layer", equal)
	}

	p.SetScreens([]string{"scr"})
	if !screen.screen() || camera.screen() {
		t.Fatal("SetScreens did not mark the screen track alone")
	}
	got := s.split(c, video, video)
	if got[1].budget < 1_200_000*layerHeadroom {
		t.Errorf("screen's share %v bits/s: does not keep its 1.2 Mbit/s layer", got[1].budget)
	}
	if got[0].budget >= 500_000*layerKeep {
		t.Errorf("camera's share %v bits/s: the camera should go to its lowest layer", got[0].budget)
	}
	if got[0].budget < 150_000*layerHeadroom {
		t.Errorf("camera's share %v bits/s: not even its lowest layer", got[0].budget)
	}
	if got[0].others != 1_200_000 || got[1].others != 500_000 {
		t.Errorf("others while probing: %+v", got)
	}

	// Video without layers (a classroom on stage) is paid for before
	// any layer is chosen.
	single := &subTrack{fwd: &forwarder{}}
	single.fwd.bitrate.Store(400_000)
	single.cur.Store(single.fwd)
	all := append(video, single)
	less := s.split(c, all, video)
	if d := got[1].budget - less[1].budget; d != 400_000 {
		t.Errorf("a single-layer video of 400 kbit/s lowered the screen's share by %v", d)
	}
}

// vp8Key is the first packet of a VP8 keyframe of w×h: payload
// descriptor (S set, with the X byte and a 15-bit picture id when ext),
// frame tag, start code, size.
func vp8Key(w, h int, ext bool) []byte {
	p := []byte{0x10}
	if ext {
		p = []byte{0x90, 0x80, 0x81, 0x23}
	}
	return append(p, 0x50, 0x09, 0x00, 0x9d, 0x01, 0x2a, byte(w), byte(w>>8), byte(h), byte(h>>8), 0, 0)
}

// A VP8 keyframe states its size; anything else states none.
func TestVP8Size(t *testing.T) {
	for _, ext := range []bool{false, true} {
		if w, h := vp8Size(vp8Key(1280, 720, ext)); w != 1280 || h != 720 {
			t.Errorf("ext=%v: %dx%d, want 1280x720", ext, w, h)
		}
	}
	delta := vp8Key(640, 360, false)
	delta[1] |= 1 // P bit: an interframe
	for name, p := range map[string][]byte{"interframe": delta, "empty": nil, "short": vp8Key(320, 180, false)[:8], "not first": {0x00, 0x50, 0x09}} {
		if w, h := vp8Size(p); w != 0 || h != 0 {
			t.Errorf("%s: %dx%d, want none", name, w, h)
		}
	}
}

func FuzzVP8Size(f *testing.F) {
	f.Add(vp8Key(1280, 720, false))
	f.Add(vp8Key(320, 180, true))
	f.Add([]byte{0x90, 0x80})
	f.Fuzz(func(t *testing.T, p []byte) {
		w, h := vp8Size(p)
		if w < 0 || w >= 1<<14 || h < 0 || h >= 1<<14 {
			t.Fatalf("size %dx%d out of VP8's 14 bits", w, h)
		}
	})
}

// Layers are ordered by picture size once each has shown a keyframe, even
// when the top one sends less for a while (a browser short of CPU).
func TestLayersOrderedByPictureSize(t *testing.T) {
	g := &layerGroup{}
	for _, l := range []struct {
		px, rate int64
	}{{1280 * 720, 90_000}, {320 * 180, 150_000}, {640 * 360, 500_000}} {
		f := &forwarder{grp: g}
		f.pixels.Store(l.px)
		f.bitrate.Store(l.rate)
		f.lastAt.Store(time.Now().UnixNano())
		g.fwds = append(g.fwds, f)
	}
	ls := g.layers()
	if ls[0].pixels.Load() != 320*180 || ls[2].pixels.Load() != 1280*720 {
		t.Errorf("order by size: %d, %d, %d", ls[0].pixels.Load(), ls[1].pixels.Load(), ls[2].pixels.Load())
	}
	g.fwds[1].pixels.Store(0) // one not seen yet: by bitrate
	if ls := g.layers(); ls[0] != g.fwds[0] {
		t.Errorf("without every size the lowest bitrate comes first")
	}
}

// With laneMin or more subscribers the forwarder shares the writing with
// helper lanes: every subscriber, in whichever lane, gets every packet
// written once, directly (nothing queued, nothing dropped).
func TestFanOutLanesReachEverySubscriber(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0))))
	f := &forwarder{audio: true}
	f.list.Store(&[]*subTrack{})
	const n, pkts = 3 * laneMin, 500
	txs := make([]atomic.Uint64, n)
	lanes := map[uint32]int{}
	for i := range n {
		local, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "a", "s")
		if err != nil {
			t.Fatal(err)
		}
		st := &subTrack{fwd: f, local: local, q: make(chan qpkt, 4), prime: make(chan []*rtp.Packet, 1), tx: &txs[i], lane: uint32(i)}
		st.primed.Store(true)
		f.add(st)
		lanes[st.lane%uint32(min(runtime.GOMAXPROCS(0), maxLanes))]++
	}
	if len(lanes) < 2 {
		t.Fatalf("lanes %v: the test needs subscribers in more than one", lanes)
	}
	ls := f.startLanes()
	payload := make([]byte, 100)
	for i := range pkts {
		f.fanOut(ls, &rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(i)}, Payload: payload}, f.subs())
	}
	for _, ch := range ls {
		close(ch)
	}
	want := uint64(pkts * (len(payload) + 12 + wireOverhead))
	deadline := time.Now().Add(5 * time.Second)
	for i, st := range f.subs() {
		for txs[i].Load() < want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := txs[i].Load(); got != want || st.dropped.Load() != 0 || len(st.q) != 0 {
			t.Errorf("subscriber %d (lane %d): %d bytes written, want %d; %d dropped, %d queued", i, st.lane, got, want, st.dropped.Load(), len(st.q))
		}
	}
}

// Back below laneMin subscribers, the forwarder keeps handing packets to
// the helper lanes while they still hold earlier ones, so a subscriber of
// a helper's lane never gets a new packet before an older one; once the
// helpers are done it writes directly again.
func TestFanOutStaysOnLanesUntilTheyDrain(t *testing.T) {
	f := &forwarder{audio: true}
	f.list.Store(&[]*subTrack{})
	for i := range 3 { // fewer than laneMin
		local, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "a", "s")
		if err != nil {
			t.Fatal(err)
		}
		st := &subTrack{fwd: f, local: local, q: make(chan qpkt, 4), prime: make(chan []*rtp.Packet, 1), tx: &atomic.Uint64{}, lane: uint32(i)}
		st.primed.Store(true)
		f.add(st)
	}
	lane := make(chan laneItem, 4) // a helper lane whose helper has not run yet
	pkt := func(seq uint16) *rtp.Packet {
		return &rtp.Packet{Header: rtp.Header{SequenceNumber: seq}, Payload: make([]byte, 10)}
	}
	f.lanePending.Store(1) // the helper still holds a packet
	f.fanOut([]chan laneItem{lane}, pkt(1), f.subs())
	if len(lane) != 1 || f.lanePending.Load() != 2 {
		t.Fatalf("with the helper behind: %d packets queued for it, %d pending; want 1 and 2", len(lane), f.lanePending.Load())
	}
	f.lanePending.Store(0) // the helper is done
	f.fanOut([]chan laneItem{lane}, pkt(2), f.subs())
	if len(lane) != 1 || f.lanePending.Load() != 0 {
		t.Errorf("with the helper done: %d packets queued for it, %d pending; want the direct write (1, 0)", len(lane), f.lanePending.Load())
	}
	for _, st := range f.subs() {
		if st.tx.Load() == 0 {
			t.Errorf("subscriber in lane %d: nothing written directly", st.lane)
		}
	}
}
