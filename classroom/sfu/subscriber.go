// Subscriber: a peer receiving a room's media, negotiated once (WHEP) or
// renegotiated by the edge as tracks come and go; it attaches its tracks
// to forwarders and reads its RTCP (keyframe requests, NACK, TWCC).

package sfu

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// Subscriber is a peer that receives a room's media.
type Subscriber struct {
	sfu    *SFU
	room   string
	id     string
	static bool   // WHEP: negotiated once from the client's offer
	owner  string // who made it (SetOwner), under the SFU's lock

	// Renegotiable subscribers only.
	pcCfg   webrtc.Configuration
	filter  func(source string) bool
	onOffer func(sdp string)
	kickc   chan struct{}
	done    chan struct{}
	pending bool // tracks changed while an offer was outstanding

	iceGrace   atomic.Int64 // RestartICEOnFailure (icerestart.go)
	recovering atomic.Bool  // restarting ICE after a disconnect or failure
	iceRestart bool         // the next offer restarts ICE (under mu)

	mu     sync.Mutex
	pc     *webrtc.PeerConnection
	tracks []*subTrack

	// gate holds the send-side estimator of pc's link (nil until pc
	// exists, or when layers are not chosen), under its own lock: newPC
	// runs both with and without mu held.
	bweMu sync.Mutex
	gate  *bweGate

	cong congestion
	// conn is the socket of pc's selected candidate pair, once
	// connected (nil: not found, or batching off): the forwarders batch
	// each video frame on it (batchconn.go).
	conn atomic.Pointer[batchConn]
	tx   atomic.Uint64 // bytes sent to this subscriber as the link counts them (wireOverhead), padding included
	// What the layer chooser last decided, for metrics: the link budget
	// (bits/s, 0 before it is known), gcc's own target and the loss.
	budget, target atomic.Int64
	lossPPM        atomic.Int64

	// holdLow, when set, names sources whose video this subscriber takes
	// at their lowest layer whatever its link carries (the master's grid
	// of classrooms; SetHoldLow).
	holdLow atomic.Pointer[func(source string) bool]

	// joined gives back the SFU's join slot (takeJoinSlot) once the
	// connection is up, has failed or the subscriber closed; nil for
	// renegotiable subscribers. Set before the connection exists.
	joined func()

	closeOnce sync.Once
	closed    atomic.Bool
	stopCong  chan struct{}
}

// SetHoldLow makes the subscriber take the video of every source f
// accepts at its lowest simulcast layer, whatever its link carries: the
// master teacher's grid shows every classroom small and only the one on
// stage large. f is asked again every layer-choice tick, so a change of
// stage takes effect within a tick (and a keyframe).
func (s *Subscriber) SetHoldLow(f func(source string) bool) { s.holdLow.Store(&f) }

// heldLow reports whether t's video is held at its lowest layer.
func (s *Subscriber) heldLow(t *subTrack) bool {
	f := s.holdLow.Load()
	return f != nil && t.fwd.pub != nil && (*f)(t.fwd.pub.source)
}

// ID is the subscriber's resource id (the last part of its WHEP Location).
func (s *Subscriber) ID() string { return s.id }

// Done is closed when a renegotiable subscriber has closed (its
// connection failed, or Close).
func (s *Subscriber) Done() <-chan struct{} { return s.done }

// watches reports whether s receives any track of p.
func (s *Subscriber) watches(p *Publisher) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tracks {
		if t.fwd.pub == p {
			return true
		}
	}
	return false
}

func (s *Subscriber) newPC() (*webrtc.PeerConnection, error) {
	pc, gate, err := s.sfu.newSubscriberPC(s.pcCfg)
	if err != nil {
		return nil, err
	}
	s.bweMu.Lock()
	s.gate = gate
	s.bweMu.Unlock()
	// A pair chosen while connected (no state change): frames are then
	// batched on the socket the connection uses now.
	pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(s.useConn)
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		s.sfu.log.Debug("subscriber connection state", "room", s.room, "subscriber", s.id, "state", st.String())
		if s.joined != nil && (st == webrtc.PeerConnectionStateConnected || st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateClosed) {
			s.joined()
		}
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.findConn(pc)
			s.attachReady()
		default:
			s.onSubscriberState(pc, st)
		}
	})
	return pc, nil
}

