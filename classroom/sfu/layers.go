// Layers: a publisher's simulcast encodings of one track (rid), grouped,
// and a subscriber track that takes one of them at a time and switches at
// a keyframe, rewriting sequence numbers and timestamps so the subscriber
// sees one continuous stream.

package sfu

import (
	"slices"
	"sync"
	"time"

	"github.com/pion/rtp"
)

const (
	// layerRateWindow is how often a forwarder measures its layer's
	// bitrate.
	layerRateWindow = 500 * time.Millisecond
	// layerIdle: a layer with no packet for this long is not chosen
	// (browsers stop sending a layer when their own uplink is thin).
	layerIdle = 2 * time.Second
	// probeTick is how often a probing writer adds padding.
	probeTick = 5 * time.Millisecond
	// padSize is the padding of one probe packet: RTP's padding length
	// is one byte.
	padSize = 255
	// wireOverhead: bytes a packet takes on the link beyond its RTP
	// header and payload (IPv4 and UDP 28, SRTP's tag 10, the TWCC
	// header extension 8). The send rate the chooser compares with a
	// link counts them: a probe of 267-byte padding packets puts 17 %
	// more on the wire than its RTP bytes.
	wireOverhead = 46
	// primeLayerMax: a joining subscriber starting on a simulcast
	// group's lowest layer is primed from its cache only when the cached
	// group is this small (it passes a 500 kbit/s link's 400 ms queue);
	// else it asks the browser for a keyframe (forwarder.addPrimed).
	primeLayerMax = 24 << 10
)

// layerGroup is the set of forwarders carrying one publisher track: its
// simulcast layers, or just one. Subscriber tracks attach to the group
// and take one layer at a time.
type layerGroup struct {
	mu   sync.Mutex
	fwds []*forwarder
	subs []*subTrack // attached
}

// addLayer adds f, a layer that started after subscribers attached:
// each of them gets its packets offered (and ignores them until it
// switches to it).
func (g *layerGroup) addLayer(f *forwarder) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fwds = append(g.fwds, f)
	for _, t := range g.subs {
		f.addQuiet(t)
	}
}

// removeLayer forgets f (its track ended).
func (g *layerGroup) removeLayer(f *forwarder) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fwds = slices.DeleteFunc(g.fwds, func(x *forwarder) bool { return x == f })
}

// primary is the forwarder that stands for the group (its codec, its
// publisher).
func (g *layerGroup) primary() *forwarder {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.fwds) == 0 {
		return nil
	}
	return g.fwds[0]
}

// layers returns the group's live layers, smallest picture first (VP8
// keyframes state it), else lowest bitrate first. A layer
// not yet measured or gone quiet is left out (unless every one is: then
// they are returned).
func (g *layerGroup) layers() []*forwarder {
	g.mu.Lock()
	all := slices.Clone(g.fwds)
	g.mu.Unlock()
	if ls := svcLayers(all); ls != nil {
		return ls // one VP9 SVC track: its layers (svc.go)
	}
	cut := time.Now().Add(-layerIdle).UnixNano()
	live := slices.DeleteFunc(slices.Clone(all), func(f *forwarder) bool { return f.ended.Load() || f.lastAt.Load() < cut })
	if len(live) == 0 {
		live = all
	}
	// A layer that started after the others (a browser short of CPU
	// turns its top layer on late) is left out until it is measured:
	// unmeasured, it would sort as the lowest and be chosen as such.
	if measured := slices.DeleteFunc(slices.Clone(live), func(f *forwarder) bool { return f.bitrate.Load() == 0 }); len(measured) > 0 {
		live = measured
	}
	sized := !slices.ContainsFunc(live, func(f *forwarder) bool { return f.pixels.Load() == 0 })
	slices.SortStableFunc(live, func(a, b *forwarder) int {
		if sized && a.pixels.Load() != b.pixels.Load() {
			return int(a.pixels.Load() - b.pixels.Load())
		}
		return int(a.bitrate.Load() - b.bitrate.Load())
	})
	return live
}

