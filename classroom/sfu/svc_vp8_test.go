package sfu

import (
	"bytes"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// vp8Pic describes one picture of a test VP8 stream with temporal layers.
type vp8Pic struct {
	key      bool
	tid      uint8
	y        bool
	id       uint16 // picture ID, 15 bits
	tl0      uint8
	temporal bool // T (and L, I) present
}

// vp8Descriptor builds a VP8 payload descriptor byte by byte (RFC 7741
// §4.2): X, S (first packet of the frame), PID 0; I with a 15-bit picture
// ID (M set), L with TL0PICIDX, T with TID and Y; then the first byte of
// the VP8 payload header, whose lowest bit (P) is clear on a keyframe.
func vp8Descriptor(p vp8Pic, first bool) []byte {
	b0 := byte(0x80) // X
	if first {
		b0 |= 0x10 // S, partition 0
	}
	if !p.temporal {
		out := []byte{b0 &^ 0x80}
		return append(out, vp8Tag(p, first))
	}
	out := []byte{b0, 0x80 | 0x40 | 0x20, 0x80 | byte(p.id>>8), byte(p.id), p.tl0}
	tb := p.tid << 6
	if p.y {
		tb |= 0x20
	}
	out = append(out, tb)
	return append(out, vp8Tag(p, first))
}

// vp8Tag is the first byte after the descriptor: a frame tag on the
// frame's first packet, with P clear on a keyframe.
func vp8Tag(p vp8Pic, first bool) byte {
	if first && p.key {
		return 0x10
	}
	return 0x11
}

// vp8Stream returns n pictures of an L1T3 stream (TIDs 0,2,1,2, …; two
// packets each, the marker on the second), a keyframe first; sync names
// pictures with the Y bit.
func vp8Stream(seq uint16, n int, temporal bool, sync map[int]bool) []*rtp.Packet {
	var out []*rtp.Packet
	tl0 := uint8(200)
	for i := range n {
		tid := [4]uint8{0, 2, 1, 2}[i%4]
		if tid == 0 && i > 0 {
			tl0++
		}
		p := vp8Pic{key: i == 0, tid: tid, y: sync[i], id: uint16(32760+i) & 0x7fff, tl0: tl0, temporal: temporal}
		for k := range 2 {
			out = append(out, &rtp.Packet{
				Header:  rtp.Header{SequenceNumber: seq, Timestamp: uint32(i * 3000), Marker: k == 1},
				Payload: append(vp8Descriptor(p, k == 0), byte(i), byte(k)),
			})
			seq++
		}
	}
	return out
}

// runVP8 feeds pkts through x with temporal target tt (from packet index
// from on; before it, before) and returns what it sends.
func runVP8(x *svcSub, pkts []*rtp.Packet, before, tt, from int) []*rtp.Packet {
	var out []*rtp.Packet
	for i, p := range pkts {
		target := tt
		if i < from {
			target = before
		}
		if o, ok := x.filter(p, parseVP8(p.Payload), 0, target, 1, false); ok {
			out = append(out, o)
		}
	}
	return out
}

// checkVP8 checks what a subscriber got: sequence numbers, picture IDs
// and TL0PICIDX continuous, the marker on each picture's last packet.
func checkVP8(t *testing.T, pkts []*rtp.Packet) {
	t.Helper()
	checkStream(t, pkts)
	var prev layerDesc
	for i, p := range pkts {
		d := parseVP8(p.Payload)
		if !d.ok || d.picLen != 2 || d.tl0At == 0 {
			t.Fatalf("packet %d: descriptor %+v", i, d)
		}
		if i > 0 && p.Timestamp != pkts[i-1].Timestamp {
			if d.pic != (prev.pic+1)&0x7fff {
				t.Fatalf("packet %d: picture ID %d after %d: not continuous", i, d.pic, prev.pic)
			}
			want := prev.tl0
			if d.tid == 0 {
				want++
			}
			if d.tl0 != want {
				t.Fatalf("packet %d (TID %d): TL0PICIDX %d after %d", i, d.tid, d.tl0, prev.tl0)
			}
		}
		prev = d
	}
}

func TestParseVP8(t *testing.T) {
	d := parseVP8(vp8Descriptor(vp8Pic{key: true, tid: 2, y: true, id: 0x1234, tl0: 9, temporal: true}, true))
	if !d.ok || !d.layered || d.tid != 2 || !d.y || d.pic != 0x1234 || d.picAt != 2 || d.picLen != 2 || d.tl0 != 9 || d.tl0At != 4 || !d.keyframe() {
		t.Fatalf("keyframe descriptor: %+v", d)
	}
	d = parseVP8(vp8Descriptor(vp8Pic{tid: 1, id: 5, temporal: true}, true))
	if d.keyframe() || d.y || d.tid != 1 {
		t.Fatalf("delta frame: %+v", d)
	}
	if d := parseVP8(vp8Descriptor(vp8Pic{key: true}, true)); !d.ok || d.layered || !d.keyframe() || d.picAt != 0 {
		t.Fatalf("without T: %+v", d)
	}
	// 7-bit picture ID, no L: TL0PICIDX absent.
	if d := parseVP8([]byte{0x90, 0xa0, 0x05, 0x40, 0x10}); !d.ok || d.picLen != 1 || d.pic != 5 || d.tl0At != 0 || d.tid != 1 {
		t.Fatalf("7-bit picture ID: %+v", d)
	}
	if d := parseVP8([]byte{0x80, 0x80}); d.ok {
		t.Fatalf("truncated descriptor parsed: %+v", d)
	}
}

// A subscriber held at T0 gets only the base layer's pictures, numbered
// and identified as if nothing were left out.
func TestVP8TemporalBaseOnly(t *testing.T) {
	pkts := vp8Stream(65500, 40, true, nil) // wraps the sequence number and the picture ID
	var x svcSub
	out := runVP8(&x, pkts, 0, 0, 0)
	if len(out) != 20 { // 10 of 40 pictures, 2 packets each
		t.Fatalf("%d packets sent, want 20", len(out))
	}
	for _, p := range out {
		if d := parseVP8(p.Payload); d.tid != 0 {
			t.Fatalf("TID %d sent to a subscriber at T0", d.tid)
		}
	}
	checkVP8(t, out)
	// The publisher's own packets are left as they were (shared with
	// every other subscriber).
	if d := parseVP8(pkts[8].Payload); d.pic != (32760+4)&0x7fff {
		t.Fatalf("publisher's picture ID changed to %d", d.pic)
	}
	// A subscriber taking every layer gets the stream as it is.
	var all svcSub
	out = runVP8(&all, pkts, 2, 2, 0)
	if len(out) != len(pkts) {
		t.Fatalf("%d of %d packets sent at T2", len(out), len(pkts))
	}
	for i := range out {
		if out[i] != pkts[i] {
			t.Fatalf("packet %d copied at T2, want the publisher's own", i)
		}
	}
}

// A subscriber moved up from T0 takes the higher layers at a switch
// point: a base-layer picture, or a picture with the layer sync bit.
func TestVP8TemporalSwitchUp(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sync      map[int]bool
		firstHigh int // the first picture above T0 it gets
	}{
		{"at TL0", nil, 13},                     // pictures 10 (TID 1) and 11 (TID 2) wait; 12 is TID 0
		{"at sync", map[int]bool{11: true}, 11}, // picture 11 (TID 2) has Y
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkts := vp8Stream(100, 24, true, tc.sync)
			var x svcSub
			out := runVP8(&x, pkts, 0, 2, 20) // T0 for pictures 0–9, then T2
			checkVP8(t, out)
			first := -1
			for _, p := range out {
				if d := parseVP8(p.Payload); d.tid > 0 {
					first = int(p.Timestamp / 3000)
					break
				}
			}
			if first != tc.firstHigh {
				t.Fatalf("first picture above T0: %d, want %d", first, tc.firstHigh)
			}
			// Down again: at the next picture.
			var y svcSub
			out = runVP8(&y, pkts, 2, 0, 21) // picture 10's second packet on
			for _, p := range out {
				if d := parseVP8(p.Payload); d.tid > 0 && p.Timestamp/3000 > 10 {
					t.Fatalf("picture %d (TID %d) sent after the switch down", p.Timestamp/3000, d.tid)
				}
			}
			checkVP8(t, out)
		})
	}
}

