// Publisher: a peer sending media into a room under one source. It
// negotiates (and renegotiates) its connection, starts a forwarder for each
// incoming track and relays keyframe requests back to the sender.

package sfu

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// Publisher is a peer that sends media into a room under one source.
type Publisher struct {
	sfu    *SFU
	room   string
	source string
	id     string

	mu       sync.Mutex
	pc       *webrtc.PeerConnection
	fwds     []*forwarder
	groups   map[*webrtc.RTPReceiver]*layerGroup // a track's simulcast layers share its receiver
	expected int
	changed  chan struct{} // closed and replaced when fwds grows
	closed   bool
	done     chan struct{}   // closed by Close
	negMu    sync.Mutex      // serialises renegotiations
	relay    bool            // a cascade pull from another edge (Relay)
	screens  map[string]bool // track ids the client said are screen shares (SetScreens)
	counted  bool            // in SFU.peers (set by reserve, under the SFU's lock)
	owner    string          // who made it (SetOwner), under the SFU's lock

	iceGrace   atomic.Int64 // KeepThroughICEFailure (icerestart.go)
	iceChanged func()       // its callback, under mu
	recovering atomic.Bool  // waiting for a restart after ICE failed
}

// Done is closed when the publisher has closed (its connection failed or
// was closed, or Close was called).
func (p *Publisher) Done() <-chan struct{} { return p.done }

// ID is the publisher's resource id (the last part of its WHIP Location).
func (p *Publisher) ID() string { return p.id }

// Source is the label its tracks carry (their stream id at subscribers).
func (p *Publisher) Source() string { return p.source }

// SetScreens says which of the publisher's tracks (by track id, the
// msid's second part) are screen shares: a subscriber whose link is thin
// gives them its budget first (choose.go). Each publish replaces the list.
func (p *Publisher) SetScreens(trackIDs []string) {
	m := make(map[string]bool, len(trackIDs))
	for _, id := range trackIDs {
		m[id] = true
	}
	p.mu.Lock()
	p.screens = m
	p.mu.Unlock()
}

// isScreen reports whether the track with this id is a screen share.
func (p *Publisher) isScreen(trackID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.screens[trackID]
}

func newPublisher(s *SFU, roomID, source string) *Publisher {
	return &Publisher{sfu: s, room: roomID, source: source, id: newID(), changed: make(chan struct{}), done: make(chan struct{})}
}

func (p *Publisher) negotiate(ctx context.Context, offer string) (string, error) {
	pc, err := p.sfu.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", fmt.Errorf("new peer connection: %w", err)
	}
	p.mu.Lock()
	p.pc = pc
	closed := p.closed
	p.mu.Unlock()
	if closed {
		_ = pc.Close()
		return "", ErrClosed
	}
	pc.OnTrack(p.onTrack)
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		p.sfu.log.Debug("publisher connection state", "room", p.room, "publisher", p.id, "state", st.String())
		p.onPublisherState(pc, st)
	})
	return p.answer(ctx, offer)
}

// answer applies an offer (first or renegotiation) and returns the answer.
func (p *Publisher) answer(ctx context.Context, offer string) (string, error) {
	p.negMu.Lock()
	defer p.negMu.Unlock()
	p.mu.Lock()
	pc := p.pc
	p.mu.Unlock()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	n := 0
	for _, tr := range pc.GetTransceivers() {
		if tr.Direction() == webrtc.RTPTransceiverDirectionRecvonly || tr.Direction() == webrtc.RTPTransceiverDirectionSendrecv {
			n++
		}
	}
	if n == 0 {
		return "", fmt.Errorf("%w: it offers no audio or video to send", ErrBadOffer)
	}
	p.mu.Lock()
	p.expected = n
	p.mu.Unlock()
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	return Gather(ctx, pc, answer)
}

// Renegotiate answers a new offer on the publisher's existing connection:
// a screen share added mid-class. New tracks are forwarded as they start.
func (p *Publisher) Renegotiate(ctx context.Context, offer string) (string, error) {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return "", ErrNotFound
	}
	return p.answer(ctx, offer)
}

// AddCandidate adds a trickled ICE candidate from the publisher's client.
func (p *Publisher) AddCandidate(c webrtc.ICECandidateInit) error {
	p.mu.Lock()
	pc := p.pc
	p.mu.Unlock()
	return addCandidate(pc, c)
}

// Expect tells a relay publisher how many tracks its upstream announced,
// so WHEP watchers wait for all of them as they do for a WHIP publisher.
func (p *Publisher) Expect(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expected = n
}