// attach starts t on the group: on the lowest layer (it starts at once and
// the subscriber's link is tried before anything more is sent), or the
// highest when the SFU does not choose layers. It returns what the
// forwarder's add returns.
func (g *layerGroup) attach(t *subTrack) (bool, time.Duration) {
	ls := g.layers()
	if len(ls) == 0 {
		return false, 0
	}
	start := ls[svcStart(ls)]
	if t.sfu != nil && t.sfu.cfg.NoLayers {
		start = ls[len(ls)-1]
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	t.cur.Store(start)
	g.subs = append(g.subs, t)
	limit := 0
	if len(g.fwds) > 1 && (t.sfu == nil || !t.sfu.cfg.NoLayers) {
		limit = primeLayerMax
	}
	primed, took := start.real().addPrimed(t, limit)
	for _, f := range g.fwds {
		if f != start.real() {
			f.addQuiet(t)
		}
	}
	return primed, took
}

// detach stops offering t any layer.
func (g *layerGroup) detach(t *subTrack) {
	g.mu.Lock()
	fwds := slices.Clone(g.fwds)
	g.subs = slices.DeleteFunc(g.subs, func(x *subTrack) bool { return x == t })
	g.mu.Unlock()
	for _, f := range fwds {
		f.remove(t)
	}
}

// switchTo makes t move to layer f at f's next keyframe, which it asks
// the publisher for. Moving back to the layer it is on cancels a pending
// switch.
func (t *subTrack) switchTo(f *forwarder) {
	if f.layer != nil || t.fwd.svc != nil {
		t.svcSwitch(f) // layers of one VP9 SVC track (svc.go)
		return
	}
	if f == t.cur.Load() {
		t.want.Store(nil)
		return
	}
	t.want.Store(f)
	t.wantAt.Store(time.Now().UnixNano())
	f.keyframe()
}

// keyframe asks for a keyframe of the layer t takes, and of the one it
// waits for.
func (t *subTrack) keyframe() {
	if f := t.cur.Load(); f != nil {
		f.keyframe()
	} else {
		t.fwd.keyframe()
	}
	if w := t.want.Load(); w != nil {
		w.keyframe()
	}
}

// layered reports whether t has more than one layer to choose from.
// screen reports whether t carries a screen share (Publisher.SetScreens).
func (t *subTrack) screen() bool {
	return t.fwd.pub != nil && t.fwd.pub.isScreen(t.fwd.id)
}

func (t *subTrack) layered() bool {
	if t.fwd.grp == nil || t.fwd.audio {
		return false
	}
	t.fwd.grp.mu.Lock()
	n := len(t.fwd.grp.fwds)
	var one *forwarder
	if n == 1 {
		one = t.fwd.grp.fwds[0]
	}
	t.fwd.grp.mu.Unlock()
	return n > 1 || one != nil && one.svc != nil && one.svc.layers() != nil // SVC: svc.go
}

// rewriter maps the sequence numbers and timestamps of whichever layer a
// subscriber track takes onto one continuous stream; probe padding takes
// sequence numbers of its own. Only the track's writer goroutine uses it.
type rewriter struct {
	cur        *forwarder
	started    bool
	seqOff     uint16
	tsOff      uint32
	lastSeq    uint16
	lastTS     uint32
	lastAt     time.Time
	lastMarker bool
	padAt      time.Time
	padDue     float64 // bytes of probe padding owed
}

// take reports whether e is to be sent: a packet of a layer the track
// already left (queued before the switch) is not. The first packet of a
// new layer moves the offsets so it follows on from the last one sent.
func (w *rewriter) take(e qpkt) bool {
	switch {
	case w.cur == nil || e.from == nil:
		if w.cur == nil {
			w.cur = e.from
		}
	case e.sw:
		w.cur = e.from
		w.anchor(e.pkt)
	case e.from != w.cur:
		return false
	case w.started && !e.pkt.Padding:
		// The same layer after a gap (video paused for a weak link):
		// continue the numbering rather than show the subscriber a hole
		// of hundreds of packets to ask for again.
		if d := int16(e.pkt.SequenceNumber + w.seqOff - w.lastSeq); d > 300 || d < -300 {
			w.anchor(e.pkt)
		}
	}
	return true
}

// anchor sets the offsets so pkt follows on from the last packet sent.
func (w *rewriter) anchor(pkt *rtp.Packet) {
	if !w.started {
		return
	}
	w.seqOff = w.lastSeq + 1 - pkt.SequenceNumber
	// A new layer's clock has its own random origin: continue from the
	// last timestamp by the time that passed.
	gap := uint32(max(1, time.Since(w.lastAt).Milliseconds()) * 90)
	w.tsOff = w.lastTS + gap - pkt.Timestamp
}

// mapped returns pkt's sequence number and timestamp on the subscriber's
// stream and records them.
func (w *rewriter) mapped(pkt *rtp.Packet) (uint16, uint32) {
	seq, ts := pkt.SequenceNumber+w.seqOff, pkt.Timestamp+w.tsOff
	if !w.started || int16(seq-w.lastSeq) > 0 {
		w.lastSeq, w.lastTS, w.lastAt, w.lastMarker = seq, ts, time.Now(), pkt.Marker
	}
	w.started = true
	return seq, ts
}

// pad sends the probe's padding due since the last call, between frames
// only (after a packet that ended one), each packet taking the next
// sequence number. It reports false when the track was closed.
func (t *subTrack) pad(now time.Time) bool {
	w := &t.rw
	// What is not sent now (mid-frame, or less than a packet) is owed,
	// up to a few packets.
	// Up to 40 ms of it: on a loaded machine the 5 ms ticker fires late,
	// and a probe that loses what a late tick owes never reaches its aim.
	p := float64(t.probe.Load()) / 8
	w.padDue = min(w.padDue+p*now.Sub(w.padAt).Seconds(), max(8*(padSize+12), p*0.04))
	w.padAt = now
	if !w.started || !w.lastMarker {
		return true
	}
	for n := 0; w.padDue >= padSize+12 && n < 80; n++ {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, Padding: true, PaddingSize: padSize,
			SequenceNumber: w.lastSeq + 1, Timestamp: w.lastTS}}
		pkt.PaddingSize = padSize
		if !t.wait(t.pace, pkt) {
			return false
		}
		w.seqOff++
		w.lastSeq++
		_ = t.local.WriteRTP(pkt)
		if t.tx != nil {
			t.tx.Add(padSize + 12 + wireOverhead)
		}
		w.padDue -= padSize + 12
	}
	return true
}

// attach starts offering t its group's packets (see layerGroup.attach).
func (t *subTrack) attach() (bool, time.Duration) {
	if t.fwd.grp == nil {
		t.cur.Store(t.fwd)
		return t.fwd.add(t)
	}
	return t.fwd.grp.attach(t)
}

// detach stops offering t any packet.
func (t *subTrack) detach() {
	if t.fwd.grp == nil {
		t.fwd.remove(t)
		return
	}
	t.fwd.grp.detach(t)
}
