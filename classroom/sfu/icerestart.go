// ICE restart: a network blip that the control connection (TCP) rides out
// still takes a media connection's ICE to disconnected and, after the ICE
// timeouts, to failed. Closing the connection then would cost a new
// negotiation, new forwarders and a visible gap; a peer with a control
// channel instead keeps its connection for a grace period while ICE is
// restarted on it (new ufrag/pwd, same DTLS and tracks). Whoever made the
// offer restarts: the client for its publish connection (a re-offer
// answered by Renegotiate), the edge for a control subscriber (an offer
// with ICERestart sent through onOffer). WHIP, WHEP and cascade peers have
// no channel for a restart and still close on failure.

package sfu

import (
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"
)

// ICE restart timing.
const (
	// iceSettle is how long a disconnected subscriber is left to recover by
	// itself (a short blip: consent checks get through again) before the
	// edge offers an ICE restart.
	iceSettle = 1500 * time.Millisecond
	// iceRestartEvery spaces the edge's restart offers while the link is
	// still down (each one is answered only once it is back).
	iceRestartEvery = 4 * time.Second
)

// KeepThroughICEFailure makes the publisher wait up to grace, when its ICE
// fails, for the client to restart ICE with a re-offer (Renegotiate)
// before it closes. Zero (the default: WHIP) closes at once. Meanwhile
// Publishing reports it as not publishing; changed (if set) is called when
// it starts waiting and when its connection is back.
func (p *Publisher) KeepThroughICEFailure(grace time.Duration, changed func()) {
	p.mu.Lock()
	p.iceChanged = changed
	p.mu.Unlock()
	p.iceGrace.Store(int64(grace))
}

// RestartICEOnFailure makes a renegotiable subscriber restart ICE itself
// when its connection goes disconnected or failed, offering again every few
// seconds for up to grace before it closes. Zero (the default) closes at
// once on failure.
func (s *Subscriber) RestartICEOnFailure(grace time.Duration) {
	if !s.static {
		s.iceGrace.Store(int64(grace))
	}
}

// onPublisherState runs the publisher's side of a failure: wait for the
// client's restart, or close.
func (p *Publisher) onPublisherState(pc *webrtc.PeerConnection, st webrtc.PeerConnectionState) {
	grace := time.Duration(p.iceGrace.Load())
	switch {
	case st == webrtc.PeerConnectionStateClosed, st == webrtc.PeerConnectionStateFailed && grace <= 0:
		go p.Close()
	case st == webrtc.PeerConnectionStateFailed && p.recovering.CompareAndSwap(false, true):
		p.sfu.log.Info("publisher's ICE failed; waiting for the client to restart it", "room", p.room, "source", p.source, "publisher", p.id, "grace", grace)
		p.mu.Lock()
		changed := p.iceChanged
		p.mu.Unlock()
		go func() {
			if changed != nil {
				changed()
			}
			switch awaitICE(p.done, pc, grace, 0, nil, &p.sfu.iceRecovered) {
			case iceGone:
				p.recovering.Store(false)
				return
			case iceTimeout:
				p.sfu.log.Warn("publisher's ICE was not restarted in time; closing it", "room", p.room, "source", p.source, "publisher", p.id)
				p.Close()
				p.recovering.Store(false)
				return
			}
			p.recovering.Store(false)
			p.sfu.log.Info("publisher's connection is back", "room", p.room, "source", p.source, "publisher", p.id)
			if changed != nil {
				changed()
			}
		}()
	}
}

// onSubscriberState runs the subscriber's side: restart ICE (after a short
// wait for a disconnected one), or close.
func (s *Subscriber) onSubscriberState(pc *webrtc.PeerConnection, st webrtc.PeerConnectionState) {
	grace := time.Duration(s.iceGrace.Load())
	switch {
	case st == webrtc.PeerConnectionStateClosed, st == webrtc.PeerConnectionStateFailed && grace <= 0:
		go s.Close()
	case grace > 0 && (st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateDisconnected) &&
		s.recovering.CompareAndSwap(false, true):
		s.sfu.log.Info("subscriber's ICE "+st.String()+"; restarting it", "room", s.room, "subscriber", s.id, "grace", grace)
		go func() {
			defer s.recovering.Store(false)
			if awaitICE(s.done, pc, grace, iceSettle, s.restartICE, &s.sfu.iceRecovered) == iceTimeout {
				s.sfu.log.Warn("subscriber's ICE restart did not connect in time; closing it", "room", s.room, "subscriber", s.id)
				s.Close()
			}
		}()
	}
}

// restartICE asks the subscriber's goroutine for an offer with new ICE
// credentials.
func (s *Subscriber) restartICE() {
	s.mu.Lock()
	s.iceRestart = true
	s.mu.Unlock()
	s.sfu.iceRestarts.Add(1)
	s.kick()
}

// How awaitICE ended.
type iceOutcome int

const (
	iceBack    iceOutcome = iota // connected again (counted in recovered)
	iceGone                      // the peer closed meanwhile (done, or pc closed)
	iceTimeout                   // grace passed
)

// awaitICE waits until pc is connected again, the peer closes, or grace
// has passed. restart, if set, is called after settle and then every
// iceRestartEvery while pc is not connected.
func awaitICE(done <-chan struct{}, pc *webrtc.PeerConnection, grace, settle time.Duration, restart func(), recovered *atomic.Uint64) iceOutcome {
	start := time.Now()
	next := start.Add(settle)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return iceGone
		case <-tick.C:
		}
		switch pc.ConnectionState() {
		case webrtc.PeerConnectionStateConnected:
			recovered.Add(1)
			return iceBack
		case webrtc.PeerConnectionStateClosed:
			return iceGone
		}
		now := time.Now()
		if now.Sub(start) >= grace {
			return iceTimeout
		}
		if restart != nil && !now.Before(next) {
			restart()
			next = now.Add(iceRestartEvery)
		}
	}
}
