// Package sfu is the edge's selective forwarding unit. A room (one live
// session) has publishers, each labelled with a source ("master" for the
// lesson, "classroom:<id>" for a classroom's return video, …), and
// subscribers that each choose by a filter which sources they receive.
// Every packet of every track is forwarded as RTP, never transcoded.
//
// Two kinds of subscriber exist. A WHEP subscriber is negotiated once from
// the client's offer and keeps the tracks it got. A renegotiable subscriber
// (the WebSocket control channel) is offered new tracks by the edge whenever
// a publisher adds or removes one or its filter changes (a classroom goes on
// stage), and answers each offer.
//
// Each subscriber track has its own bounded queue and writer goroutine; when
// a subscriber cannot keep up its queue fills and packets are dropped for it
// alone, so a slow or dead classroom never slows the others. A new
// subscriber is first given the cached group of pictures (the last VP8/H264
// keyframe and what followed), so it shows the picture at once even when
// the publisher ignores keyframe requests (OBS); without a cache it asks
// the publisher with a PLI, rate-limited per track, and subscribers' own
// PLI/FIR are relayed the same way.
//
// pion's default interceptors run on both sides: NACK generator/responder
// (a subscriber's NACK is answered from the edge's own packet cache, by RTX
// when negotiated), RTCP sender/receiver reports, TWCC feedback to
// publishers; and the edge stamps transport-wide sequence numbers on what it
// sends so subscribers report TWCC feedback to it (counted in metrics).
package sfu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Defaults for Config fields left zero.
const (
	DefaultQueuePackets = 1024 // ~3.5 s of 2.5 Mbit/s video: room for a cached GOP plus live packets
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
	muted  map[string]bool // room + "\x00" + source
	closed bool
	tap    Tap // sees every packet of the tracks it chooses (the lesson recorder)

	forwarded, dropped atomic.Uint64 // totals over all subscribers, ever
	nacks, twcc, remb  atomic.Uint64 // feedback received from subscribers
	pauses, resumes    atomic.Uint64 // video paused/resumed for weak links

	// Live objects, for the gauges that must return to zero when the
	// school is idle: peers (publishers and subscribers not yet closed)
	// and video forwarders, each with its keyframe cache.
	peers, gops atomic.Int64
}

