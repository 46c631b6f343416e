package sfu

import (
	"testing"
	"time"

	"github.com/pion/rtp"
)

// vp9Pic describes one picture of a test VP9 SVC stream.
type vp9Pic struct {
	key  bool
	tid  uint8
	u    bool
	tl0  uint8
	id   uint16
	ts   uint32
	npkt [3]int // packets of each spatial layer's frame
	ns   int    // spatial layers sent
}

// vp9Descriptor builds a VP9 payload descriptor byte by byte (RFC 9628
// §4.2, non-flexible mode: I with a 15-bit picture id, L with TL0PICIDX,
// and on a keyframe's first packet V with the scalability structure:
// N_S, Y with each layer's size, G with a 4-picture group T0 T2 T1 T2).
func vp9Descriptor(pic vp9Pic, sid int, b, e bool) []byte {
	var h byte = 0x80 | 0x20 // I, L
	if !pic.key {
		h |= 0x40 // P: predicted from an earlier picture
	}
	if b {
		h |= 0x08
	}
	if e {
		h |= 0x04
	}
	ss := pic.key && sid == 0 && b
	if ss {
		h |= 0x02 // V
	}
	out := []byte{h, 0x80 | byte(pic.id>>8)&0x7f, byte(pic.id)}
	l := pic.tid<<5 | byte(sid)<<1
	if pic.u {
		l |= 0x10
	}
	if pic.key && sid > 0 {
		l |= 0x01 // D: predicted from the layer below
	}
	out = append(out, l, pic.tl0)
	if ss {
		out = append(out, byte(pic.ns-1)<<5|0x10|0x08) // N_S, Y, G
		for s := range pic.ns {
			w, ht := 320<<s, 180<<s
			out = append(out, byte(w>>8), byte(w), byte(ht>>8), byte(ht))
		}
		out = append(out, 4) // N_G
		for _, t := range []byte{0, 2, 1, 2} {
			out = append(out, t<<5|0x10|1<<2, 1) // T, U, R=1, P_DIFF 1
		}
	}
	return out
}

// vp9Picture makes picture i of an L3T3 stream from sequence number seq:
// temporal pattern T0 T2 T1 T2 (only T0 pictures are switching-up points,
// so a temporal switch up waits for one), npkt[s] packets of size bytes
// for spatial layer s, the marker on the last packet of the top spatial
// layer.
func vp9Picture(i int, key bool, seq uint16, npkt [3]int, size int) []*rtp.Packet {
	var out []*rtp.Packet
	tid := []uint8{0, 2, 1, 2}[i%4]
	pic := vp9Pic{key: key, tid: tid, u: tid == 0, tl0: uint8(i / 4), id: uint16(100 + i), ts: uint32(3000 * i), npkt: npkt, ns: 3}
	for sid := range 3 {
		for k := range pic.npkt[sid] {
			b, e := k == 0, k == pic.npkt[sid]-1
			payload := append(vp9Descriptor(pic, sid, b, e), byte(i), byte(sid), byte(k))
			payload = append(payload, make([]byte, max(0, size-len(payload)))...)
			out = append(out, &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 98, SequenceNumber: seq, Timestamp: pic.ts,
				SSRC: 1234, Marker: sid == 2 && e}, Payload: payload})
			seq++
		}
	}
	return out
}

// VP9Picture is vp9Picture for the package's external tests.
var VP9Picture = vp9Picture

// vp9Stream makes n pictures (vp9Picture) from sequence number seq, a
// keyframe at every picture index in keys, 1, 2 and 3 packets of the
// three spatial layers.
func vp9Stream(seq uint16, n int, keys map[int]bool) []*rtp.Packet {
	var out []*rtp.Packet
	for i := range n {
		p := vp9Picture(i, keys[i], seq, [3]int{1, 2, 3}, 0)
		seq += uint16(len(p))
		out = append(out, p...)
	}
	return out
}

// run feeds pkts through x with target ts/tt and returns what it sends.
func run(x *svcSub, pkts []*rtp.Packet, ts, tt int) []*rtp.Packet {
	var out []*rtp.Packet
	for _, p := range pkts {
		if o, ok := x.filter(p, parseVP9(p.Payload), ts, tt, 3, false); ok {
			out = append(out, o)
		}
	}
	return out
}