// findConn looks up the socket pc's selected candidate pair uses (again
// after an ICE restart, which may pick another).
func (s *Subscriber) findConn(pc *webrtc.PeerConnection) {
	p, err := pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil {
		p = nil
	}
	s.useConn(p)
}

// useConn batches on the socket of pair p (none when p is nil or its
// socket is not a batchConn).
func (s *Subscriber) useConn(p *webrtc.ICECandidatePair) {
	var c *batchConn
	if p != nil && p.Local != nil {
		if ip, err := netip.ParseAddr(p.Local.Address); err == nil {
			c = s.sfu.conns.find(netip.AddrPortFrom(ip, p.Local.Port))
		}
	}
	s.conn.Store(c)
}

// attachReady starts forwarding to every negotiated track once the
// connection is up (pion drops what is written before SRTP is ready), and
// asks for a keyframe for video tracks the cache could not prime.
func (s *Subscriber) attachReady() {
	s.mu.Lock()
	if s.closed.Load() || s.pc == nil || s.pc.ConnectionState() != webrtc.PeerConnectionStateConnected {
		s.mu.Unlock()
		return
	}
	var need []*forwarder
	for _, t := range s.tracks {
		if t.negotiated && !t.attached {
			t.attached = true
			primed, took := t.attach()
			if !primed {
				need = append(need, t.fwd)
			}
			s.cong.quietFor(took)
		}
	}
	s.mu.Unlock()
	for _, f := range need {
		f.keyframe()
	}
}

func (s *Subscriber) keyframes() {
	s.mu.Lock()
	tracks := append([]*subTrack(nil), s.tracks...)
	s.mu.Unlock()
	for _, t := range tracks {
		t.keyframe()
	}
}

