// Tap: the hook that is handed every packet of the tracks it chooses (the
// lesson recorder), on the forwarding goroutine, and the keyframe requests it may make.

package sfu

import (
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// TapTrack is one publisher track as a tap sees it.
type TapTrack struct {
	Room, Source, Publisher string
	Kind                    webrtc.RTPCodecType
	Codec                   webrtc.RTPCodecParameters
	SSRC                    uint32
	// Expected is how many tracks the publisher announced in its offer,
	// so a tap can wait for all of them before it starts.
	Expected int
	// PublisherDone is closed when the publisher leaves.
	PublisherDone <-chan struct{}
	// Relay is true when the publisher is a cascade pull from another
	// edge: its keyframe requests cross the WAN.
	Relay bool
	fwd   *forwarder
}

// RequestKeyframe asks the publisher for a keyframe of this track. It goes
// through the same per-track rate limit (PLIInterval, coalesced) as the
// subscribers' requests, so a tap cannot flood the publisher.
func (t TapTrack) RequestKeyframe() {
	if t.fwd != nil {
		t.fwd.keyframe()
	}
}

// TapSink receives the packets of one tapped track. Packet runs on the
// track's forwarding goroutine, once per packet, after a muted source's
// audio is dropped: it must return at once (hand the packet to a bounded
// queue, drop when full). The packet is shared with every subscriber's
// queue and must not be modified. End is called once when the track ends.
type TapSink interface {
	Packet(pkt *rtp.Packet)
	End()
}

// Tap is told of each new publisher track and returns its sink, or nil to
// leave the track alone. It runs on the track's goroutine before the
// first packet is forwarded.
type Tap func(t TapTrack) TapSink

// SetTap installs tap for tracks that start from now on (the recorder of
// live lessons). nil removes it.
func (s *SFU) SetTap(tap Tap) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tap = tap
}

func (s *SFU) currentTap() Tap {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tap
}

// tapFor asks the SFU's tap about f's track.
func (p *Publisher) tapFor(f *forwarder) TapSink {
	tap := p.sfu.currentTap()
	if tap == nil {
		return nil
	}
	p.mu.Lock()
	expected := p.expected
	p.mu.Unlock()
	return tap(TapTrack{Room: p.room, Source: p.source, Publisher: p.id, Kind: f.track.Kind(), Codec: f.track.Codec(),
		SSRC: uint32(f.track.SSRC()), Expected: expected, PublisherDone: p.done, Relay: p.relay, fwd: f})
}
