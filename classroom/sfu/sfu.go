// Package sfu is the edge's selective forwarding unit: one publisher per
// room (the master teacher) sends tracks, and every packet of every track is
// forwarded as RTP, never transcoded, to each subscriber of the room.
//
// Each subscriber track has its own bounded queue and writer goroutine; when
// a subscriber cannot keep up its queue fills and packets are dropped for it
// alone, so a slow or dead classroom never slows the others. A new
// subscriber asks the publisher for a keyframe with a PLI, rate-limited per
// track, and subscribers' own PLI/FIR are relayed the same way.
//
// pion's default interceptors run on both sides: NACK generator/responder,
// RTCP sender/receiver reports, TWCC.
package sfu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Defaults for Config fields left zero.
const (
	DefaultQueuePackets = 512 // ~1.5 s of 2.5 Mbit/s video
	DefaultPLIInterval  = 500 * time.Millisecond
	DefaultTrackWait    = 2 * time.Second
)

// Errors callers map to API responses.
var (
	ErrBusy        = errors.New("the room already has a publisher")
	ErrNoPublisher = errors.New("nobody is publishing in this room yet")
	ErrBadOffer    = errors.New("the SDP offer is not usable")
	ErrNotFound    = errors.New("no such publisher or subscriber")
	ErrClosed      = errors.New("the SFU is closed")
)

// Config sets up an SFU.
type Config struct {
	Logger *slog.Logger
	// ICEAddrs restricts ICE host candidates to these addresses; empty
	// means every address of every interface. A loopback address here also
	// turns on loopback candidates (tests, single-host setups).
	ICEAddrs []net.IP
	// QueuePackets is each subscriber track's queue length.
	QueuePackets int
	// PLIInterval is the shortest gap between two keyframe requests to the
	// publisher for one track.
	PLIInterval time.Duration
	// TrackWait is how long a subscriber waits for a publisher's tracks to
	// start flowing before it gets whatever has arrived.
	TrackWait time.Duration
}

// ICEAddrsForListen derives Config.ICEAddrs from an HTTP listen address:
// an edge bound to one IP keeps its media on that IP too; an edge bound to
// all addresses (":8080") gathers on all of them.
func ICEAddrsForListen(listen string) []net.IP {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		return nil
	}
	return []net.IP{ip}
}

// SFU holds the rooms of this edge.
type SFU struct {
	cfg Config
	log *slog.Logger
	api *webrtc.API

	mu     sync.Mutex
	rooms  map[string]*room
	closed bool

	forwarded, dropped atomic.Uint64 // totals over all subscribers, ever
}

// Totals are edge-wide counters for metrics.
type Totals struct {
	Rooms, Publishers, Subscribers int
	Forwarded, Dropped             uint64
}

// Totals returns the edge-wide counters.
func (s *SFU) Totals() Totals {
	s.mu.Lock()
	t := Totals{Rooms: len(s.rooms)}
	for _, r := range s.rooms {
		if r.pub != nil {
			t.Publishers++
		}
		t.Subscribers += len(r.subs)
	}
	s.mu.Unlock()
	t.Forwarded, t.Dropped = s.forwarded.Load(), s.dropped.Load()
	return t
}

// New builds the pion API (default codecs and interceptors) and an empty SFU.
func New(cfg Config) (*SFU, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.QueuePackets <= 0 {
		cfg.QueuePackets = DefaultQueuePackets
	}
	if cfg.PLIInterval <= 0 {
		cfg.PLIInterval = DefaultPLIInterval
	}
	if cfg.TrackWait <= 0 {
		cfg.TrackWait = DefaultTrackWait
	}
	a, err := NewAPI(cfg.ICEAddrs)
	if err != nil {
		return nil, err
	}
	return &SFU{cfg: cfg, log: cfg.Logger, api: a, rooms: map[string]*room{}}, nil
}

