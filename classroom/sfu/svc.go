// SVC by layer: a VP9 track sent with spatial and temporal scalability on
// one SSRC (a browser's scalabilityMode "L3T3_KEY" or "L3T3") is forwarded
// to each subscriber up to the spatial and temporal layer its link
// carries, read from the VP9 payload descriptor of every packet (RFC 9628
// §4.2: SID, TID, the switching-up bit U, inter-picture prediction P, the
// frame's begin and end B/E, the scalability structure V).
//
// The layer chooser (choose.go) picks among simulcast layers, which are
// forwarders. An SVC track is one forwarder, so its layers are shown to
// the chooser as virtual forwarders (svcLayer): one per spatial layer at
// the full frame rate, and below them the lowest spatial layer at half the
// frame rate; each measured from the bytes of the packets it would
// forward. The chooser's switchTo, the subscriber's keyframe requests and
// the group's layer list reach this file through small hooks; nothing
// else of the chooser knows SVC.
//
// What a subscriber receives (svcSub.filter):
//   - only packets of spatial layers ≤ S and temporal layers ≤ T, with
//     sequence numbers closed up over the dropped ones (a dropped packet
//     must not look like loss, or the subscriber asks for it and its
//     estimator reads loss);
//   - the RTP marker on the last packet of the highest spatial layer it
//     gets: libwebrtc's receiver takes the marker as the end of the
//     picture (its frame buffer joins a picture's spatial frames and
//     decodes when the marked one arrives), and the publisher put it on a
//     layer this subscriber does not get;
//   - spatial layers up only at a keyframe (its upper layers are predicted
//     from the layers below within the picture, never from earlier
//     pictures; in L3T3_KEY the upper layers of later pictures are
//     predicted only from their own layer, so a subscriber cannot start one
//     mid-stream), asked for by PLI when the chooser moves it up; down at
//     the next picture;
//   - temporal layers up at a TL0 picture or one marked as a switching-up
//     point (U), down at the next picture.
//
// A new subscriber (or one whose video was paused) gets nothing until a
// keyframe: what it would get before cannot be decoded anyway.
//
// A single VP8 encoding with temporal layers (L1T2/L1T3: RFC 7741's T,
// TID, Y, TL0PICIDX) goes through the same structure with one spatial
// layer: parseVP8 fills the same descriptor, the layer sync bit Y is a
// switching-up point, and the filter also rewrites the VP8 picture ID
// and TL0PICIDX so they stay continuous over the pictures it drops. A
// VP8 track without T is not filtered at all (svcTrack.filters).

package sfu

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

// VP9 layer limits: the payload descriptor has 3 bits for each.
const (
	svcMaxLayers = 8
	// svcSeqWindow is how far back (in the publisher's sequence numbers)
	// a late packet (a retransmission) is still mapped onto a
	// subscriber's numbering; older ones are dropped.
	svcSeqWindow = 512
)

// layerDesc is what the SFU reads from a VP9 or VP8 payload descriptor
// (parseVP9, parseVP8): the filter below is the same for both.
type layerDesc struct {
	ok       bool // parsed
	layered  bool // VP9 L, VP8 T: layer indices present
	p        bool // inter-picture predicted
	b, e     bool // begins / ends the frame of its spatial layer
	u        bool // VP9 switching-up point
	sid, tid uint8
	// y: VP8 layer sync (Y), the frame refers only to the base layer, so
	// a subscriber can take its temporal layer from it on.
	y bool
	// VP8 picture ID and TL0PICIDX and where they sit in the payload
	// (picAt 0: absent; picLen 1 for 7 bits, 2 for 15): the filter
	// rewrites them so the subscriber's stay continuous over the
	// pictures it drops (libwebrtc's VP8 reference finder waits for a
	// picture ID that never comes).
	picAt, picLen, tl0At int
	pic                  uint16
	tl0                  uint8
	// ns is the number of spatial layers the scalability structure
	// states (V), 0 when the packet has none.
	ns     int
	widths []uint16 // per spatial layer, when the structure states them
	height []uint16
}