func (s *Subscriber) negotiate(ctx context.Context, offer string, fwds []*forwarder) (string, error) {
	pc, err := s.newPC()
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.pc = pc
	s.mu.Unlock()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	for _, f := range tracksOf(fwds) {
		t, err := s.newSubTrack(pc, f)
		if err != nil {
			return "", err
		}
		s.mu.Lock()
		s.tracks = append(s.tracks, t)
		s.mu.Unlock()
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	sdp, err := Gather(ctx, pc, answer)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	for _, t := range s.tracks {
		t.negotiated = true
		go t.write()
	}
	s.mu.Unlock()
	return sdp, nil
}

// kick asks the subscriber's goroutine to bring its tracks up to date.
func (s *Subscriber) kick() {
	if s.static {
		return
	}
	select {
	case s.kickc <- struct{}{}:
	default:
	}
}

func (s *Subscriber) loop() {
	for {
		select {
		case <-s.done:
			return
		case <-s.kickc:
			if err := s.sync(); err != nil {
				s.sfu.log.Warn("subscriber renegotiation failed; closing it", "room", s.room, "subscriber", s.id, "err", err)
				s.Close()
				return
			}
		}
	}
}

// sync adds the tracks the filter now wants and removes those it no longer
// wants (or that ended), then offers the result to the client.
func (s *Subscriber) sync() error {
	want := tracksOf(s.sfu.forwardersFor(s.room, s.filter))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil
	}
	wanted := map[*forwarder]bool{}
	for _, f := range want {
		if !f.ended.Load() {
			wanted[f] = true
		}
	}
	changed := false
	kept := s.tracks[:0:0]
	for _, t := range s.tracks {
		if wanted[t.fwd] {
			delete(wanted, t.fwd)
			kept = append(kept, t)
			continue
		}
		t.detach()
		close(t.done)
		if s.pc != nil {
			_ = s.pc.RemoveTrack(t.sender)
		}
		changed = true
	}
	s.tracks = kept
	if len(wanted) > 0 && s.pc == nil {
		pc, err := s.newPC()
		if err != nil {
			return err
		}
		s.pc = pc
	}
	for _, f := range want {
		if !wanted[f] {
			continue
		}
		t, err := s.newSubTrack(s.pc, f)
		if err != nil {
			return err
		}
		s.tracks = append(s.tracks, t)
		go t.write() // attached once the client has answered and the connection is up
		changed = true
	}
	if s.iceRestart && s.pc != nil && s.pc.ConnectionState() == webrtc.PeerConnectionStateConnected {
		s.iceRestart = false // it came back by itself
	}
	if !changed && !s.pending && !s.iceRestart {
		return nil
	}
	if s.pc == nil {
		return nil
	}
	if s.pc.SignalingState() != webrtc.SignalingStateStable {
		s.pending = true // offered again once the client answers
		return nil
	}
	s.pending = false
	for _, t := range s.tracks {
		t.offered = true
	}
	var opts *webrtc.OfferOptions
	if s.iceRestart {
		opts = &webrtc.OfferOptions{ICERestart: true}
		s.iceRestart = false
	}
	offer, err := s.pc.CreateOffer(opts)
	if err != nil {
		return fmt.Errorf("create offer: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sdp, err := Gather(ctx, s.pc, offer)
	if err != nil {
		return err
	}
	s.onOffer(sdp)
	return nil
}

// Answer applies the client's answer to the edge's latest offer.
func (s *Subscriber) Answer(sdp string) error {
	s.mu.Lock()
	pc := s.pc
	var err error
	switch {
	case pc == nil || pc.SignalingState() != webrtc.SignalingStateHaveLocalOffer:
		err = fmt.Errorf("%w: no offer is waiting for an answer", ErrBadOffer)
	default:
		if e := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); e != nil {
			err = fmt.Errorf("%w: %v", ErrBadOffer, e)
			break
		}
		for _, t := range s.tracks {
			if t.offered {
				t.negotiated = true
			}
		}
	}
	pending := s.pending
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.attachReady() // tracks this offer added start now (or on connect)
	if pending {
		s.kick()
	}
	return nil
}

// AddCandidate adds a trickled ICE candidate from the subscriber's client.
func (s *Subscriber) AddCandidate(c webrtc.ICECandidateInit) error {
	s.mu.Lock()
	pc := s.pc
	s.mu.Unlock()
	return addCandidate(pc, c)
}

// readRTCP keeps the sender's interceptors (NACK responder, reports, TWCC)
// fed and relays keyframe requests to the publisher.
//
// Read with one buffer, not ReadRTCP: that allocates a buffer per read and
// parses the packets again, where the NACK responder below has parsed
// them already into the attributes.
func (s *Subscriber) readRTCP(sender *webrtc.RTPSender, t *subTrack) {
	buf := make([]byte, 1500)
	for {
		n, attr, err := sender.Read(buf)
		if err != nil {
			return
		}
		if attr == nil {
			attr = interceptor.Attributes{}
		}
		pkts, err := attr.GetRTCPPackets(buf[:n])
		if err != nil {
			continue // not RTCP we can read; the next may be
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				t.keyframe()
			case *rtcp.TransportLayerNack:
				s.sfu.nacks.Add(1) // answered by the NACK responder from its cache
			case *rtcp.TransportLayerCC:
				s.sfu.twcc.Add(1)
				s.cong.feedback(p.(*rtcp.TransportLayerCC))
			case *rtcp.ReceiverEstimatedMaximumBitrate:
				s.sfu.remb.Add(1)
			}
		}
	}
}

// Close stops the subscriber and frees its queues.
func (s *Subscriber) Close() {
	s.closeOnce.Do(func() {
		defer s.sfu.peers.Add(-1)
		if s.joined != nil {
			s.joined()
		}
		s.closed.Store(true)
		if s.done != nil {
			close(s.done)
		}
		if s.stopCong != nil {
			close(s.stopCong)
		}
		s.mu.Lock()
		tracks, pc := s.tracks, s.pc
		s.tracks = nil
		s.mu.Unlock()
		for _, t := range tracks {
			t.detach()
			close(t.done)
		}
		if pc != nil {
			_ = pc.Close()
		}
		s.sfu.detachSubscriber(s)
		s.sfu.log.Info("subscriber left", "room", s.room, "subscriber", s.id)
	})
}