// NewAPI returns a pion API with default codecs (VP8, VP9, H264, AV1, Opus,
// …), the default interceptors, no mDNS, short ICE timeouts so a vanished
// peer is noticed within seconds, and host candidates restricted to addrs
// when it is not empty. Tests use it for their own peers too.
func NewAPI(addrs []net.IP) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("register codecs: %w", err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, fmt.Errorf("register interceptors: %w", err)
	}
	var se webrtc.SettingEngine
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(3*time.Second, 5*time.Second, time.Second)
	if len(addrs) > 0 {
		var v4, v6, loop bool
		for _, ip := range addrs {
			if ip.To4() != nil {
				v4 = true
			} else {
				v6 = true
			}
			loop = loop || ip.IsLoopback()
		}
		var nt []webrtc.NetworkType
		if v4 {
			nt = append(nt, webrtc.NetworkTypeUDP4)
		}
		if v6 {
			nt = append(nt, webrtc.NetworkTypeUDP6)
		}
		se.SetNetworkTypes(nt)
		se.SetIncludeLoopbackCandidate(loop)
		se.SetIPFilter(func(ip net.IP) bool {
			for _, a := range addrs {
				if a.Equal(ip) {
					return true
				}
			}
			return false
		})
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

// room is one session's media: at most one publisher, many subscribers.
type room struct {
	id   string
	pub  *Publisher
	subs map[string]*Subscriber
}

func (s *SFU) roomLocked(id string) *room {
	r, ok := s.rooms[id]
	if !ok {
		r = &room{id: id, subs: map[string]*Subscriber{}}
		s.rooms[id] = r
	}
	return r
}

// Stats are counters of one room, for tests, metrics and the console.
type Stats struct {
	Publishing  bool
	Tracks      int
	Subscribers int
	Forwarded   uint64 // packets handed to subscriber queues
	Dropped     uint64 // packets dropped because a subscriber's queue was full
}

// RoomStats returns the counters of room id.
func (s *SFU) RoomStats(id string) Stats {
	s.mu.Lock()
	r := s.rooms[id]
	var st Stats
	if r == nil {
		s.mu.Unlock()
		return st
	}
	st.Subscribers = len(r.subs)
	pub := r.pub
	s.mu.Unlock()
	if pub != nil {
		st.Publishing = true
		for _, f := range pub.forwarders() {
			st.Tracks++
			for _, sub := range f.subs() {
				st.Forwarded += sub.sent.Load()
				st.Dropped += sub.dropped.Load()
			}
		}
	}
	return st
}

// Publish answers a publisher's offer (non-trickle: the answer holds every
// candidate) and starts forwarding its tracks once they arrive.
func (s *SFU) Publish(ctx context.Context, roomID, offer string) (*Publisher, string, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, "", ErrClosed
	}
	r := s.roomLocked(roomID)
	if r.pub != nil {
		s.mu.Unlock()
		return nil, "", ErrBusy
	}
	p := &Publisher{sfu: s, room: roomID, id: newID(), changed: make(chan struct{})}
	r.pub = p // reserve the slot while negotiating
	s.mu.Unlock()

	answer, err := p.negotiate(ctx, offer)
	if err != nil {
		p.Close()
		return nil, "", err
	}
	s.log.Info("publisher joined", "room", roomID, "publisher", p.id, "tracks", p.expected)
	return p, answer, nil
}

// Subscribe answers a subscriber's offer with every track the room's
// publisher sends (waiting up to TrackWait for them to start).
func (s *SFU) Subscribe(ctx context.Context, roomID, offer string) (*Subscriber, string, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, "", ErrClosed
	}
	var pub *Publisher
	if r := s.rooms[roomID]; r != nil {
		pub = r.pub
	}
	s.mu.Unlock()
	if pub == nil {
		return nil, "", ErrNoPublisher
	}
	fwds := pub.waitTracks(ctx, s.cfg.TrackWait)
	if len(fwds) == 0 {
		return nil, "", fmt.Errorf("%w: the publisher has not sent media yet", ErrNoPublisher)
	}
	sub := &Subscriber{sfu: s, room: roomID, id: newID(), pub: pub}
	answer, err := sub.negotiate(ctx, offer, fwds)
	if err != nil {
		sub.Close()
		return nil, "", err
	}
	s.mu.Lock()
	r := s.rooms[roomID]
	if s.closed || r == nil || r.pub != pub {
		s.mu.Unlock()
		sub.Close()
		return nil, "", fmt.Errorf("%w: the publisher left", ErrNoPublisher)
	}
	r.subs[sub.id] = sub
	s.mu.Unlock()
	for _, t := range sub.tracks {
		t.fwd.add(t)
	}
	if sub.closed.Load() {
		// It closed (connection failed) while being added: undo, since
		// Close may have run before the adds above.
		for _, t := range sub.tracks {
			t.fwd.remove(t)
		}
		s.detachSubscriber(sub)
		return nil, "", fmt.Errorf("%w: the subscriber's connection closed", ErrBadOffer)
	}
	s.log.Info("subscriber joined", "room", roomID, "subscriber", sub.id, "tracks", len(sub.tracks))
	return sub, answer, nil
}