// parseVP9 reads p's VP9 payload descriptor.
func parseVP9(p []byte) layerDesc {
	var v codecs.VP9Packet
	if _, err := v.Unmarshal(p); err != nil {
		return layerDesc{}
	}
	d := layerDesc{ok: true, layered: v.L, p: v.P, b: v.B, e: v.E, u: v.U, sid: v.SID, tid: v.TID}
	if v.V {
		d.ns = int(v.NS) + 1
		if v.Y {
			d.widths, d.height = v.Width, v.Height
		}
	}
	return d
}

// parseVP8 reads p's VP8 payload descriptor (RFC 7741 §4.2): a
// single-layer VP8 track's temporal layers (one spatial layer, sid 0).
func parseVP8(p []byte) layerDesc {
	var v codecs.VP8Packet
	rest, err := v.Unmarshal(p)
	if err != nil {
		return layerDesc{}
	}
	d := layerDesc{ok: true, layered: v.T == 1, tid: v.TID, y: v.Y == 1, b: v.S == 1 && v.PID == 0}
	// A keyframe: the frame's first packet, and the VP8 frame tag's
	// P bit (its lowest) clear (RFC 6386 §9.1).
	d.p = !(d.b && len(rest) > 0 && rest[0]&1 == 0)
	if v.X == 1 && v.I == 1 {
		d.picAt, d.picLen, d.pic = 2, 1, v.PictureID
		if p[2]&0x80 != 0 {
			d.picLen = 2
		}
	}
	if v.X == 1 && v.L == 1 {
		d.tl0At, d.tl0 = 2+d.picLen, v.TL0PICIDX
	}
	return d
}

// keyframe reports whether d starts a keyframe: the base layer's frame,
// not predicted from an earlier picture (libwebrtc's receiver calls the
// same a key frame).
func (d layerDesc) keyframe() bool { return d.ok && d.b && !d.p && d.sid == 0 }

// svcLayer is a virtual forwarder's place in its SVC track: the highest
// spatial and temporal layer it forwards.
type svcLayer struct {
	base *forwarder
	s, t int
}

// svcTrack is the layer structure of one VP9 track, as its packets show
// it, and the virtual forwarders the chooser picks among. Only the
// forwarder's run goroutine calls observe.
type svcTrack struct {
	base *forwarder
	// parse reads a packet's descriptor: parseVP9, or parseVP8 for a
	// single-layer VP8 track (its temporal layers, one spatial layer).
	parse func([]byte) layerDesc
	vp8   bool
	// temporal: a VP8 track's packets showed temporal layers (T); until
	// then its packets go to every subscriber untouched.
	temporal atomic.Bool
	last     atomic.Pointer[svcParsed] // the packet observe read last, for the subscribers' filters

	mu       sync.Mutex
	virt     [svcMaxLayers][svcMaxLayers]*forwarder // by spatial, temporal layer; made when first seen
	seen     [svcMaxLayers][svcMaxLayers]int64      // unix nanos a packet of that layer was last seen
	bytes    [svcMaxLayers][svcMaxLayers]int        // in the current rate window
	winStart time.Time
	// size is each spatial layer's picture, width<<16 | height, as the
	// last scalability structure that stated them said (a keyframe's:
	// kept, because a layer made later must still know its size).
	size [svcMaxLayers]uint32
	// ns is the number of spatial layers the last scalability structure
	// stated (0: none yet); read for every packet by every subscriber.
	ns atomic.Int32
}

// svcParsed is one packet with its descriptor.
type svcParsed struct {
	pkt *rtp.Packet
	d   layerDesc
}

// newSVCTrack returns the layer state of f when f is a single-SSRC VP9
// or VP8 video track (no rid: simulcast is chosen as layers already),
// else nil. A VP8 track's layers are temporal only (an encoder's
// L1T2/L1T3: one spatial layer).
func newSVCTrack(f *forwarder) *svcTrack {
	if f.pub != nil && f.pub.sfu != nil && f.pub.sfu.cfg.NoSVC {
		return nil
	}
	if f.audio || f.rid != "" || f.track == nil {
		return nil
	}
	switch mt := f.track.Codec().MimeType; {
	case strings.EqualFold(mt, webrtc.MimeTypeVP9):
		return &svcTrack{base: f, parse: parseVP9}
	case strings.EqualFold(mt, webrtc.MimeTypeVP8):
		v := &svcTrack{base: f, parse: parseVP8, vp8: true}
		v.ns.Store(1)
		return v
	}
	return nil
}

