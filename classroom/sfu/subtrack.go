// Subscriber track: one publisher track as one subscriber receives it,
// with its own bounded queue and writer goroutine, so a slow subscriber
// drops packets for itself alone.

package sfu

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"
)

// subTrack is one publisher track as one subscriber receives it.
type subTrack struct {
	sfu    *SFU // nil in unit tests
	fwd    *forwarder
	paused *atomic.Bool // the subscriber's "video paused" flag; nil for audio
	cong   *congestion  // the subscriber's link; nil in unit tests
	// Guarded by the subscriber's mu: the track is in an SDP the edge sent
	// (offered), the client accepted it (negotiated), it receives packets
	// (attached).
	offered, negotiated, attached bool
	local                         *webrtc.TrackLocalStaticRTP
	sender                        *webrtc.RTPSender
	q                             chan qpkt
	// prime carries the cached group of pictures (possibly none) once,
	// when the track is attached; the writer sends it before anything
	// from q.
	prime chan []*rtp.Packet
	// The simulcast layer this track takes its packets from (cur) and
	// the one it moves to at that layer's next keyframe (want, nil when
	// none). A single-layer track stays on its one forwarder.
	cur, want atomic.Pointer[forwarder]
	wantAt    atomic.Int64 // unix nanos when want was set
	// probe (bits/s, 0: off) is padding the writer adds to test whether
	// the link carries the next layer up.
	probe atomic.Int64
	tx    *atomic.Uint64 // the subscriber's bytes sent, padding included; nil in unit tests
	// conn is the subscriber's socket when it batches (Subscriber.conn);
	// nil for audio and in unit tests.
	conn *atomic.Pointer[batchConn]
	rw   rewriter // the writer goroutine's
	// pace spreads the writes of a video track over time: a new
	// subscriber's primed group of pictures (up to ~1 MB) written at once
	// overflows its socket and looks like a weak link. nil for audio.
	pace    *rate.Limiter
	done    chan struct{}
	sent    atomic.Uint64
	dropped atomic.Uint64

	// The forwarder writes a packet to the subscriber itself when
	// nothing is waiting for this track (the usual case: live packets
	// within the pacer's burst), instead of waking the writer goroutine
	// for every packet of every subscriber; the writer sends only what
	// had to wait (the primed pictures, what the pacer holds back, probe
	// padding). sendMu serialises the two and guards rw and out;
	// backlog counts packets queued and not yet sent, and primed says
	// the cached pictures are out, so a packet is sent directly only
	// when nothing before it is still waiting.
	sendMu  sync.Mutex
	backlog atomic.Int64
	primed  atomic.Bool
	padding atomic.Bool // the writer's probe ticker runs
	// lane says which goroutine of a forwarder with many subscribers
	// writes to this one (forwarder.fanOut).
	lane uint32
	// out is the packet handed to pion, reused: pion copies what it keeps
	// (the NACK responder's cache), so one per write is garbage.
	out rtp.Packet
	// heldTS is the timestamp of the last packet writeOut left waiting
	// on conn (under sendMu).
	heldTS uint32
	// svc: the layers of a VP9 SVC track this subscriber gets (svc.go).
	svc svcSub
}

// qpkt is a queued packet: the layer it came from, and whether it is the
// first of a layer the track switched to.
type qpkt struct {
	pkt  *rtp.Packet
	from *forwarder
	sw   bool
}

// at is when e's packet was read from the publisher, or now: the pacer's
// clock for a packet the forwarder writes itself, one reading per packet
// instead of one per subscriber (time.Now was ~3 % of edged's CPU at 40
// viewers).
func (e qpkt) at() time.Time {
	if e.from != nil {
		if ns := e.from.lastAt.Load(); ns > 0 {
			return time.Unix(0, ns)
		}
	}
	return time.Now()
}

// offerFrom queues f's pkt if f is the layer this track takes, or the
// layer it waits to switch to and pkt starts one of its keyframes (the
// switch happens here, so the subscriber's decoder starts the new layer
// on a picture it can decode).
func (t *subTrack) offerFrom(f *forwarder, pkt *rtp.Packet) {
	if f.svc != nil && f.svc.filters() {
		t.offerSVC(f, pkt)
		return
	}
	sw := false
	if cur := t.cur.Load(); cur != nil && f != cur {
		if f != t.want.Load() || !isKeyframeStart(pkt.Payload, f.track.Codec().MimeType) {
			return
		}
		if !t.cur.CompareAndSwap(cur, f) {
			return
		}
		t.want.CompareAndSwap(f, nil)
		sw = true
	}
	t.offer(qpkt{pkt: pkt, from: f, sw: sw})
}