// Remove closes the publisher (publisher true) or the subscriber with this
// id in room roomID.
func (s *SFU) Remove(roomID, id string, publisher bool) error {
	s.mu.Lock()
	r := s.rooms[roomID]
	var c interface{ Close() }
	if r != nil {
		if publisher {
			if r.pub != nil && r.pub.id == id {
				c = r.pub
			}
		} else if sub, ok := r.subs[id]; ok {
			c = sub
		}
	}
	s.mu.Unlock()
	if c == nil {
		return ErrNotFound
	}
	c.Close()
	return nil
}

// CloseRoom closes every peer of room id (the session ended).
func (s *SFU) CloseRoom(id string) {
	s.mu.Lock()
	r := s.rooms[id]
	delete(s.rooms, id)
	s.mu.Unlock()
	if r != nil {
		r.closeAll()
	}
}

// Close closes every room; later calls fail with ErrClosed.
func (s *SFU) Close() {
	s.mu.Lock()
	s.closed = true
	rooms := s.rooms
	s.rooms = map[string]*room{}
	s.mu.Unlock()
	for _, r := range rooms {
		r.closeAll()
	}
}

func (r *room) closeAll() {
	if r.pub != nil {
		r.pub.Close()
	}
	for _, sub := range r.subs {
		sub.Close()
	}
}

// detach forgets p (if it is still the room's publisher) and returns the
// subscribers that were watching it.
func (s *SFU) detachPublisher(p *Publisher) []*Subscriber {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[p.room]
	if r == nil || r.pub != p {
		return nil
	}
	r.pub = nil
	subs := make([]*Subscriber, 0, len(r.subs))
	for _, sub := range r.subs {
		subs = append(subs, sub)
	}
	if len(r.subs) == 0 {
		delete(s.rooms, p.room)
	}
	return subs
}

func (s *SFU) detachSubscriber(sub *Subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[sub.room]
	if r == nil || r.subs[sub.id] != sub {
		return
	}
	delete(r.subs, sub.id)
	if r.pub == nil && len(r.subs) == 0 {
		delete(s.rooms, sub.room)
	}
}

// gather sets the local description and waits for ICE gathering to finish.
func gather(ctx context.Context, pc *webrtc.PeerConnection, answer webrtc.SessionDescription) (string, error) {
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return "", fmt.Errorf("set local description: %w", err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return "", fmt.Errorf("ICE gathering: %w", ctx.Err())
	}
	return pc.LocalDescription().SDP, nil
}

// Publisher is the peer that sends a room's media.
type Publisher struct {
	sfu  *SFU
	room string
	id   string
	pc   *webrtc.PeerConnection

	mu       sync.Mutex
	fwds     []*forwarder
	expected int
	changed  chan struct{} // closed and replaced when fwds grows
	closed   bool
}

// ID is the publisher's resource id (the last part of its WHIP Location).
func (p *Publisher) ID() string { return p.id }

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
		if st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateClosed {
			go p.Close()
		}
	})
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
	return gather(ctx, pc, answer)
}

func (p *Publisher) onTrack(track *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	f := &forwarder{pub: p, track: track, interval: p.sfu.cfg.PLIInterval}
	f.list.Store(&[]*subTrack{})
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.fwds = append(p.fwds, f)
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	p.sfu.log.Info("publisher track", "room", p.room, "publisher", p.id, "kind", track.Kind().String(),
		"codec", track.Codec().MimeType, "ssrc", uint32(track.SSRC()))
	go func() {
		// Drain RTCP so the receiver's interceptors keep running.
		buf := make([]byte, 1500)
		for {
			if _, _, err := recv.Read(buf); err != nil {
				return
			}
		}
	}()
	f.run()
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
		done := p.closed || len(fwds) >= p.expected
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

// Close stops publishing and closes the subscribers that watched it: WHEP
// has no renegotiation, so they reconnect to get the next publisher.
func (p *Publisher) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	pc := p.pc
	p.mu.Unlock()
	if pc != nil {
		_ = pc.Close()
	}
	for _, sub := range p.sfu.detachPublisher(p) {
		sub.Close()
	}
	p.sfu.log.Info("publisher left", "room", p.room, "publisher", p.id)
}

func (p *Publisher) requestKeyframe(ssrc webrtc.SSRC) {
	p.mu.Lock()
	pc := p.pc
	p.mu.Unlock()
	if pc != nil {
		_ = pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(ssrc)}})
	}
}

// forwarder reads one publisher track and hands every packet to each
// subscriber track's queue.
type forwarder struct {
	pub      *Publisher
	track    *webrtc.TrackRemote
	interval time.Duration
	mu       sync.Mutex // serialises add/remove; readers use list
	list     atomic.Pointer[[]*subTrack]

	pliMu      sync.Mutex
	lastPLI    time.Time
	pliPending bool
}

func (f *forwarder) subs() []*subTrack { return *f.list.Load() }