func (p *Publisher) onTrack(track *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	f := &forwarder{pub: p, track: track, interval: p.sfu.cfg.PLIInterval, audio: track.Kind() == webrtc.RTPCodecTypeAudio,
		rid: track.RID(), id: track.ID()}
	f.svc = newSVCTrack(f)
	f.list.Store(&[]*subTrack{})
	f.lastAt.Store(time.Now().UnixNano())
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	if p.groups == nil {
		p.groups = map[*webrtc.RTPReceiver]*layerGroup{}
	}
	g := p.groups[recv]
	first := g == nil
	if first {
		g = &layerGroup{}
		p.groups[recv] = g
	}
	f.grp = g
	g.addLayer(f)
	if !f.audio {
		p.sfu.gops.Add(1)
		defer p.sfu.gops.Add(-1)
	}
	p.fwds = append(p.fwds, f)
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	p.sfu.log.Info("publisher track", "room", p.room, "source", p.source, "publisher", p.id, "kind", track.Kind().String(),
		"codec", track.Codec().MimeType, "fmtp", track.Codec().SDPFmtpLine, "ssrc", uint32(track.SSRC()), "rid", f.rid, "screen", p.isScreen(f.id))
	if c := track.Codec(); strings.EqualFold(c.MimeType, webrtc.MimeTypeH264) && highProfile(c.SDPFmtpLine) {
		p.sfu.log.Warn("the lesson's H264 uses a profile browsers do not decode; classrooms in a browser will not see it: set the encoder to baseline",
			"room", p.room, "fmtp", c.SDPFmtpLine)
	}
	go func() {
		// Drain RTCP so the receiver's interceptors keep running.
		buf := make([]byte, 1500)
		for {
			var err error
			if f.rid != "" {
				_, _, err = recv.ReadSimulcast(buf, f.rid)
			} else {
				_, _, err = recv.Read(buf)
			}
			if err != nil {
				return
			}
		}
	}()
	// Every layer is offered to the tap: the recorder picks the camera's
	// top one (classroom/recorder/layers.go) and leaves the others.
	f.tap = p.tapFor(f)
	p.sfu.Resync(p.room)
	f.run()
	if f.tap != nil {
		f.tap.End()
	}
	// Let go of the cached pictures now: whatever still points at the
	// forwarder (a closing subscriber, a recorder finishing) must not keep
	// seconds of video alive with it.
	f.mu.Lock()
	f.gop = gopCache{}
	f.mu.Unlock()
	f.tap = nil
	// The track ended (renegotiated away or the peer left).
	p.mu.Lock()
	for i, x := range p.fwds {
		if x == f {
			p.fwds = append(p.fwds[:i:i], p.fwds[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
	f.ended.Store(true)
	g.removeLayer(f)
	p.sfu.Resync(p.room)
}

// tracksOf keeps one forwarder per track (the primary of its layers).
func tracksOf(fwds []*forwarder) []*forwarder {
	seen := map[*layerGroup]bool{}
	var out []*forwarder
	for _, f := range fwds {
		if f.grp == nil {
			out = append(out, f)
			continue
		}
		if seen[f.grp] {
			continue
		}
		seen[f.grp] = true
		if pf := f.grp.primary(); pf != nil {
			out = append(out, pf)
		}
	}
	return out
}

func (p *Publisher) forwarders() []*forwarder {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*forwarder(nil), p.fwds...)
}

// waitTracks returns the publisher's tracks once all it announced have
// started, or what there is after wait.
func (p *Publisher) waitTracks(ctx context.Context, wait time.Duration) []*forwarder {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		p.mu.Lock()
		fwds, ch := append([]*forwarder(nil), p.fwds...), p.changed
		done := p.closed || len(tracksOf(fwds)) >= p.expected
		p.mu.Unlock()
		if done {
			return fwds
		}
		select {
		case <-ch:
		case <-t.C:
			return fwds
		case <-ctx.Done():
			return fwds
		}
	}
}

// Close stops publishing. WHEP subscribers that watched it are closed (WHEP
// has no renegotiation, so they reconnect to get the next publisher);
// renegotiable subscribers are offered the room without its tracks.
func (p *Publisher) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	pc := p.pc
	fwds := p.fwds
	p.fwds = nil
	p.mu.Unlock()
	defer func() {
		p.sfu.mu.Lock()
		counted := p.counted
		p.counted = false
		p.sfu.mu.Unlock()
		if counted {
			p.sfu.peers.Add(-1)
		}
	}()
	if pc != nil {
		_ = pc.Close()
	}
	p.sfu.detachPublisher(p)
	close(p.done) // after detaching: Publishing(source) is false from here
	for _, f := range fwds {
		f.ended.Store(true)
	}
	for _, sub := range p.sfu.roomSubs(p.room) {
		if sub.static && sub.watches(p) {
			sub.Close()
		} else {
			sub.kick()
		}
	}
	p.sfu.log.Info("publisher left", "room", p.room, "source", p.source, "publisher", p.id)
}

func (p *Publisher) requestKeyframe(ssrc webrtc.SSRC) {
	p.mu.Lock()
	pc := p.pc
	p.mu.Unlock()
	if pc != nil {
		_ = pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(ssrc)}})
	}
}