// checkStream checks that pkts are numbered without a gap and that the
// marker is on exactly the last packet of each picture.
func checkStream(t *testing.T, pkts []*rtp.Packet) {
	t.Helper()
	for i, p := range pkts {
		if i > 0 && p.SequenceNumber != pkts[i-1].SequenceNumber+1 {
			t.Fatalf("packet %d: sequence number %d after %d: a gap", i, p.SequenceNumber, pkts[i-1].SequenceNumber)
		}
		last := i == len(pkts)-1 || pkts[i+1].Timestamp != p.Timestamp
		if p.Marker != last {
			t.Fatalf("packet %d (ts %d, sid %d): marker %v, want %v (the last of its picture)", i, p.Timestamp, parseVP9(p.Payload).sid, p.Marker, last)
		}
	}
}

func layersOf(pkts []*rtp.Packet) (maxS, maxT int) {
	maxS, maxT = -1, -1
	for _, p := range pkts {
		d := parseVP9(p.Payload)
		maxS, maxT = max(maxS, int(d.sid)), max(maxT, int(d.tid))
	}
	return maxS, maxT
}

func TestParseVP9Descriptor(t *testing.T) {
	pic := vp9Pic{key: true, tid: 0, u: true, id: 300, ns: 3}
	d := parseVP9(append(vp9Descriptor(pic, 0, true, false), 0xaa))
	if !d.ok || !d.layered || d.p || !d.b || d.e || !d.u || d.sid != 0 || d.tid != 0 || d.ns != 3 || !d.keyframe() {
		t.Fatalf("keyframe descriptor: %+v", d)
	}
	if len(d.widths) != 3 || d.widths[2] != 1280 || d.height[2] != 720 {
		t.Fatalf("layer sizes %v × %v", d.widths, d.height)
	}
	d = parseVP9(vp9Descriptor(vp9Pic{tid: 2, id: 301}, 1, false, true))
	if !d.ok || !d.p || d.b || !d.e || d.sid != 1 || d.tid != 2 || d.keyframe() {
		t.Fatalf("delta descriptor: %+v", d)
	}
	if d := parseVP9([]byte{0x80 | 0x20}); d.ok {
		t.Fatalf("a truncated descriptor parsed: %+v", d)
	}
}

// A subscriber held at S0 T0 gets only the base layer's T0 pictures, from
// the first keyframe, numbered without gaps, each packet marked as the end
// of its picture; one at S1 T2 gets the two lower spatial layers at the
// full frame rate, the marker on the end of spatial layer 1.
func TestSVCFilterKeepsTargetLayers(t *testing.T) {
	pkts := vp9Stream(65500, 40, map[int]bool{4: true}) // wraps the sequence number
	for _, tc := range []struct {
		ts, tt       int
		wantS, wantT int
		perPic       int // packets per kept picture
		pics         int
	}{
		{0, 0, 0, 0, 1, 9},  // T0 pictures from index 4: 4, 8, …, 36
		{1, 2, 1, 2, 3, 36}, // every picture from the keyframe
		{2, 2, 2, 2, 6, 36},
	} {
		var x svcSub
		out := run(&x, pkts, tc.ts, tc.tt)
		if len(out) != tc.perPic*tc.pics {
			t.Fatalf("target S%dT%d: %d packets, want %d", tc.ts, tc.tt, len(out), tc.perPic*tc.pics)
		}
		if d := parseVP9(out[0].Payload); !d.keyframe() {
			t.Errorf("target S%dT%d: the first packet sent is not a keyframe's: %+v", tc.ts, tc.tt, d)
		}
		if s, tl := layersOf(out); s != tc.wantS || tl != tc.wantT {
			t.Errorf("target S%dT%d: sent layers up to S%dT%d", tc.ts, tc.tt, s, tl)
		}
		checkStream(t, out)
	}
}