func (f *forwarder) add(t *subTrack) {
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

// run forwards until the publisher's track ends. ReadRTP allocates a new
// packet each time, so a packet is shared read-only by every queue.
func (f *forwarder) run() {
	for {
		pkt, _, err := f.track.ReadRTP()
		if err != nil {
			return
		}
		for _, t := range f.subs() {
			t.offer(pkt)
		}
	}
}

// keyframe asks the publisher for a keyframe, at most once per interval:
// a request inside the interval is not dropped but coalesced into one PLI
// at the interval's end, so two classrooms joining 100 ms apart both get a
// keyframe promptly. Audio tracks need none.
func (f *forwarder) keyframe() {
	if f.track.Kind() != webrtc.RTPCodecTypeVideo {
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

// Subscriber is a peer that receives a room's media.
type Subscriber struct {
	sfu    *SFU
	room   string
	id     string
	pub    *Publisher
	pc     *webrtc.PeerConnection
	tracks []*subTrack

	closeOnce sync.Once
	closed    atomic.Bool
}

// ID is the subscriber's resource id (the last part of its WHEP Location).
func (s *Subscriber) ID() string { return s.id }

// subTrack is one publisher track as one subscriber receives it.
type subTrack struct {
	sfu     *SFU // nil in unit tests
	fwd     *forwarder
	local   *webrtc.TrackLocalStaticRTP
	q       chan *rtp.Packet
	done    chan struct{}
	sent    atomic.Uint64
	dropped atomic.Uint64
}

// offer queues pkt for this subscriber, dropping it if the queue is full.
func (t *subTrack) offer(pkt *rtp.Packet) {
	select {
	case t.q <- pkt:
		t.sent.Add(1)
		if t.sfu != nil {
			t.sfu.forwarded.Add(1)
		}
	default:
		t.dropped.Add(1)
		if t.sfu != nil {
			t.sfu.dropped.Add(1)
		}
	}
}

func (t *subTrack) write() {
	for {
		select {
		case <-t.done:
			return
		case pkt := <-t.q:
			// Header extension ids are per peer connection: the
			// publisher's do not mean the same to this subscriber, so
			// they are dropped (its own interceptors add TWCC).
			h := pkt.Header
			h.Extension, h.Extensions, h.ExtensionProfile = false, nil, 0
			_ = t.local.WriteRTP(&rtp.Packet{Header: h, Payload: pkt.Payload, PaddingSize: pkt.PaddingSize})
		}
	}
}

func (s *Subscriber) negotiate(ctx context.Context, offer string, fwds []*forwarder) (string, error) {
	pc, err := s.sfu.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", fmt.Errorf("new peer connection: %w", err)
	}
	s.pc = pc
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	for _, f := range fwds {
		local, err := webrtc.NewTrackLocalStaticRTP(f.track.Codec().RTPCodecCapability, f.track.ID(), f.track.StreamID())
		if err != nil {
			return "", fmt.Errorf("local track: %w", err)
		}
		sender, err := pc.AddTrack(local)
		if err != nil {
			return "", fmt.Errorf("%w: cannot send %s: %v", ErrBadOffer, f.track.Codec().MimeType, err)
		}
		t := &subTrack{sfu: s.sfu, fwd: f, local: local, q: make(chan *rtp.Packet, s.sfu.cfg.QueuePackets), done: make(chan struct{})}
		s.tracks = append(s.tracks, t)
		go s.readRTCP(sender, f)
	}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		s.sfu.log.Debug("subscriber connection state", "room", s.room, "subscriber", s.id, "state", st.String())
		switch st {
		case webrtc.PeerConnectionStateConnected:
			for _, t := range s.tracks {
				t.fwd.keyframe()
			}
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			go s.Close()
		}
	})
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	sdp, err := gather(ctx, pc, answer)
	if err != nil {
		return "", err
	}
	for _, t := range s.tracks {
		go t.write()
	}
	return sdp, nil
}

// readRTCP keeps the sender's interceptors (NACK responder, reports, TWCC)
// fed and relays keyframe requests to the publisher.
func (s *Subscriber) readRTCP(sender *webrtc.RTPSender, f *forwarder) {
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				f.keyframe()
			}
		}
	}
}

// Close stops the subscriber and frees its queues.
func (s *Subscriber) Close() {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		for _, t := range s.tracks {
			t.fwd.remove(t)
			close(t.done)
		}
		if s.pc != nil {
			_ = s.pc.Close()
		}
		s.sfu.detachSubscriber(s)
		s.sfu.log.Info("subscriber left", "room", s.room, "subscriber", s.id)
	})
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
