// Priming admission: how many joining subscribers are sent the cached group
// of pictures at once, and what the others do meanwhile.

package sfu

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pion/rtp"
)

// admit waits until t may be primed with gop. A class starts with every
// screen joining in the same second; primed all at once, hundreds of
// cached groups of pictures (up to a megabyte each) share the edge's CPU
// and the priming budget, every joiner's priming takes as long as the
// whole burst's, and meanwhile each joiner's live packets pile up in its
// queue until it overflows. So at most Config.PrimeConcurrent subscriber
// tracks are primed at a time (a slot of the SFU's primeSlots). A track
// that finds none free is sent the cached keyframe alone (a few packets:
// the screen shows the picture at once) and waits, taking its live
// packets off its queue as they come so the queue never fills; when the
// publisher starts a new group of pictures meanwhile, the rest of the
// cached one is stale: the track goes on at that keyframe instead, its
// numbering continued so the subscriber sees no gap, at no cost beyond
// the live stream, and needs no slot. A publisher that keeps no keyframe
// in sight (a long keyframe interval) is waited for only as long as the
// queue would have held.
//
// It returns what to send next, in order: the rest of the group of
// pictures (nil when the track goes on at a live keyframe) and the live
// packets taken off the queue meanwhile (still counted in t.backlog); slot
// says t holds a slot (the caller releases it when those are sent); ok is
// false when the track closed while waiting.
func (t *subTrack) admit(gop []*rtp.Packet, from *forwarder) (prime []*rtp.Packet, live []qpkt, slot, ok bool) {
	if len(gop) == 0 || t.sfu == nil || t.sfu.primeSlots == nil {
		return gop, nil, false, true
	}
	select {
	case t.sfu.primeSlots <- struct{}{}:
		return gop, nil, true, true
	default:
	}
	t.sfu.primeWaits.Add(1)
	key := 1 // the keyframe: the packets with the group's first timestamp
	for key < len(gop) && gop[key].Timestamp == gop[0].Timestamp {
		key++
	}
	if !t.sendPrime(gop[:key], from) {
		return nil, nil, false, false
	}
	gop = gop[key:]
	// A keyframe is recognised only on the layer the cache came from, and
	// not on a track filtered by VP9 SVC or VP8 temporal layer, whose
	// filter's state was set from the cache (svc.go).
	mime := ""
	unfiltered := func(f *forwarder) bool { return f.svc == nil || !f.svc.filters() }
	if from != nil && unfiltered(from) && unfiltered(t.fwd) {
		mime = from.track.Codec().MimeType
		// Publishers that answer keyframe requests (browsers) end the
		// wait sooner; the request is rate-limited per track.
		from.keyframe()
	}
	for {
		select {
		case <-t.done:
			return nil, nil, false, false
		case t.sfu.primeSlots <- struct{}{}:
			return gop, live, true, true
		case e := <-t.q:
			if mime != "" && e.from == from && !e.sw && isKeyframeStart(e.pkt.Payload, mime) {
				t.unsend(len(gop) + len(live))
				t.backlog.Add(-int64(len(live)))
				t.sfu.primeSkips.Add(1)
				e.sw = true // numbered on from the cached keyframe sent
				return nil, []qpkt{e}, false, true
			}
			live = append(live, e)
			if len(live) >= cap(t.q) {
				return gop, live, false, true
			}
		}
	}
}

// unsend takes back n packets counted as sent (primeWith, offer) that the
// track will not send after all: the stale group of pictures admit skips.
func (t *subTrack) unsend(n int) {
	if n == 0 {
		return
	}
	t.sent.Add(^uint64(n - 1))
	t.sfu.forwarded.Add(^uint64(n - 1))
}

// takeJoinSlot waits for one of the SFU's join slots and returns the
// function that gives it back (once; at the latest after joinSlotMax, so a
// client that never connects does not keep it). A WHEP subscriber holds
// one from before its offer is read until its connection is up or has
// failed: the SDP work (~2 ms of CPU each, a third of the edge's CPU in a
// burst of 240 joiners) and the ICE and DTLS handshakes of a burst run a
// few at a time, so they queue behind each other instead of taking turns
// on the CPU with the forwarders of the viewers already watching, and the
// joiners that came first connect first.
func (s *SFU) takeJoinSlot(ctx context.Context) (func(), error) {
	if s.joinSlots == nil {
		return func() {}, nil
	}
	select {
	case s.joinSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for other subscribers' handshakes: %w", ctx.Err())
	}
	var once sync.Once
	release := func() { once.Do(func() { <-s.joinSlots }) }
	time.AfterFunc(joinSlotMax, release)
	return release, nil
}