// Up a spatial layer waits for a keyframe; down happens at the next
// picture. Up a temporal layer waits for a T0 picture (the switching-up
// point); down at the next picture.
func TestSVCFilterSwitchPoints(t *testing.T) {
	pkts := vp9Stream(1000, 48, map[int]bool{0: true, 24: true})
	var x svcSub
	var out []*rtp.Packet
	feed := func(from, to, ts, tt int) []*rtp.Packet {
		var got []*rtp.Packet
		for _, p := range pkts[from*6 : to*6] {
			if o, ok := x.filter(p, parseVP9(p.Payload), ts, tt, 3, false); ok {
				got = append(got, o)
			}
		}
		out = append(out, got...)
		return got
	}
	feed(0, 6, 0, 2)
	// Target S2 from picture 6: no packet above S0 until the keyframe at 24.
	if s, _ := layersOf(feed(6, 24, 2, 2)); s != 0 {
		t.Fatalf("spatial layer %d before the keyframe", s)
	}
	if s, _ := x.at(); s != 0 {
		t.Fatalf("at S%d before the keyframe", s)
	}
	got := feed(24, 25, 2, 2)
	if s, _ := layersOf(got); s != 2 || len(got) != 6 {
		t.Fatalf("at the keyframe: %d packets up to S%d, want 6 up to S2", len(got), s)
	}
	got = feed(25, 26, 2, 2)
	if len(got) != 6 {
		t.Fatalf("picture 25: %d packets", len(got))
	}
	// Down to S1 and T0 from picture 26: at once.
	got = feed(26, 28, 1, 0) // pictures 26 (T1) and 27 (T2): dropped at T0
	if len(got) != 0 {
		t.Fatalf("T0 target: %d packets of T1/T2 pictures", len(got))
	}
	got = feed(28, 29, 1, 0) // T0
	if s, tl := layersOf(got); s != 1 || tl != 0 || len(got) != 3 {
		t.Fatalf("picture 28 at S1T0: %d packets up to S%dT%d", len(got), s, tl)
	}
	// Up to T2 at picture 29 (a T2 picture, no switching point): nothing
	// until picture 32 (T0).
	if got = feed(29, 32, 1, 2); len(got) != 0 {
		t.Fatalf("temporal up before a switching point: %d packets", len(got))
	}
	if got = feed(32, 36, 1, 2); len(got) != 4*3 {
		t.Fatalf("from the T0 picture: %d packets, want 12 (four pictures at S1)", len(got))
	}
	checkStream(t, out)
}

// A retransmitted packet (late, after later ones) gets the number it
// would have had; a late packet of a dropped layer is not sent.
func TestSVCFilterLatePackets(t *testing.T) {
	pkts := vp9Stream(200, 12, map[int]bool{0: true})
	var x svcSub
	// Picture 4's S1 frame (two packets) arrives after picture 5.
	late := pkts[4*6+1 : 4*6+3]
	var order []*rtp.Packet
	order = append(order, pkts[:4*6+1]...)
	order = append(order, pkts[4*6+3:6*6]...)
	order = append(order, late...)
	order = append(order, pkts[34], pkts[31]) // duplicates: of picture 5's S2 (dropped) and S1
	got := map[uint16]uint16{}                // publisher's number → subscriber's
	for _, p := range order {
		if o, ok := x.filter(p, parseVP9(p.Payload), 1, 2, 3, false); ok {
			got[p.SequenceNumber] = o.SequenceNumber
		}
	}
	var ref svcSub
	want := map[uint16]uint16{}
	for _, p := range pkts[:6*6] {
		if o, ok := ref.filter(p, parseVP9(p.Payload), 1, 2, 3, false); ok {
			want[p.SequenceNumber] = o.SequenceNumber
		}
	}
	if len(got) != len(want) {
		t.Fatalf("sent %d packets, want %d", len(got), len(want))
	}
	for in, o := range want {
		if got[in] != o {
			t.Errorf("publisher's %d sent as %d, in order it is %d", in, got[in], o)
		}
	}
}

// While the video is paused nothing is sent; after, the subscriber starts
// again at a keyframe, its numbering continuing without a gap.
func TestSVCFilterPauseRestartsAtKeyframe(t *testing.T) {
	pkts := vp9Stream(5, 30, map[int]bool{0: true, 20: true})
	var x svcSub
	var out []*rtp.Packet
	for i, p := range pkts {
		paused := i >= 6*6 && i < 10*6
		if o, ok := x.filter(p, parseVP9(p.Payload), 0, 2, 3, paused); ok {
			if i >= 6*6 && i < 20*6 {
				t.Fatalf("packet %d of picture %d sent while paused or before the next keyframe", i, i/6)
			}
			out = append(out, o)
		}
	}
	if len(out) != 6+10 {
		t.Fatalf("%d packets, want 16 (S0 of pictures 0–5 and 20–29)", len(out))
	}
	checkStream(t, out)
}

