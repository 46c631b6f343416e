// Forwarder: reads one publisher track and fans every packet out to the
// subscriber tracks' queues, keeping the keyframe cache (keyframe.go) and
// rate-limiting keyframe requests to the publisher.

package sfu

import (
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// forwarder reads one publisher track and hands every packet to each
// subscriber track's queue.
type forwarder struct {
	pub      *Publisher
	track    *webrtc.TrackRemote
	interval time.Duration
	audio    bool
	// grp is the set of simulcast layers this track is one of (a group
	// of one for a single-layer track); rid names the layer.
	grp *layerGroup
	rid string
	id  string // the track's id (msid), the same for each of its layers
	// bitrate (bits/s, measured over the last window) and lastAt (unix
	// nanos of the last packet) tell the layer chooser what each layer
	// costs and whether the publisher still sends it.
	bitrate, lastAt atomic.Int64
	// pixels is the picture size of the layer's last VP8 keyframe (0:
	// none seen): layers are ordered by it when every one has it, since
	// a browser short of CPU may send its top layer at a lower bitrate
	// than the one below for a while.
	pixels atomic.Int64
	mu     sync.Mutex // serialises add/remove; readers use list
	list   atomic.Pointer[[]*subTrack]
	ended  atomic.Bool
	gop    gopCache // guarded by mu
	tap    TapSink  // nil unless the SFU's tap wants this track

	pliMu      sync.Mutex
	lastPLI    time.Time
	pliPending bool

	// lanePending counts packets handed to helper lanes and not yet
	// offered by them: run writes directly again (below laneMin) only
	// when it is zero, or a subscriber of a helper's lane would get a
	// new packet before the older ones the helper still holds.
	lanePending atomic.Int64

	// svc: a VP9 track's spatial/temporal layers (svc.go), nil for
	// other tracks; layer: this forwarder is one of them, a virtual
	// forwarder that reads nothing itself.
	svc   *svcTrack
	layer *svcLayer
}

func (f *forwarder) subs() []*subTrack { return *f.list.Load() }

// add starts forwarding to t. A video track is first given the cached
// group of pictures (the last keyframe and what followed), so a classroom
// that joins shows the picture at once even when the publisher (OBS) does
// not answer keyframe requests. It reports whether it did, and how long
// the track's pacer takes to send that group.
func (f *forwarder) add(t *subTrack) (bool, time.Duration) { return f.addPrimed(t, 0) }

// addPrimed is add with the cached group given only when its payload is at
// most maxBytes (0: any size). A simulcast layer's group, cached since the
// browser's last keyframe, can be a megabyte; sent to a classroom that
// starts on the lowest layer because its link may be thin, it overflows
// that link for seconds. A browser answers keyframe requests, so without
// the cache the new classroom asks for one instead (attachReady).
func (f *forwarder) addPrimed(t *subTrack, maxBytes int) (bool, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var gop []*rtp.Packet
	if t.paused == nil || !t.paused.Load() {
		gop = slices.Clone(f.gop.pkts)
	}
	if maxBytes > 0 {
		n := 0
		for _, p := range gop {
			n += len(p.Payload)
		}
		if n > maxBytes {
			gop = nil
		}
	}
	took := t.primeWith(gop)
	if f.svc != nil && f.svc.vp8 && len(gop) > 0 {
		t.svc.primed(gop[len(gop)-1]) // svc.go
	}
	old := *f.list.Load()
	n := append(append(make([]*subTrack, 0, len(old)+1), old...), t)
	f.list.Store(&n)
	return len(gop) > 0, took
}

// addQuiet starts offering packets to t without priming it: t is already
// attached to another layer of the same group, and takes this one's
// packets only when it switches to it (at one of its keyframes).
func (f *forwarder) addQuiet(t *subTrack) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := *f.list.Load()
	n := append(append(make([]*subTrack, 0, len(old)+1), old...), t)
	f.list.Store(&n)
}

func (f *forwarder) remove(t *subTrack) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := *f.list.Load()
	n := make([]*subTrack, 0, len(old))
	for _, x := range old {
		if x != t {
			n = append(n, x)
		}
	}
	f.list.Store(&n)
}

// Fan-out lanes. The forwarder writes each packet to its subscribers
// itself (subTrack.offer); with many subscribers it shares the writing
// with helper goroutines, one per further CPU, each taking the
// subscribers of its lane (subTrack.lane), so a class of hundreds is
// written on every core, and on a machine busy with other work the edge
// is not one thread competing with many. Below laneMin subscribers one
// goroutine writes them all: a hand-off costs more than it saves.
const (
	laneMin   = 16
	maxLanes  = 4
	laneQueue = 1024 // packets a helper may lag behind (~3.5 s of the lesson's video)
)

// laneItem is one packet for a helper lane, with the subscriber list it
// was read with.
type laneItem struct {
	pkt  *rtp.Packet
	subs []*subTrack
}