// A subscriber whose video was paused resumes at the next keyframe with
// sequence numbers and picture IDs running on from the last it got.
func TestVP8TemporalPauseKeepsIDsContinuous(t *testing.T) {
	var pkts []*rtp.Packet
	for i := range 24 {
		pkts = append(pkts, vp8Picture(i, i == 0 || i == 16, uint16(2*i), 2, 20)...)
	}
	var x svcSub
	var out []*rtp.Packet
	for i, p := range pkts {
		paused := i >= 12 && i < 28 // pictures 6–13
		if o, ok := x.filter(p, parseVP8(p.Payload), 0, 1, 1, paused); ok {
			out = append(out, o)
		}
	}
	checkVP8(t, out)
	var resumed bool
	for _, p := range out {
		if p.Timestamp/3000 >= 14 {
			if p.Timestamp/3000 < 16 {
				t.Fatalf("picture %d sent before the keyframe after the pause", p.Timestamp/3000)
			}
			resumed = true
		}
	}
	if !resumed {
		t.Fatal("nothing sent after the pause")
	}
}

// A retransmitted packet of a kept picture goes out with the IDs its
// picture was sent with.
func TestVP8TemporalLateKeepsIDs(t *testing.T) {
	pkts := vp8Stream(0, 12, true, nil)
	var x svcSub
	var sent []*rtp.Packet
	for _, p := range pkts {
		if o, ok := x.filter(p, parseVP8(p.Payload), 0, 0, 1, false); ok {
			sent = append(sent, o)
		}
	}
	// Picture 4's first packet again, after picture 8.
	o, ok := x.filter(pkts[8], parseVP8(pkts[8].Payload), 0, 0, 1, false)
	if !ok {
		t.Fatal("retransmission of a kept picture dropped")
	}
	if o.SequenceNumber != sent[2].SequenceNumber || !bytes.Equal(o.Payload, sent[2].Payload) {
		t.Fatalf("retransmission sent as seq %d %x, first as seq %d %x", o.SequenceNumber, o.Payload, sent[2].SequenceNumber, sent[2].Payload)
	}
}

