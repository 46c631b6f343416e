// Rooms: the SFU's map of sessions to their publishers and subscribers,
// the entry points that join a peer to a room (Publish, Relay, Subscribe,
// NewSubscriber), per-room stats, audio mutes, and removal.

package sfu

import (
	"context"
	"fmt"
	"strings"

	"github.com/pion/webrtc/v4"
)

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

// Publishing reports whether source publishes in roomID.
func (s *SFU) Publishing(roomID, source string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[roomID]
	// A publisher waiting for an ICE restart (icerestart.go) sends nothing.
	return r != nil && r.pubs[source] != nil && !r.pubs[source].recovering.Load()
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
	joined, err := s.takeJoinSlot(ctx)
	if err != nil {
		return nil, "", err
	}
	sub := &Subscriber{sfu: s, room: roomID, id: newID(), static: true, stopCong: make(chan struct{}), done: make(chan struct{}), joined: joined}
	s.peers.Add(1)
	go sub.adapt()
	go sub.chooseLayers()
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
	go sub.chooseLayers()
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
// id in room roomID. owner, when set, must be the one the resource was
// given (SetOwner): a client ends only what it made; "" (the master
// teacher, the admin) ends any.
func (s *SFU) Remove(roomID, id string, publisher bool, owner string) error {
	s.mu.Lock()
	r := s.rooms[roomID]
	var c interface{ Close() }
	var has string
	if r != nil {
		if publisher {
			for _, p := range r.pubs {
				if p.id == id {
					c, has = p, p.owner
				}
			}
		} else if sub, ok := r.subs[id]; ok {
			c, has = sub, sub.owner
		}
	}
	s.mu.Unlock()
	if c == nil {
		return ErrNotFound
	}
	if owner != "" && has != owner {
		return ErrNotOwner
	}
	c.Close()
	return nil
}

// SetOwner records who made the publisher (see Remove).
func (p *Publisher) SetOwner(owner string) {
	p.sfu.mu.Lock()
	p.owner = owner
	p.sfu.mu.Unlock()
}

// SetOwner records who made the subscriber (see Remove).
func (s *Subscriber) SetOwner(owner string) {
	s.sfu.mu.Lock()
	s.owner = owner
	s.sfu.mu.Unlock()
}

// Publishers counts the room's publishers whose source has prefix.
func (s *SFU) Publishers(roomID, prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	if r := s.rooms[roomID]; r != nil {
		for src := range r.pubs {
			if strings.HasPrefix(src, prefix) {
				n++
			}
		}
	}
	return n
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
	s.detach(p.room, func(r *room) bool { return deleteIf(r.pubs, p.source, p) })
}

// detachSubscriber forgets sub (if it is still registered).
func (s *SFU) detachSubscriber(sub *Subscriber) {
	s.detach(sub.room, func(r *room) bool { return deleteIf(r.subs, sub.id, sub) })
}

// detach runs remove on room roomID under the SFU's lock, and forgets the
// room once remove has taken its last peer out.
func (s *SFU) detach(roomID string, remove func(r *room) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[roomID]
	if r != nil && remove(r) && len(r.pubs) == 0 && len(r.subs) == 0 {
		delete(s.rooms, roomID)
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

// deleteIf deletes m[k] if it is v (a peer that was replaced under its key
// must not take its successor out), and reports whether it did.
func deleteIf[V comparable](m map[string]V, k string, v V) bool {
	if m[k] != v {
		return false
	}
	delete(m, k)
	return true
}