// offer sends e to this subscriber at once when nothing is waiting and
// the pacer allows it, or else queues it for the writer, dropping it if
// the queue is full.
func (t *subTrack) offer(e qpkt) {
	if t.paused != nil && t.paused.Load() {
		return // this subscriber's link cannot carry video now
	}
	// TryLock: the writer may hold the lock while its pacer sleeps; the
	// forwarder never waits for one subscriber.
	// A probe started or stopped (t.probe) is noticed by the writer when
	// it wakes: until its padding ticker follows, packets go through it.
	if t.backlog.Load() == 0 && t.primed.Load() && (t.probe.Load() > 0) == t.padding.Load() && t.sendMu.TryLock() {
		sent := t.backlog.Load() == 0 && t.sendNow(e)
		t.sendMu.Unlock()
		if sent {
			t.sent.Add(1)
			if t.sfu != nil {
				t.sfu.forwarded.Add(1)
			}
			return
		}
	}
	t.backlog.Add(1)
	select {
	case t.q <- e:
		t.sent.Add(1)
		if t.sfu != nil {
			t.sfu.forwarded.Add(1)
		}
	default:
		t.backlog.Add(-1)
		t.drop()
	}
}

// drop counts a packet this subscriber missed.
func (t *subTrack) drop() {
	t.dropped.Add(1)
	if t.sfu != nil {
		t.sfu.dropped.Add(1)
	}
}

// sendNow writes e if the pacer has room for it now, under sendMu; it
// reports false (nothing done) when e has to wait.
func (t *subTrack) sendNow(e qpkt) bool {
	if t.pace != nil && !t.pace.AllowN(e.at(), min(len(e.pkt.Payload)+12, t.pace.Burst())) {
		return false
	}
	if t.pace != nil && !t.rw.take(e) {
		return true // a packet of the layer it just left
	}
	t.writeOut(e.pkt, true)
	return true
}

func (t *subTrack) write() {
	select {
	case <-t.done:
		return
	case gop := <-t.prime:
		// From the forwarder that reads the packets: an SVC or VP8
		// temporal layer's (svc.go) are offered from its track's.
		from := t.cur.Load()
		if from != nil {
			from = from.real()
		}
		primed := len(gop) > 0
		gop, live, slot, ok := t.admit(gop, from)
		if !ok {
			return
		}
		if slot {
			defer t.sfu.releasePrimeSlot(&slot)
		}
		if !t.sendPrime(gop, from) {
			return
		}
		for _, e := range live { // taken off the queue while admit waited
			t.sendMu.Lock()
			ok := t.send(e)
			t.backlog.Add(-1)
			t.sendMu.Unlock()
			if !ok {
				return
			}
		}
		if slot {
			t.sfu.releasePrimeSlot(&slot)
		}
		if t.cong != nil && primed {
			t.cong.quietFor(0) // the burst's feedback is still arriving
		}
		t.primed.Store(true)
	}
	var tick *time.Ticker
	var tc <-chan time.Time
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for {
		switch p := t.probe.Load(); {
		case p > 0 && tick == nil:
			tick = time.NewTicker(probeTick)
			tc = tick.C
			t.sendMu.Lock()
			t.rw.padAt = time.Now()
			t.sendMu.Unlock()
			t.padding.Store(true)
		case p == 0 && tick != nil:
			tick.Stop()
			tick, tc = nil, nil
			t.padding.Store(false)
		}
		select {
		case <-t.done:
			return
		case e := <-t.q:
			t.sendMu.Lock()
			ok := t.send(e)
			t.backlog.Add(-1) // under sendMu: offer checks it there
			t.sendMu.Unlock()
			if !ok {
				return
			}
		case now := <-tc:
			t.sendMu.Lock()
			ok := t.pad(now)
			t.sendMu.Unlock()
			if !ok {
				return
			}
		}
	}
}