// startLanes starts the helper lanes (lane 0 is run's own goroutine) and
// returns their queues; closing them stops the helpers.
func (f *forwarder) startLanes() []chan laneItem {
	n := min(runtime.GOMAXPROCS(0), maxLanes)
	var lanes []chan laneItem
	for i := 1; i < n; i++ {
		ch := make(chan laneItem, laneQueue)
		lanes = append(lanes, ch)
		go func() {
			for it := range ch {
				for _, t := range it.subs {
					if t.lane%uint32(n) == uint32(i) {
						t.offerFrom(f, it.pkt)
					}
				}
				f.lanePending.Add(-1)
			}
		}()
	}
	return lanes
}

// fanOut offers pkt to every subscriber in subs, across the lanes.
func (f *forwarder) fanOut(lanes []chan laneItem, pkt *rtp.Packet, subs []*subTrack) {
	// Back below laneMin, the lanes are still used until the helpers
	// have offered all they hold, so no subscriber's packets reorder.
	if len(lanes) == 0 || len(subs) < laneMin && f.lanePending.Load() == 0 {
		for _, t := range subs {
			t.offerFrom(f, pkt)
		}
		return
	}
	n := uint32(len(lanes) + 1)
	for i, ch := range lanes {
		f.lanePending.Add(1)
		select {
		case ch <- laneItem{pkt: pkt, subs: subs}:
		default: // that helper is seconds behind: its subscribers miss this packet
			f.lanePending.Add(-1)
			for _, t := range subs {
				if t.lane%n == uint32(i+1) {
					t.drop()
				}
			}
		}
	}
	for _, t := range subs {
		if t.lane%n == 0 {
			t.offerFrom(f, pkt)
		}
	}
}

// run forwards until the publisher's track ends. Each packet is a new
// allocation, shared read-only by every queue. A
// muted source's audio is read and dropped here, so the mute holds
// whatever its client does.
func (f *forwarder) run() {
	lanes := f.startLanes()
	defer func() {
		for _, ch := range lanes {
			close(ch)
		}
	}()
	n := 0
	muted := false
	var winStart time.Time
	winBytes := 0
	sized := f.grp != nil && strings.EqualFold(f.track.Codec().MimeType, webrtc.MimeTypeVP8) // vp8Size applies
	buf := make([]byte, 1500)
	for {
		// Read into one buffer and keep a copy of the packet's own size
		// (ReadRTP allocates a whole MTU per packet): the packet stays
		// referenced by the keyframe cache and the NACK history.
		k, _, err := f.track.Read(buf)
		if err != nil {
			return
		}
		pkt := &rtp.Packet{}
		if pkt.Unmarshal(slices.Clone(buf[:k])) != nil {
			continue
		}
		now := time.Now()
		f.lastAt.Store(now.UnixNano())
		winBytes += len(pkt.Payload) + 12
		if el := now.Sub(winStart); el >= layerRateWindow {
			if !winStart.IsZero() {
				// Smoothed over ~2 s: a keyframe's window must not make
				// the layer look dearer than it is for long.
				r := float64(winBytes*8) / el.Seconds()
				if old := float64(f.bitrate.Load()); old > 0 {
					r = 0.75*old + 0.25*r
				}
				f.bitrate.Store(int64(r))
			}
			winStart, winBytes = now, 0
		}
		if f.audio {
			if n%25 == 0 { // re-check twice a second, not per packet
				muted = f.pub.sfu.isMuted(f.pub.room, f.pub.source)
			}
			n++
			if muted {
				continue
			}
		}
		var subs []*subTrack
		if f.audio {
			subs = f.subs()
		} else {
			// Under mu, so add() sees each packet either in the cache or
			// in its queue, never both or neither.
			if sized {
				if w, h := vp8Size(pkt.Payload); w > 0 && h > 0 {
					f.pixels.Store(int64(w * h))
				}
			}
			f.mu.Lock()
			f.gop.push(pkt, f.track.Codec().MimeType)
			subs = f.subs()
			f.mu.Unlock()
		}
		if f.svc != nil {
			f.svc.observe(pkt, now)
		}
		f.fanOut(lanes, pkt, subs)
		if f.tap != nil {
			f.tap.Packet(pkt) // non-blocking by contract
		}
	}
}

// keyframe asks the publisher for a keyframe, at most once per interval:
// a request inside the interval is not dropped but coalesced into one PLI
// at the interval's end, so two classrooms joining 100 ms apart both get a
// keyframe promptly. Audio tracks need none.
func (f *forwarder) keyframe() {
	if f.layer != nil {
		f.layer.base.keyframe() // an SVC layer: its track's keyframe
		return
	}
	if f.audio {
		return
	}
	f.pliMu.Lock()
	defer f.pliMu.Unlock()
	if f.pliPending {
		return
	}
	if wait := f.interval - time.Since(f.lastPLI); wait > 0 {
		f.pliPending = true
		time.AfterFunc(wait, func() {
			f.pliMu.Lock()
			f.pliPending = false
			f.lastPLI = time.Now()
			f.pliMu.Unlock()
			f.pub.requestKeyframe(f.track.SSRC())
		})
		return
	}
	f.lastPLI = time.Now()
	f.pub.requestKeyframe(f.track.SSRC())
}