// desc reads a packet's descriptor with the track's parser (VP9 unless
// set).
func (v *svcTrack) desc(p []byte) layerDesc {
	if v.parse == nil {
		return parseVP9(p)
	}
	return v.parse(p)
}

// filters reports whether subscribers' packets of this track go through
// their svcSub filter: a VP8 track's only once it shows temporal layers,
// so a plain VP8 publisher's stream is forwarded as it always was.
func (v *svcTrack) filters() bool { return !v.vp8 || v.temporal.Load() }

// ForwardsSVC reports whether the SFU forwards a VP9 SVC track by layer,
// chosen per subscriber: a publisher gains by sending SVC.
func (s *SFU) ForwardsSVC() bool { return !s.cfg.NoLayers && !s.cfg.NoSVC }

// real is the forwarder that reads the packets a (possibly virtual)
// forwarder stands for.
func (f *forwarder) real() *forwarder {
	if f.layer != nil {
		return f.layer.base
	}
	return f
}

// svcTarget is the highest spatial and temporal layer f forwards: all of
// them for a forwarder that is not an SVC layer.
func svcTarget(f *forwarder) (int, int) {
	if f == nil || f.layer == nil {
		return svcMaxLayers - 1, svcMaxLayers - 1
	}
	return f.layer.s, f.layer.t
}