// sendPrime sends cached pictures, through the edge-wide priming budget
// and the track's pacer; it reports false when the track was closed.
func (t *subTrack) sendPrime(pkts []*rtp.Packet, from *forwarder) bool {
	for _, pkt := range pkts {
		if t.sfu != nil && !t.wait(t.sfu.primeBudget, pkt) {
			return false
		}
		t.sendMu.Lock()
		ok := t.send(qpkt{pkt: pkt, from: from})
		t.sendMu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}

// send writes one packet, first waiting for the pacer; it reports false
// when the track was closed meanwhile. The caller holds sendMu.
func (t *subTrack) send(e qpkt) bool {
	if t.pace != nil && !t.rw.take(e) { // video: one continuous stream whatever the layer
		return true // a packet of the layer it just left
	}
	if !t.wait(t.pace, e.pkt) {
		return false
	}
	t.writeOut(e.pkt, false)
	return true
}

// writeOut writes pkt to the subscriber, renumbered onto its stream
// (video). The caller holds sendMu and has taken pkt from the pacer. A
// live video packet (batch) waits on the subscriber's socket for the rest
// of its frame, which then goes in one system call; what the pacer held
// back is sent at once, as paced.
func (t *subTrack) writeOut(pkt *rtp.Packet, batch bool) {
	var c *batchConn
	if batch && t.conn != nil {
		if c = t.conn.Load(); c != nil {
			c.hold(pkt.Timestamp != t.heldTS)
			t.heldTS = pkt.Timestamp
			defer c.release(pkt.Marker)
		}
	}
	ext := t.out.Extensions[:0] // reused: pion's TWCC interceptor appends its own
	t.out = rtp.Packet{Header: pkt.Header, Payload: pkt.Payload, PaddingSize: pkt.PaddingSize}
	if t.pace != nil {
		t.out.SequenceNumber, t.out.Timestamp = t.rw.mapped(pkt)
	}
	// Header extension ids are per peer connection: the publisher's do
	// not mean the same to this subscriber, so they are dropped (its own
	// interceptors add TWCC).
	t.out.Extension, t.out.Extensions, t.out.ExtensionProfile = false, ext, 0
	_ = t.local.WriteRTP(&t.out)
	if t.tx != nil {
		t.tx.Add(uint64(len(pkt.Payload) + 12 + int(pkt.PaddingSize) + wireOverhead))
	}
}

// wait takes pkt's bytes from lim (nil: no limit), sleeping while it is
// in debt; it reports false when the track was closed meanwhile.
func (t *subTrack) wait(lim *rate.Limiter, pkt *rtp.Packet) bool {
	if lim == nil {
		return true
	}
	r := lim.ReserveN(time.Now(), min(len(pkt.Payload)+12, lim.Burst()))
	d := r.Delay()
	if d <= 0 {
		return true
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-t.done:
		return false
	case <-tm.C:
		return true
	}
}

// primeWith hands the writer the cached group of pictures, before any live
// packet reaches the queue, and returns how long its pacing will take.
func (t *subTrack) primeWith(gop []*rtp.Packet) time.Duration {
	t.prime <- gop // buffered 1, sent once per track: never blocks
	t.sent.Add(uint64(len(gop)))
	if t.sfu != nil {
		t.sfu.forwarded.Add(uint64(len(gop)))
	}
	if t.pace == nil || len(gop) == 0 {
		return 0
	}
	bytes := 0
	for _, p := range gop {
		bytes += len(p.Payload) + 12
	}
	return time.Duration(float64(bytes) / float64(t.pace.Limit()) * float64(time.Second))
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
	t := &subTrack{sfu: s.sfu, fwd: f, local: local, sender: sender, q: make(chan qpkt, s.sfu.cfg.QueuePackets),
		prime: make(chan []*rtp.Packet, 1), done: make(chan struct{}), tx: &s.tx}
	// Video and audio tracks are numbered apart: numbered together, every
	// subscriber's video would fall in one lane and its audio in another.
	kind := 0
	if f.audio {
		kind = 1
	}
	t.lane = s.sfu.lanes[kind].Add(1)
	if !f.audio {
		t.paused, t.cong, t.conn = &s.cong.videoPaused, &s.cong, &s.conn
		t.pace = rate.NewLimiter(rate.Limit(s.sfu.cfg.PaceBitrate/8), s.sfu.cfg.PaceBurst)
	}
	go s.readRTCP(sender, t)
	return t, nil
}