// A VP8 publisher without temporal layers is forwarded untouched: its
// track does not filter, and the filter would drop nothing.
func TestVP8WithoutTemporalUntouched(t *testing.T) {
	pkts := vp8Stream(10, 12, false, nil)
	v := &svcTrack{base: &forwarder{}, parse: parseVP8, vp8: true}
	var x svcSub
	for i, p := range pkts {
		v.observe(p, p2time(i))
		if v.filters() {
			t.Fatalf("packet %d: a VP8 track without T is filtered", i)
		}
		o, ok := x.filter(p, parseVP8(p.Payload), 0, 0, 1, false)
		if !ok || o != p {
			t.Fatalf("packet %d: changed or dropped", i)
		}
	}
	if v.layers() != nil {
		t.Fatal("layers offered for a VP8 track without temporal layers")
	}
	// Its first packet with T turns filtering on.
	tp := vp8Stream(40, 1, true, nil)[0]
	v.observe(tp, p2time(20))
	if !v.filters() {
		t.Fatal("a VP8 track sending T is not filtered")
	}
}

// FuzzVP8Temporal feeds arbitrary payloads and sequence numbers through
// the VP8 descriptor parser and a subscriber's filter: no panic, nothing
// above the target sent, a packet's length and layer unchanged by the
// picture ID rewrite.
func FuzzVP8Temporal(f *testing.F) {
	for _, p := range vp8Stream(0, 6, true, map[int]bool{3: true}) {
		f.Add(p.Payload, p.SequenceNumber, uint8(0))
	}
	f.Add([]byte{0x90, 0xa0, 0x05, 0x40, 0x10}, uint16(9), uint8(1))
	f.Add([]byte{0x80, 0xff, 0xff}, uint16(65535), uint8(0))
	f.Add([]byte{0x10, 0x10}, uint16(3), uint8(2))
	f.Fuzz(func(t *testing.T, payload []byte, seq uint16, tt uint8) {
		var x svcSub
		for _, p := range vp8Stream(seq-20, 10, true, nil) { // a keyframe first
			x.filter(p, parseVP8(p.Payload), 0, int(tt%3), 1, false)
		}
		for i := range 3 {
			p := &rtp.Packet{Header: rtp.Header{SequenceNumber: seq + uint16(i*200), Timestamp: uint32(40000 + i)}, Payload: payload}
			d := parseVP8(payload)
			o, ok := x.filter(p, d, 0, int(tt%3), 1, false)
			if !ok {
				continue
			}
			if d.layered && int(d.tid) > int(tt%3) {
				t.Fatalf("sent TID %d above target T%d", d.tid, tt%3)
			}
			od := parseVP8(o.Payload)
			if len(o.Payload) != len(payload) || od.ok != d.ok || od.tid != d.tid || od.layered != d.layered || od.picLen != d.picLen {
				t.Fatalf("rewritten descriptor %+v from %+v", od, d)
			}
		}
	})
}