// The layers the chooser sees are measured from the packets: the base
// layer at half rate, then each spatial layer, each dearer than the one
// before.
func TestSVCLayersMeasured(t *testing.T) {
	v := &svcTrack{base: &forwarder{}}
	v.base.svc = v
	pkts := vp9Stream(0, 60, map[int]bool{0: true})
	start := time.Now().Add(-2 * time.Second)
	for i, p := range pkts {
		v.observe(p, start.Add(time.Duration(i/6)*33*time.Millisecond))
	}
	ls := v.layers()
	var names []string
	for _, f := range ls {
		names = append(names, f.rid)
	}
	if len(ls) != 4 || names[0] != "s0t1" || names[1] != "s0t2" || names[2] != "s1t2" || names[3] != "s2t2" {
		t.Fatalf("layers %v, want s0t1 s0t2 s1t2 s2t2", names)
	}
	for i := 1; i < len(ls); i++ {
		if ls[i].bitrate.Load() <= ls[i-1].bitrate.Load() {
			t.Errorf("layer %s: %d bit/s, not above %s's %d", ls[i].rid, ls[i].bitrate.Load(), ls[i-1].rid, ls[i-1].bitrate.Load())
		}
	}
	if px := ls[3].pixels.Load(); px != 1280*720 && px != 0 {
		t.Errorf("top layer pixels %d", px)
	}
	// Sizes come from the keyframe's scalability structure, which came
	// before the layers were made: each layer still knows its own (the
	// cascade panel and the teacher's weak-link mark show it).
	for i, want := range [][2]int{{320, 180}, {320, 180}, {640, 360}, {1280, 720}} {
		if w, h := ls[i].keyframeSize(); w != want[0] || h != want[1] {
			t.Errorf("layer %s: picture %d×%d, want %d×%d", ls[i].rid, w, h, want[0], want[1])
		}
	}
	if ls[2].real() != v.base || ls[2].layer.s != 1 {
		t.Errorf("a layer's forwarder: %+v", ls[2].layer)
	}
}

// FuzzVP9Filter feeds arbitrary payloads and sequence numbers through the
// descriptor parser and a subscriber's filter: no panic, nothing above the
// target layers is sent.
func FuzzVP9Filter(f *testing.F) {
	for _, p := range vp9Stream(0, 8, map[int]bool{0: true})[:12] {
		f.Add(p.Payload, p.SequenceNumber, uint8(1), uint8(1))
	}
	f.Add([]byte{0xff, 0xff, 0xff}, uint16(7), uint8(2), uint8(2))
	f.Add([]byte{0x2a, 0xe0, 0x00, 0xff}, uint16(65535), uint8(0), uint8(0))
	f.Fuzz(func(t *testing.T, payload []byte, seq uint16, ts, tt uint8) {
		var x svcSub
		// A keyframe first, so later packets are judged by layer.
		key := vp9Stream(seq-7, 1, map[int]bool{0: true})
		for _, p := range key {
			x.filter(p, parseVP9(p.Payload), int(ts%3), int(tt%3), 3, false)
		}
		for i := range 3 {
			p := &rtp.Packet{Header: rtp.Header{SequenceNumber: seq + uint16(i*300), Timestamp: uint32(i)}, Payload: payload}
			d := parseVP9(payload)
			o, ok := x.filter(p, d, int(ts%3), int(tt%3), 3, false)
			if ok && d.layered && (int(d.sid) > int(ts%3) || int(d.tid) > int(tt%3)) {
				t.Fatalf("sent S%dT%d above target S%dT%d", d.sid, d.tid, ts%3, tt%3)
			}
			if ok && o == nil {
				t.Fatal("kept a nil packet")
			}
		}
	})
}

// BenchmarkSVCFilter is the per-subscriber cost of one packet of an L3T3
// stream (its descriptor parsed, as the forwarder does once per packet for
// all subscribers, and one subscriber's filter), for a subscriber on the
// lowest and on the top layers.
func BenchmarkSVCFilter(b *testing.B) {
	pkts := vp9Stream(0, 240, map[int]bool{0: true, 120: true})
	for _, tc := range []struct {
		name   string
		ts, tt int
	}{{"S0T1", 0, 1}, {"S2T2", 2, 2}} {
		b.Run(tc.name, func(b *testing.B) {
			var x svcSub
			descs := make([]layerDesc, len(pkts))
			for i, p := range pkts {
				descs[i] = parseVP9(p.Payload)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				j := i % len(pkts)
				p := *pkts[j]
				p.SequenceNumber += uint16(i / len(pkts) * len(pkts))
				x.filter(&p, descs[j], tc.ts, tc.tt, 3, false)
			}
		})
	}
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			parseVP9(pkts[i%len(pkts)].Payload)
		}
	})
}