// Totals are edge-wide counters for metrics.
type Totals struct {
	Rooms, Publishers, Subscribers int
	// Peers are publishers and subscribers not yet closed, registered in
	// a room or still negotiating; KeyframeCaches are the video tracks
	// being forwarded, each holding its last group of pictures.
	Peers, KeyframeCaches int
	Forwarded, Dropped    uint64
	// Feedback from subscribers: NACKs (answered from the packet cache),
	// TWCC and REMB congestion reports.
	NACKs, TWCC, REMB uint64
	// VideoPauses and VideoResumes count subscribers whose link was too
	// weak for video (audio went on) and the probes that brought it back.
	VideoPauses, VideoResumes uint64
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
	return &SFU{cfg: cfg, log: cfg.Logger, api: a, rooms: map[string]*room{}, muted: map[string]bool{}}, nil
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
	// NACK a missing packet at most 3 times: unbounded re-NACKs (pion's
	// default) let a lossy WAN leg of a cascade ask for the same packets
	// ten times a second, multiplying the traffic on the very link that is
	// struggling.
	if err := webrtc.RegisterDefaultInterceptorsWithOptions(me, ir,
		webrtc.WithNackGeneratorOptions(nack.GeneratorMaxNacksPerPacket(3))); err != nil {
		return nil, fmt.Errorf("register interceptors: %w", err)
	}
	// Put transport-wide sequence numbers on what the edge sends, so
	// subscribers report per-packet arrival (TWCC feedback). The defaults
	// only generate feedback for what the edge receives.
	if err := webrtc.ConfigureTWCCHeaderExtensionSender(me, ir); err != nil {
		return nil, fmt.Errorf("register TWCC header extension: %w", err)
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

// SourceMaster labels the lesson's publisher (WHIP, the master's control
// channel, or a cascade from another edge).
const SourceMaster = "master"

// room is one session's media.
type room struct {
	id   string
	pubs map[string]*Publisher // by source
	subs map[string]*Subscriber
}

func (s *SFU) roomLocked(id string) *room {
	r, ok := s.rooms[id]
	if !ok {
		r = &room{id: id, pubs: map[string]*Publisher{}, subs: map[string]*Subscriber{}}
		s.rooms[id] = r
	}
	return r
}

// Stats are counters of one room, for tests, metrics and the console.
type Stats struct {
	Publishing  bool // the master source is publishing
	Publishers  int
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
	st.Publishers = len(r.pubs)
	st.Publishing = r.pubs[SourceMaster] != nil
	pubs := make([]*Publisher, 0, len(r.pubs))
	for _, p := range r.pubs {
		pubs = append(pubs, p)
	}
	s.mu.Unlock()
	for _, pub := range pubs {
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

// Totals returns the edge-wide counters.
func (s *SFU) Totals() Totals {
	s.mu.Lock()
	t := Totals{Rooms: len(s.rooms)}
	for _, r := range s.rooms {
		t.Publishers += len(r.pubs)
		t.Subscribers += len(r.subs)
	}
	s.mu.Unlock()
	t.Peers, t.KeyframeCaches = int(s.peers.Load()), int(s.gops.Load())
	t.Forwarded, t.Dropped = s.forwarded.Load(), s.dropped.Load()
	t.NACKs, t.TWCC, t.REMB = s.nacks.Load(), s.twcc.Load(), s.remb.Load()
	t.VideoPauses, t.VideoResumes = s.pauses.Load(), s.resumes.Load()
	return t
}

// Publishing reports whether source publishes in roomID.
func (s *SFU) Publishing(roomID, source string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[roomID]
	return r != nil && r.pubs[source] != nil
}

// reserve claims source in roomID for p.
func (s *SFU) reserve(roomID string, p *Publisher) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	r := s.roomLocked(roomID)
	if r.pubs[p.source] != nil {
		return ErrBusy
	}
	r.pubs[p.source] = p
	p.counted = true
	s.peers.Add(1)
	return nil
}

// Publish answers the master's offer (WHIP). See PublishSource.
func (s *SFU) Publish(ctx context.Context, roomID, offer string) (*Publisher, string, error) {
	return s.PublishSource(ctx, roomID, SourceMaster, offer)
}

// PublishSource answers a publisher's offer (non-trickle: the answer holds
// every candidate) and starts forwarding its tracks, labelled source, once
// they arrive. A room has at most one publisher per source.
func (s *SFU) PublishSource(ctx context.Context, roomID, source, offer string) (*Publisher, string, error) {
	p := newPublisher(s, roomID, source)
	if err := s.reserve(roomID, p); err != nil {
		return nil, "", err
	}
	answer, err := p.negotiate(ctx, offer)
	if err != nil {
		p.Close()
		return nil, "", err
	}
	s.log.Info("publisher joined", "room", roomID, "source", source, "publisher", p.id, "tracks", p.expected)
	return p, answer, nil
}

// NewPeerConnection makes a peer connection with the SFU's settings (codecs,
// interceptors, ICE addresses) for a relay the caller negotiates.
func (s *SFU) NewPeerConnection(cfg webrtc.Configuration) (*webrtc.PeerConnection, error) {
	return s.api.NewPeerConnection(cfg)
}

// Relay makes pc, a peer connection the caller negotiates itself (a
// cascade's WHEP pull from another edge), the publisher of source in
// roomID: its incoming tracks are forwarded like any publisher's, and
// keyframe requests go back through pc. Call before setting pc's remote
// description so no track is missed.
func (s *SFU) Relay(roomID, source string, pc *webrtc.PeerConnection) (*Publisher, error) {
	p := newPublisher(s, roomID, source)
	p.pc = pc
	p.relay = true
	if err := s.reserve(roomID, p); err != nil {
		return nil, err
	}
	pc.OnTrack(p.onTrack)
	return p, nil
}

func newPublisher(s *SFU, roomID, source string) *Publisher {
	return &Publisher{sfu: s, room: roomID, source: source, id: newID(), changed: make(chan struct{}), done: make(chan struct{})}
}

// Subscribe answers a WHEP subscriber's offer with every track the room's
// master sends (waiting up to TrackWait for them to start).
func (s *SFU) Subscribe(ctx context.Context, roomID, offer string) (*Subscriber, string, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, "", ErrClosed
	}
	var pub *Publisher
	if r := s.rooms[roomID]; r != nil {
		pub = r.pubs[SourceMaster]
	}
	s.mu.Unlock()
	if pub == nil {
		return nil, "", ErrNoPublisher
	}
	fwds := pub.waitTracks(ctx, s.cfg.TrackWait)
	if len(fwds) == 0 {
		return nil, "", fmt.Errorf("%w: the publisher has not sent media yet", ErrNoPublisher)
	}
	sub := &Subscriber{sfu: s, room: roomID, id: newID(), static: true, stopCong: make(chan struct{})}
	s.peers.Add(1)
	go sub.adapt()
	answer, err := sub.negotiate(ctx, offer, fwds)
	if err != nil {
		sub.Close()
		return nil, "", err
	}
	s.mu.Lock()
	r := s.rooms[roomID]
	if s.closed || r == nil || r.pubs[SourceMaster] != pub {
		s.mu.Unlock()
		sub.Close()
		return nil, "", fmt.Errorf("%w: the publisher left", ErrNoPublisher)
	}
	r.subs[sub.id] = sub
	s.mu.Unlock()
	if sub.closed.Load() {
		// It closed (connection failed) while being registered.
		s.detachSubscriber(sub)
		return nil, "", fmt.Errorf("%w: the subscriber's connection closed", ErrBadOffer)
	}
	sub.attachReady() // in case it connected already; otherwise on connect
	s.log.Info("subscriber joined", "room", roomID, "subscriber", sub.id, "tracks", len(fwds))
	return sub, answer, nil
}

// NewSubscriber adds a renegotiable subscriber to roomID that receives the
// sources filter accepts. The edge makes the offers: onOffer is called with
// each one (from the subscriber's own goroutine), and the client's answer
// goes to Answer. No peer connection exists until there is a track to send.
func (s *SFU) NewSubscriber(roomID string, filter func(source string) bool, onOffer func(sdp string)) (*Subscriber, error) {
	return s.NewSubscriberConfig(roomID, webrtc.Configuration{}, filter, onOffer)
}

// NewSubscriberConfig is NewSubscriber with peer-connection settings (ICE
// servers for a cascade's uplink over the WAN).
func (s *SFU) NewSubscriberConfig(roomID string, cfg webrtc.Configuration, filter func(source string) bool, onOffer func(sdp string)) (*Subscriber, error) {
	sub := &Subscriber{sfu: s, room: roomID, id: newID(), filter: filter, onOffer: onOffer, pcCfg: cfg,
		kickc: make(chan struct{}, 1), done: make(chan struct{}), stopCong: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.roomLocked(roomID).subs[sub.id] = sub
	s.peers.Add(1)
	s.mu.Unlock()
	go sub.adapt()
	go sub.loop()
	sub.kick()
	s.log.Info("subscriber joined", "room", roomID, "subscriber", sub.id, "renegotiable", true)
	return sub, nil
}

// Resync re-evaluates every renegotiable subscriber's filter in roomID
// (after a classroom went on or off stage).
func (s *SFU) Resync(roomID string) {
	for _, sub := range s.roomSubs(roomID) {
		sub.kick()
	}
}

func (s *SFU) roomSubs(roomID string) []*Subscriber {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[roomID]
	if r == nil {
		return nil
	}
	out := make([]*Subscriber, 0, len(r.subs))
	for _, sub := range r.subs {
		out = append(out, sub)
	}
	return out
}

// SetMuted stops (or resumes) forwarding the audio of source in roomID:
// the mute is enforced by the edge, whatever the muted client does.
func (s *SFU) SetMuted(roomID, source string, muted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := roomID + "\x00" + source
	if muted {
		s.muted[k] = true
	} else {
		delete(s.muted, k)
	}
}

func (s *SFU) isMuted(roomID, source string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.muted[roomID+"\x00"+source]
}

// Remove closes the publisher (publisher true) or the subscriber with this
// id in room roomID.
func (s *SFU) Remove(roomID, id string, publisher bool) error {
	s.mu.Lock()
	r := s.rooms[roomID]
	var c interface{ Close() }
	if r != nil {
		if publisher {
			for _, p := range r.pubs {
				if p.id == id {
					c = p
				}
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
	for k := range s.muted {
		if len(k) > len(id) && k[:len(id)+1] == id+"\x00" {
			delete(s.muted, k)
		}
	}
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
	for _, p := range r.pubs {
		p.Close()
	}
	for _, sub := range r.subs {
		sub.Close()
	}
}

// detachPublisher forgets p (if it is still its source's publisher).
func (s *SFU) detachPublisher(p *Publisher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[p.room]
	if r == nil || r.pubs[p.source] != p {
		return
	}
	delete(r.pubs, p.source)
	if len(r.pubs) == 0 && len(r.subs) == 0 {
		delete(s.rooms, p.room)
	}
}

func (s *SFU) detachSubscriber(sub *Subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[sub.room]
	if r == nil || r.subs[sub.id] != sub {
		return
	}
	delete(r.subs, sub.id)
	if len(r.pubs) == 0 && len(r.subs) == 0 {
		delete(s.rooms, sub.room)
	}
}

// forwardersFor lists the tracks of every publisher in roomID whose
// source keep accepts.
func (s *SFU) forwardersFor(roomID string, keep func(string) bool) []*forwarder {
	s.mu.Lock()
	r := s.rooms[roomID]
	var pubs []*Publisher
	if r != nil {
		for src, p := range r.pubs {
			if keep(src) {
				pubs = append(pubs, p)
			}
		}
	}
	s.mu.Unlock()
	var out []*forwarder
	for _, p := range pubs {
		out = append(out, p.forwarders()...)
	}
	return out
}

// gather sets the local description and waits for ICE gathering to finish.
func gather(ctx context.Context, pc *webrtc.PeerConnection, desc webrtc.SessionDescription) (string, error) {
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(desc); err != nil {
		return "", fmt.Errorf("set local description: %w", err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return "", fmt.Errorf("ICE gathering: %w", ctx.Err())
	}
	return pc.LocalDescription().SDP, nil
}

// Publisher is a peer that sends media into a room under one source.
type Publisher struct {
	sfu    *SFU
	room   string
	source string
	id     string

	mu       sync.Mutex
	pc       *webrtc.PeerConnection
	fwds     []*forwarder
	expected int
	changed  chan struct{} // closed and replaced when fwds grows
	closed   bool
	done     chan struct{} // closed by Close
	negMu    sync.Mutex    // serialises renegotiations
	relay    bool          // a cascade pull from another edge (Relay)
	counted  bool          // in SFU.peers (set by reserve, under the SFU's lock)
}

// Done is closed when the publisher has closed (its connection failed or
// was closed, or Close was called).
func (p *Publisher) Done() <-chan struct{} { return p.done }

// ID is the publisher's resource id (the last part of its WHIP Location).
func (p *Publisher) ID() string { return p.id }

// Source is the label its tracks carry (their stream id at subscribers).
func (p *Publisher) Source() string { return p.source }

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
	return gather(ctx, pc, answer)
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
	if pc == nil {
		return ErrNotFound
	}
	if err := pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("%w: candidate: %v", ErrBadOffer, err)
	}
	return nil
}

// Expect tells a relay publisher how many tracks its upstream announced,
// so WHEP watchers wait for all of them as they do for a WHIP publisher.
func (p *Publisher) Expect(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expected = n
}

func (p *Publisher) onTrack(track *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	f := &forwarder{pub: p, track: track, interval: p.sfu.cfg.PLIInterval, audio: track.Kind() == webrtc.RTPCodecTypeAudio}
	f.list.Store(&[]*subTrack{})
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	if !f.audio {
		p.sfu.gops.Add(1)
		defer p.sfu.gops.Add(-1)
	}
	p.fwds = append(p.fwds, f)
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	p.sfu.log.Info("publisher track", "room", p.room, "source", p.source, "publisher", p.id, "kind", track.Kind().String(),
		"codec", track.Codec().MimeType, "fmtp", track.Codec().SDPFmtpLine, "ssrc", uint32(track.SSRC()))
	if c := track.Codec(); strings.EqualFold(c.MimeType, webrtc.MimeTypeH264) && highProfile(c.SDPFmtpLine) {
		p.sfu.log.Warn("the lesson's H264 uses a profile browsers do not decode; classrooms in a browser will not see it: set the encoder to baseline",
			"room", p.room, "fmtp", c.SDPFmtpLine)
	}
	go func() {
		// Drain RTCP so the receiver's interceptors keep running.
		buf := make([]byte, 1500)
		for {
			if _, _, err := recv.Read(buf); err != nil {
				return
			}
		}
	}()
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
	p.sfu.Resync(p.room)
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

// forwarder reads one publisher track and hands every packet to each
// subscriber track's queue.
type forwarder struct {
	pub      *Publisher
	track    *webrtc.TrackRemote
	interval time.Duration
	audio    bool
	mu       sync.Mutex // serialises add/remove; readers use list
	list     atomic.Pointer[[]*subTrack]
	ended    atomic.Bool
	gop      gopCache // guarded by mu
	tap      TapSink  // nil unless the SFU's tap wants this track

	pliMu      sync.Mutex
	lastPLI    time.Time
	pliPending bool
}

func (f *forwarder) subs() []*subTrack { return *f.list.Load() }

// add starts forwarding to t. A video track is first given the cached
// group of pictures (the last keyframe and what followed), so a classroom
// that joins shows the picture at once even when the publisher (OBS) does
// not answer keyframe requests. It reports whether it did.
func (f *forwarder) add(t *subTrack) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	primed := false
	for _, p := range f.gop.pkts {
		t.offer(p)
		primed = true
	}
	old := *f.list.Load()
	n := append(append(make([]*subTrack, 0, len(old)+1), old...), t)
	f.list.Store(&n)
	return primed
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
// packet each time, so a packet is shared read-only by every queue. A
// muted source's audio is read and dropped here, so the mute holds
// whatever its client does.
func (f *forwarder) run() {
	n := 0
	muted := false
	for {
		pkt, _, err := f.track.ReadRTP()
		if err != nil {
			return
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
			f.mu.Lock()
			f.gop.push(pkt, f.track.Codec().MimeType)
			subs = f.subs()
			f.mu.Unlock()
		}
		for _, t := range subs {
			t.offer(pkt)
		}
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

// Subscriber is a peer that receives a room's media.
type Subscriber struct {
	sfu    *SFU
	room   string
	id     string
	static bool // WHEP: negotiated once from the client's offer

	// Renegotiable subscribers only.
	pcCfg   webrtc.Configuration
	filter  func(source string) bool
	onOffer func(sdp string)
	kickc   chan struct{}
	done    chan struct{}
	pending bool // tracks changed while an offer was outstanding

	mu     sync.Mutex
	pc     *webrtc.PeerConnection
	tracks []*subTrack

	cong congestion

	closeOnce sync.Once
	closed    atomic.Bool
	stopCong  chan struct{}
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

// subTrack is one publisher track as one subscriber receives it.
type subTrack struct {
	sfu    *SFU // nil in unit tests
	fwd    *forwarder
	paused *atomic.Bool // the subscriber's "video paused" flag; nil for audio
	// Guarded by the subscriber's mu: the track is in an SDP the edge sent
	// (offered), the client accepted it (negotiated), it receives packets
	// (attached).
	offered, negotiated, attached bool
	local                         *webrtc.TrackLocalStaticRTP
	sender                        *webrtc.RTPSender
	q                             chan *rtp.Packet
	done                          chan struct{}
	sent                          atomic.Uint64
	dropped                       atomic.Uint64
}

// offer queues pkt for this subscriber, dropping it if the queue is full.
func (t *subTrack) offer(pkt *rtp.Packet) {
	if t.paused != nil && t.paused.Load() {
		return // this subscriber's link cannot carry video now
	}
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

// newSubTrack adds f's track to pc.
func (s *Subscriber) newSubTrack(pc *webrtc.PeerConnection, f *forwarder) (*subTrack, error) {
	// The stream id is the source, so a client groups the lesson's
	// camera, mic and screen share, or one classroom's camera and mic.
	// pion would fall back to any H264 the client takes and label High
	// profile bytes as Baseline, which a browser silently fails to decode:
	// refuse instead, saying what to change.
	if c := f.track.Codec(); strings.EqualFold(c.MimeType, webrtc.MimeTypeH264) && highProfile(c.SDPFmtpLine) {
		if rd := pc.RemoteDescription(); rd != nil && !offersProfile(rd.SDP, profileOf(c.SDPFmtpLine)) {
			return nil, fmt.Errorf("%w: the lesson is H264 %s, a profile this client does not decode (browsers take Constrained Baseline and Main): set the teacher's encoder to baseline, e.g. in OBS Settings → Output", ErrBadOffer, c.SDPFmtpLine)
		}
	}
	local, err := webrtc.NewTrackLocalStaticRTP(f.track.Codec().RTPCodecCapability, f.pub.id[:8]+"-"+f.track.ID(), f.pub.source)
	if err != nil {
		return nil, fmt.Errorf("local track: %w", err)
	}
	sender, err := pc.AddTrack(local)
	if err != nil {
		hint := ""
		if strings.EqualFold(f.track.Codec().MimeType, webrtc.MimeTypeH264) {
			hint = " (the lesson is H264 " + f.track.Codec().SDPFmtpLine + "; browsers decode Constrained Baseline and Main, not High: set the encoder's profile to baseline, e.g. in OBS Settings → Output)"
		}
		return nil, fmt.Errorf("%w: this client cannot receive %s: %v%s", ErrBadOffer, f.track.Codec().MimeType, err, hint)
	}
	t := &subTrack{sfu: s.sfu, fwd: f, local: local, sender: sender, q: make(chan *rtp.Packet, s.sfu.cfg.QueuePackets), done: make(chan struct{})}
	if !f.audio {
		t.paused = &s.cong.videoPaused
	}
	go s.readRTCP(sender, f)
	return t, nil
}

func (s *Subscriber) newPC() (*webrtc.PeerConnection, error) {
	pc, err := s.sfu.api.NewPeerConnection(s.pcCfg)
	if err != nil {
		return nil, fmt.Errorf("new peer connection: %w", err)
	}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		s.sfu.log.Debug("subscriber connection state", "room", s.room, "subscriber", s.id, "state", st.String())
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.attachReady()
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			go s.Close()
		}
	})
	return pc, nil
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
			if !t.fwd.add(t) {
				need = append(need, t.fwd)
			}
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
		t.fwd.keyframe()
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
	for _, f := range fwds {
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
	sdp, err := gather(ctx, pc, answer)
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
	want := s.sfu.forwardersFor(s.room, s.filter)
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
		t.fwd.remove(t)
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
	if !changed && !s.pending {
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
	offer, err := s.pc.CreateOffer(nil)
	if err != nil {
		return fmt.Errorf("create offer: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sdp, err := gather(ctx, s.pc, offer)
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
	if pc == nil {
		return ErrNotFound
	}
	if err := pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("%w: candidate: %v", ErrBadOffer, err)
	}
	return nil
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
			t.fwd.remove(t)
			close(t.done)
		}
		if pc != nil {
			_ = pc.Close()
		}
		s.sfu.detachSubscriber(s)
		s.sfu.log.Info("subscriber left", "room", s.room, "subscriber", s.id)
	})
}

// profileOf returns the profile_idc (two hex digits) of an H264 fmtp line.
func profileOf(fmtp string) string {
	for _, kv := range strings.Split(fmtp, ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(kv), "profile-level-id="); ok && len(v) >= 2 {
			return strings.ToLower(v[:2])
		}
	}
	return ""
}

// highProfile reports whether an H264 fmtp line names a profile other than
// Constrained Baseline/Baseline (42xxxx) or Main (4dxxxx).
func highProfile(fmtp string) bool {
	p := profileOf(fmtp)
	return p != "" && p != "42" && p != "4d"
}

// offersProfile reports whether an SDP lists an H264 format of profile_idc
// profile.
func offersProfile(sdp, profile string) bool {
	for _, l := range strings.Split(sdp, "\n") {
		if strings.HasPrefix(l, "a=fmtp:") && profileOf(strings.TrimSpace(l[strings.IndexByte(l, ' ')+1:])) == profile {
			return true
		}
	}
	return false
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