// p2time is the arrival time of test packet i, 33 ms apart.
func p2time(i int) time.Time { return time.Unix(1_700_000_000, int64(i)*int64(33*time.Millisecond)) }

// vp8Picture returns picture i of an L1T3 stream (TIDs 0,2,1,2, …, the
// picture ID i, TL0PICIDX counting base-layer pictures) in npkt packets
// of size bytes from seq, the marker on the last; a keyframe when key.
// The first TID 2 and TID 1 pictures after each base-layer picture carry
// the layer sync bit.
func vp8Picture(i int, key bool, seq uint16, npkt, size int) []*rtp.Packet {
	tid := [4]uint8{0, 2, 1, 2}[i%4]
	p := vp8Pic{key: key, tid: tid, y: tid > 0 && i%4 <= 2, id: uint16(i) & 0x7fff, tl0: uint8(i / 4), temporal: true}
	out := make([]*rtp.Packet, npkt)
	for k := range npkt {
		payload := append(vp8Descriptor(p, k == 0), make([]byte, max(size-7, 2))...)
		out[k] = &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq + uint16(k), Timestamp: uint32(i) * 3000, Marker: k == npkt-1}, Payload: payload}
	}
	return out
}

// VP8Picture is vp8Picture for the package's external tests.
var VP8Picture = vp8Picture

// BenchmarkVP8TemporalFilter is the per-subscriber cost of one packet of
// an L1T3 VP8 stream (its descriptor parsed, as the forwarder does once
// per packet for all subscribers, and one subscriber's filter) for a
// subscriber at half the frame rate (every kept packet a copy with its
// picture ID rewritten) and one at the full rate (the packets as they are).
func BenchmarkVP8TemporalFilter(b *testing.B) {
	pkts := vp8Stream(0, 240, true, nil)
	descs := make([]layerDesc, len(pkts))
	for i, p := range pkts {
		descs[i] = parseVP8(p.Payload)
	}
	for _, tc := range []struct {
		name string
		tt   int
	}{{"T1", 1}, {"T2", 2}} {
		b.Run(tc.name, func(b *testing.B) {
			var x svcSub
			b.ReportAllocs()
			for i := range b.N {
				j := i % len(pkts)
				p := *pkts[j]
				p.SequenceNumber += uint16(i / len(pkts) * len(pkts))
				p.Timestamp += uint32(i / len(pkts) * len(pkts) * 3000)
				x.filter(&p, descs[j], 0, tc.tt, 1, false)
			}
		})
	}
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			parseVP8(pkts[i%len(pkts)].Payload)
		}
	})
}