// observe reads pkt's descriptor once for every subscriber and measures
// each layer's bitrate.
func (v *svcTrack) observe(pkt *rtp.Packet, now time.Time) {
	d := v.desc(pkt.Payload)
	v.last.Store(&svcParsed{pkt: pkt, d: d})
	if !d.ok || !d.layered {
		return
	}
	if v.vp8 && !v.temporal.Load() {
		v.temporal.Store(true)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if d.ns > 0 {
		v.ns.Store(int32(d.ns))
	}
	v.seen[d.sid][d.tid] = now.UnixNano()
	v.bytes[d.sid][d.tid] += len(pkt.Payload) + 12
	if d.widths != nil {
		for s := range min(len(d.widths), len(d.height), svcMaxLayers) {
			v.size[s] = uint32(d.widths[s])<<16 | uint32(d.height[s])
			for t := range svcMaxLayers {
				if f := v.virt[s][t]; f != nil {
					f.pixels.Store(int64(d.widths[s]) * int64(d.height[s]))
				}
			}
		}
	}
	el := now.Sub(v.winStart)
	if el < layerRateWindow {
		return
	}
	if !v.winStart.IsZero() {
		v.measure(el, now)
	}
	v.winStart = now
	v.bytes = [svcMaxLayers][svcMaxLayers]int{}
}

// measure sets each layer's bitrate: what a subscriber taking it receives,
// every packet of its spatial and temporal layer and of those below. The
// caller holds mu.
func (v *svcTrack) measure(el time.Duration, now time.Time) {
	cut := now.Add(-layerIdle).UnixNano()
	for s := range svcMaxLayers {
		for t := range svcMaxLayers {
			if v.seen[s][t] < cut {
				continue
			}
			if v.virt[s][t] == nil {
				f := &forwarder{pub: v.base.pub, track: v.base.track, interval: v.base.interval, grp: v.base.grp,
					id: v.base.id, rid: fmt.Sprintf("s%dt%d", s, t), layer: &svcLayer{base: v.base, s: s, t: t}}
				f.list.Store(&[]*subTrack{})
				if sz := v.size[s]; sz != 0 {
					f.pixels.Store(int64(sz>>16) * int64(sz&0xffff))
				}
				v.virt[s][t] = f
			}
			if v.vp8 {
				// One spatial layer: the picture size is the track's,
				// read from its keyframes by forwarder.run.
				v.virt[s][t].pixels.Store(v.base.pixels.Load())
			}
			sum := 0
			for i := 0; i <= s; i++ {
				for j := 0; j <= t; j++ {
					sum += v.bytes[i][j]
				}
			}
			f := v.virt[s][t]
			r := float64(sum*8) / el.Seconds()
			if old := float64(f.bitrate.Load()); old > 0 {
				r = 0.75*old + 0.25*r // as forwarder.run smooths a simulcast layer
			}
			f.bitrate.Store(int64(r))
			f.lastAt.Store(v.seen[s][t])
		}
	}
}

// layers returns the layers the chooser picks among, lowest first: the
// lowest spatial layer at half the frame rate (when there are temporal
// layers), then each spatial layer at the full frame rate. Nil while the
// track shows fewer than two (it is then forwarded whole).
func (v *svcTrack) layers() []*forwarder {
	if v.base.ended.Load() {
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	cut := time.Now().Add(-layerIdle).UnixNano()
	maxS, maxT := -1, -1
	for s := range svcMaxLayers {
		for t := range svcMaxLayers {
			if v.seen[s][t] >= cut {
				maxS, maxT = max(maxS, s), max(maxT, t)
			}
		}
	}
	if ns := int(v.ns.Load()); ns > 0 {
		maxS = min(maxS, ns-1) // the encoder turned layers off
	}
	var out []*forwarder
	add := func(s, t int) {
		if f := v.virt[s][t]; f != nil && f.bitrate.Load() > 0 && f.lastAt.Load() >= cut {
			out = append(out, f)
		}
	}
	if maxT > 0 {
		add(0, maxT-1)
	}
	for s := 0; s <= maxS; s++ {
		add(s, maxT)
	}
	if len(out) < 2 {
		return nil
	}
	return out
}

// svcStart is where in ls (a group's layers, lowest first) a new
// subscriber starts: the lowest, except that of an SVC track's the lowest
// spatial layer at the full frame rate. The half-rate rung below it is
// for a link that turns out thinner; starting on it would cost every
// classroom one more probe (~2.5 s) on its way up. (A browser starts its
// SVC encoding with the lowest spatial layer alone and adds the others as
// its own estimate grows: the list may hold just the two rungs of S0.)
func svcStart(ls []*forwarder) int {
	if len(ls) > 1 && ls[0].layer != nil && ls[1].layer != nil && ls[0].layer.s == ls[1].layer.s {
		return 1
	}
	return 0
}

// svcLayers is layers for a group whose one forwarder is an SVC track.
func svcLayers(fwds []*forwarder) []*forwarder {
	if len(fwds) != 1 || fwds[0].svc == nil {
		return nil
	}
	return fwds[0].svc.layers()
}

// svcSwitch moves t to the SVC layer f: down at once (its filter drops
// the layers above from the next picture), up when the filter reaches
// it, asking the publisher for the keyframe a spatial layer up needs (a
// temporal layer up needs none: a switching point comes within a few
// frames).
func (t *subTrack) svcSwitch(f *forwarder) {
	cur := t.cur.Load()
	if (cur == nil || cur.layer == nil) && f.layer != nil {
		// Its first layer (it attached before the track's layers were
		// measured): where a new subscriber starts, not the half-rate
		// rung below it.
		if ls := f.layer.base.svc.layers(); len(ls) > 0 && f == ls[0] {
			f = ls[svcStart(ls)]
		}
	}
	if f == cur {
		t.want.Store(nil)
		return
	}
	s, tl := svcTarget(f)
	cs, ct := svcTarget(cur)
	if s <= cs && tl <= ct {
		t.want.Store(nil)
		t.cur.Store(f)
		return
	}
	t.want.Store(f)
	t.wantAt.Store(time.Now().UnixNano())
	if s > cs {
		f.keyframe()
	}
}

// offerSVC offers t the packet of SVC track f if t's layers include it,
// renumbered onto t's stream.
func (t *subTrack) offerSVC(f *forwarder, pkt *rtp.Packet) {
	var d layerDesc
	if p := f.svc.last.Load(); p != nil && p.pkt == pkt {
		d = p.d
	} else {
		d = f.svc.desc(pkt.Payload) // a fan-out lane behind the forwarder
	}
	cur, want := t.cur.Load(), t.want.Load()
	tgt := cur
	if want != nil {
		tgt = want
	}
	ts, tt := svcTarget(tgt)
	if tgt == f && (t.sfu == nil || !t.sfu.cfg.NoLayers) {
		// Attached before the track's layers were measured: the lowest
		// spatial layer until the chooser picks one, as a new
		// subscriber of simulcast starts on the lowest (a thin link
		// must not get the whole stream's keyframe first).
		ts = 0
	}
	paused := t.paused != nil && t.paused.Load()
	ns := f.svc.spatialLayers()
	out, ok := t.svc.filter(pkt, d, ts, tt, ns, paused)
	s, tl := t.svc.at()
	if want != nil {
		if s >= min(ts, ns-1) && tl >= tt && t.cur.CompareAndSwap(cur, want) {
			t.want.CompareAndSwap(want, nil)
		}
	} else if s >= 0 && s < min(ts, ns-1) && t.svc.askAgain(time.Now()) {
		// Below its layer with no switch pending: the encoder turned a
		// spatial layer off for a while and on again (a browser short of
		// uplink or CPU), and only a keyframe lets the subscriber take it
		// back.
		f.keyframe()
	} else if s < 0 && !paused && f.svc.vp8 && t.svc.askAgain(time.Now()) {
		// A VP8 track that began showing temporal layers mid-stream (or
		// a subscriber the cache did not prime): its filter waits for a
		// keyframe, which an encoder like OBS's may send only every few
		// seconds on its own.
		f.keyframe()
	}
	if ok {
		t.offer(qpkt{pkt: out, from: f})
	}
}

// pictureSize is spatial layer s's picture size as the encoder's
// scalability structure last stated it (0, 0: not yet).
func (v *svcTrack) pictureSize(s int) (w, h int) {
	if s < 0 || s >= svcMaxLayers {
		return 0, 0
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return int(v.size[s] >> 16), int(v.size[s] & 0xffff)
}

// spatialLayers is how many spatial layers the encoder sends now, as its
// last scalability structure said (svcMaxLayers when none has).
func (v *svcTrack) spatialLayers() int {
	if ns := int(v.ns.Load()); ns > 0 {
		return ns
	}
	return svcMaxLayers
}

// svcSub is one subscriber track's view of an SVC track: the layers it
// gets now and how its sequence numbers map. Only the goroutine offering
// the track's packets uses it (one at a time: forwarder.fanOut keeps a
// subscriber's packets in order); mu makes at() safe from anywhere.
type svcSub struct {
	mu      sync.Mutex
	started bool // a keyframe was let through: the subscriber can decode
	s, t    int  // the highest spatial and temporal layer let through now
	picTS   uint32
	inPic   bool
	// Sequence numbers: hi is the highest the publisher's stream has
	// shown, off the number of dropped packets up to it; dropped marks,
	// by sequence number modulo svcSeqWindow, which of the last ones
	// were dropped.
	seqInit bool
	hi, off uint16
	dropped [svcSeqWindow / 64]uint64
	askedAt time.Time // the last keyframe asked for to regain a spatial layer
	// VP8 picture IDs: the pictures dropped so far (picDrop) and the
	// base-layer ones among them (tl0Drop) are taken off each kept
	// picture's IDs; picMap remembers the last kept pictures' IDs for
	// their late packets. newPic: keep saw a picture start.
	picDrop uint16
	tl0Drop uint8
	newPic  bool
	picMap  [64]picIDs
}

// picIDs is one kept VP8 picture's IDs as published (in) and as sent.
type picIDs struct {
	in, pic uint16
	tl0     uint8
	ok      bool
}

// primed tells x that the subscriber was sent the track's cached group
// of pictures (from a keyframe up to last, every layer): it can decode
// what follows, so its filter starts there instead of waiting for the
// next keyframe (a VP8 encoder's keyframes are seconds apart), and
// leaves the layers above its target from the next picture.
func (x *svcSub) primed(last *rtp.Packet) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.started, x.s, x.t = true, svcMaxLayers-1, svcMaxLayers-1
	x.inPic, x.picTS = true, last.Timestamp
}

// askAgain reports whether a keyframe to regain a spatial layer may be
// asked for now: at most one every 1.5 s per subscriber (what the chooser
// waits before asking again for a switch's).
func (x *svcSub) askAgain(now time.Time) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if now.Sub(x.askedAt) < 1500*time.Millisecond {
		return false
	}
	x.askedAt = now
	return true
}

// at returns the layers the subscriber gets now (-1, -1 before a
// keyframe).
func (x *svcSub) at() (int, int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.started {
		return -1, -1
	}
	return x.s, x.t
}

func (x *svcSub) mark(seq uint16, drop bool) {
	i, b := (seq%svcSeqWindow)/64, uint64(1)<<(seq%64)
	if drop {
		x.dropped[i] |= b
	} else {
		x.dropped[i] &^= b
	}
}

func (x *svcSub) isDropped(seq uint16) bool {
	return x.dropped[(seq%svcSeqWindow)/64]&(uint64(1)<<(seq%64)) != 0
}

// filter decides whether pkt (with descriptor d) goes to a subscriber
// whose target is spatial layer ts and temporal layer tt, while the
// encoder sends ns spatial layers; paused: its video is paused (nothing
// goes, and it restarts at a keyframe). It returns the packet to send —
// pkt itself, or a copy with the subscriber's sequence number and marker.
func (x *svcSub) filter(pkt *rtp.Packet, d layerDesc, ts, tt, ns int, paused bool) (*rtp.Packet, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	seq := pkt.SequenceNumber
	if !x.seqInit {
		x.seqInit, x.hi = true, seq-1
	}
	diff := int16(seq - x.hi)
	if diff < -4096 {
		// Far outside any window: the publisher's numbering started
		// over. Follow it (the subscriber's own stays continuous).
		x.hi, diff = seq-1, 1
		x.dropped = [svcSeqWindow / 64]uint64{}
	}
	if diff <= 0 {
		// Late (a retransmission, or reordered on the way): numbered as
		// it would have been, unless it is too old or was dropped. A
		// packet that was missing when later ones came counted as sent:
		// if its layer is not the subscriber's, it stays a gap the
		// subscriber asks for in vain, once.
		if -int(diff) >= svcSeqWindow-64 || x.isDropped(seq) || !x.keep(pkt, d, ts, tt, ns, paused, false) {
			return nil, false
		}
		n := uint16(0)
		for s := seq + 1; s != x.hi+1; s++ {
			if x.isDropped(s) {
				n++
			}
		}
		ids := x.picIDs(d)
		if m := x.picMap[d.pic%64]; m.ok && m.in == d.pic {
			ids = m // its picture's IDs as they were sent
		}
		return x.out(pkt, x.off-n, d, ns, ids), true
	}
	// Packets skipped on the way in (lost before the edge) are not
	// dropped here: the subscriber may ask for them.
	if int(diff) > svcSeqWindow {
		x.dropped = [svcSeqWindow / 64]uint64{}
	} else {
		for s := x.hi + 1; s != seq; s++ {
			x.mark(s, false)
		}
	}
	x.hi = seq
	x.newPic = false
	if paused && d.picAt > 0 && (!x.inPic || pkt.Timestamp != x.picTS) {
		// keep does not look at pictures while paused; a VP8 picture
		// dropped now still counts, or the IDs would jump on resuming.
		x.inPic, x.picTS, x.newPic = true, pkt.Timestamp, true
	}
	kept := x.keep(pkt, d, ts, tt, ns, paused, true)
	if x.newPic && d.picAt > 0 {
		// A VP8 picture starts: count it dropped, or remember its IDs.
		if !kept {
			x.picDrop++
			if d.tid == 0 && d.tl0At > 0 {
				x.tl0Drop++
			}
		} else {
			x.picMap[d.pic%64] = x.picIDs(d)
		}
	}
	if !kept {
		x.mark(seq, true)
		x.off++
		return nil, false
	}
	x.mark(seq, false)
	return x.out(pkt, x.off, d, ns, x.picIDs(d)), true
}

// picIDs is the picture ID and TL0PICIDX a VP8 packet with descriptor d
// is sent with now: less the pictures dropped before it, in the width
// the publisher used.
func (x *svcSub) picIDs(d layerDesc) picIDs {
	mask := uint16(0x7f)
	if d.picLen == 2 {
		mask = 0x7fff
	}
	return picIDs{in: d.pic, pic: (d.pic - x.picDrop) & mask, tl0: d.tl0 - x.tl0Drop, ok: true}
}

// keep is filter's decision for one packet; now says it is the newest
// packet yet (it may move the subscriber's layers), not a late one.
func (x *svcSub) keep(pkt *rtp.Packet, d layerDesc, ts, tt, ns int, paused, now bool) bool {
	if paused {
		x.started = false // after the pause, from a keyframe
		return false
	}
	if !d.ok {
		return false
	}
	if !d.layered {
		return true // no layers to choose: all of it, as before
	}
	if now && (!x.inPic || pkt.Timestamp != x.picTS) {
		// A new picture (its first packet, or the first that arrived).
		x.inPic, x.picTS, x.newPic = true, pkt.Timestamp, true
		x.newPicture(d, ts, tt, ns)
	}
	return x.started && int(d.sid) <= x.s && int(d.tid) <= x.t
}

// newPicture applies the target at a picture's start: down at once, up at
// the switch points the decoder can use.
func (x *svcSub) newPicture(d layerDesc, ts, tt, ns int) {
	top := min(ts, ns-1)
	if d.keyframe() {
		x.started = true
		x.s, x.t = top, tt
		return
	}
	if !x.started {
		return
	}
	x.s = min(x.s, top)
	switch {
	case tt < x.t:
		x.t = tt
	case tt > x.t && (d.tid == 0 || d.u && int(d.tid) <= x.t):
		x.t = tt
	case tt > x.t && d.y && int(d.tid) <= tt:
		// VP8 layer sync: the frame refers only to the base layer, so
		// its layer (and those below) decode from here on.
		x.t = tt
	}
}

// out returns pkt numbered seq-off on the subscriber's stream, with the
// marker on the end of the highest spatial layer it gets and, for VP8,
// the picture IDs ids.
func (x *svcSub) out(pkt *rtp.Packet, off uint16, d layerDesc, ns int, ids picIDs) *rtp.Packet {
	marker := pkt.Marker
	if d.layered && d.e && int(d.sid) >= min(x.s, ns-1) {
		marker = true
	}
	rewrite := d.picAt > 0 && ids.pic != d.pic || d.tl0At > 0 && ids.tl0 != d.tl0
	if off == 0 && marker == pkt.Marker && !rewrite {
		return pkt
	}
	c := *pkt // the header slices are shared, read-only
	c.SequenceNumber -= off
	c.Marker = marker
	if rewrite {
		// A copy: the payload is shared with every other subscriber.
		c.Payload = append([]byte(nil), pkt.Payload...)
		if d.picLen == 2 {
			c.Payload[d.picAt], c.Payload[d.picAt+1] = 0x80|byte(ids.pic>>8), byte(ids.pic)
		} else if d.picLen == 1 {
			c.Payload[d.picAt] = byte(ids.pic & 0x7f)
		}
		if d.tl0At > 0 {
			c.Payload[d.tl0At] = ids.tl0
		}
	}
	return &c
}

// SVCLayers counts the subscribers' VP9 SVC and VP8 temporal tracks (the
// latter at spatial 0), in every room, by the spatial and temporal layer
// each gets now ([2]int{spatial, temporal}); one still waiting for its
// first keyframe is left out.
func (s *SFU) SVCLayers() map[[2]int]int {
	s.mu.Lock()
	var subs []*Subscriber
	for _, r := range s.rooms {
		for _, sub := range r.subs {
			subs = append(subs, sub)
		}
	}
	s.mu.Unlock()
	out := map[[2]int]int{}
	for _, sub := range subs {
		for _, t := range sub.videoTracks() {
			if t.fwd.svc == nil {
				continue
			}
			if sl, tl := t.svc.at(); sl >= 0 {
				out[[2]int{sl, tl}]++
			}
		}
	}
	return out
}
