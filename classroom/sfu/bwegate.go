// The estimator gate: pion's gcc estimator sees every packet the edge
// sends a subscriber and every RTCP report it returns, and that costs about
// a quarter more CPU per forwarded packet (TestBenchLiveClass, N=40). It is
// only worth paying where there is a layer to choose, so every subscriber
// connection gets the estimator behind a gate that starts shut: packets
// and reports go straight past it until the subscriber receives a
// simulcast track (chooseOnce opens it). A class whose publisher sends one
// layer (OBS, GStreamer, a single-layer page) never pays for it.

package sfu

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// bweGate is the estimator's interceptor on one connection, bypassed while
// shut.
type bweGate struct {
	interceptor.Interceptor // the cc interceptor (gcc)
	bwe                     cc.BandwidthEstimator
	open                    atomic.Bool
	q                       queueMeter
}

// bweGateFactory makes a gated cc interceptor per connection and hands
// it to onNew (called inside NewPeerConnection).
type bweGateFactory struct {
	inner *cc.InterceptorFactory
	last  cc.BandwidthEstimator // set by inner's callback, read at once
	onNew func(*bweGate)
}

func newBWEGateFactory(inner *cc.InterceptorFactory, onNew func(*bweGate)) *bweGateFactory {
	f := &bweGateFactory{inner: inner, onNew: onNew}
	// The factory's callback runs inside inner.NewInterceptor, on the
	// same goroutine, just before it returns: last is read right after.
	inner.OnNewPeerConnection(func(_ string, e cc.BandwidthEstimator) { f.last = e })
	return f
}

// NewInterceptor wraps a new cc interceptor in a shut gate. pion calls it
// from NewPeerConnection, which the SFU serializes (newSubscriberPC).
func (f *bweGateFactory) NewInterceptor(id string) (interceptor.Interceptor, error) {
	f.last = nil
	in, err := f.inner.NewInterceptor(id)
	if err != nil {
		return nil, err
	}
	g := &bweGate{Interceptor: in, bwe: f.last}
	g.q.start = time.Now()
	f.onNew(g)
	return g, nil
}

// BindRTCPReader passes reports to the estimator only while open.
func (g *bweGate) BindRTCPReader(reader interceptor.RTCPReader) interceptor.RTCPReader {
	through := g.Interceptor.BindRTCPReader(reader)
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		if !g.open.Load() {
			return reader.Read(b, a)
		}
		n, a, err := through.Read(b, a)
		if err == nil && a != nil {
			// Parsed once for the whole chain (the attributes cache it).
			if pkts, err := a.GetRTCPPackets(b[:n]); err == nil {
				for _, p := range pkts {
					if fb, ok := p.(*rtcp.TransportLayerCC); ok {
						g.q.feedback(fb)
					}
				}
			}
		}
		return n, a, err
	})
}

// BindLocalStream records packets in the estimator only while open.
// Feedback about packets sent while shut names sequence numbers the
// estimator never saw, which it skips.
func (g *bweGate) BindLocalStream(info *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	through := g.Interceptor.BindLocalStream(info, writer)
	for _, e := range info.RTPHeaderExtensions {
		if e.URI == transportCCURI && e.ID > 0 && e.ID < 256 {
			g.q.ext.Store(uint32(e.ID))
		}
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if g.open.Load() {
			g.q.sent(h)
			return through.Write(h, payload, a)
		}
		return writer.Write(h, payload, a)
	})
}

// estimator returns the estimator when the gate is open, else nil.
func (g *bweGate) estimator() cc.BandwidthEstimator {
	if g == nil || !g.open.Load() {
		return nil
	}
	return g.bwe
}

// queue returns the meter of the link's queueing delay (nil while the
// gate is shut).
func (g *bweGate) queue() *queueMeter {
	if g == nil || !g.open.Load() {
		return nil
	}
	return &g.q
}

// Queue meter. A probe that overfills a thin link fills its shaper's
// queue, and what it leaves there drains only at what the link carries
// beyond the media: on a 300 kbit/s link whose lowest layer takes 250
// kbit/s a full 400 ms queue took seconds, and the keyframes asked for
// after its losses met it full. gcc's delay trend (a smoothed slope over
// its last packet groups, against an adaptive threshold) told of that
// queue when it was hundreds of milliseconds deep. The meter reads the
// queue itself: each packet's one-way delay (the subscriber's arrival
// time from its TWCC feedback less the edge's send time, both on their
// own clocks) above the least delay the link showed over the last
// seconds is time spent in a queue. The least delay of one report's
// packets (100 ms of them) is taken, so one packet held up by a busy
// machine, or a keyframe's burst, does not count: a queue that every
// packet waits in does.
const (
	queueRing = 2048 // packets remembered by sequence number: > 1 s at a probe's 2.8 Mbit/s
	// queueBaseSpan: the least delay is kept per span, over queueSpans
	// spans: a link whose path gets longer is followed within them.
	queueBaseSpan = 2 * time.Second
	queueSpans    = 5
	queueStamp    = 1<<48 - 1
)

// queueMeter measures one connection's queueing delay from its TWCC
// feedback. times is written by every sending goroutine, the rest by the
// RTCP reader and read by the layer chooser.
type queueMeter struct {
	start time.Time
	ext   atomic.Uint32 // the TWCC header extension's id (0: not negotiated)
	// times holds, by transport-wide sequence number modulo queueRing,
	// the number (high 16 bits) and when it was sent (µs since start).
	times [queueRing]atomic.Uint64

	mu      sync.Mutex
	base    [queueSpans]int64 // least one-way delay (µs, offset unknown) per span
	baseAt  [queueSpans]int64 // the span each holds (start µs / span), -1 empty
	baseSet bool
	delay   time.Duration // the last report's queueing delay
	reports uint64        // reports measured
	// A probe's padding (bits/s, the probing track's probe) while one
	// runs: the report that shows its queue stops it at once, without
	// waiting up to a tick of the chooser, whose next look ends the
	// probe. Every 100 ms a probe's overfill goes on adds a third of
	// its excess over the link to the queue (30 ms on a 300 kbit/s link
	// overfilled to 400 kbit/s), which then drains at what the link
	// carries beyond the media.
	probe   *atomic.Int64
	tripped bool
}

// sent records when the packet with header h left (the TWCC interceptor,
// which wraps the estimator, has numbered it).
func (q *queueMeter) sent(h *rtp.Header) { q.sentAt(h, time.Now()) }

func (q *queueMeter) sentAt(h *rtp.Header, now time.Time) {
	id := q.ext.Load()
	if id == 0 {
		return
	}
	b := h.GetExtension(uint8(id))
	if len(b) < 2 {
		return
	}
	seq := binary.BigEndian.Uint16(b)
	us := uint64(now.Sub(q.start).Microseconds()) & queueStamp
	q.times[seq%queueRing].Store(uint64(seq)<<48 | us)
}

// feedback measures the queueing delay of fb's packets.
func (q *queueMeter) feedback(fb *rtcp.TransportLayerCC) { q.feedbackAt(fb, time.Now()) }

func (q *queueMeter) feedbackAt(fb *rtcp.TransportLayerCC, now time.Time) {
	// The report's arrival times: its reference (64 ms units) plus each
	// received packet's delta (µs), in sequence order.
	arrival := int64(fb.ReferenceTime) * 64_000
	seq := fb.BaseSequenceNumber
	left, d := int(fb.PacketStatusCount), 0
	least, n := int64(0), 0
	visit := func(sym uint16) {
		if left <= 0 {
			return
		}
		left--
		s := seq
		seq++
		if sym == rtcp.TypeTCCPacketNotReceived || d >= len(fb.RecvDeltas) {
			return
		}
		arrival += fb.RecvDeltas[d].Delta
		d++
		v := q.times[s%queueRing].Load()
		if uint16(v>>48) != s || v == 0 {
			return // not recorded (sent while the gate was shut), or overwritten
		}
		owd := arrival - int64(v&queueStamp)
		if n == 0 || owd < least {
			least = owd
		}
		n++
	}
	for _, ch := range fb.PacketChunks {
		switch c := ch.(type) {
		case *rtcp.RunLengthChunk:
			for i := 0; i < int(c.RunLength) && left > 0; i++ {
				visit(c.PacketStatusSymbol)
			}
		case *rtcp.StatusVectorChunk:
			for _, sym := range c.SymbolList {
				visit(sym)
			}
		}
	}
	if n < 2 {
		return
	}
	span := now.Sub(q.start).Microseconds() / queueBaseSpan.Microseconds()
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.baseSet {
		for i := range q.baseAt {
			q.baseAt[i] = -1
		}
		q.baseSet = true
	}
	k := span % queueSpans
	if q.baseAt[k] != span || least < q.base[k] {
		q.base[k], q.baseAt[k] = least, span
	}
	base := least
	for i, at := range q.baseAt {
		if at >= 0 && span-at < queueSpans && q.base[i] < base {
			base = q.base[i]
		}
	}
	q.delay = time.Duration(least-base) * time.Microsecond
	q.reports++
	if q.probe != nil && probeQueued(q.delay) {
		q.probe.Store(0)
		q.probe, q.tripped = nil, true
	}
}

// probeQueued says whether a probe has started a queue: one report's
// least delay past probeQueue. The first report after a shaper's token
// bucket ran dry shows a few tens of ms; waiting for a second one lets
// the probe go on for another report's 100 ms, which on a 300 kbit/s
// link probed at twice its rate is 100 ms more queue. (Even stopped at
// the first report, 24 ms, such a probe left a 361 ms queue: what it
// sent while that report was on its way.)
func probeQueued(d time.Duration) bool { return d > probeQueue }

// arm stops the padding of probe (nil: none) at the first report that
// shows a queue; it clears what an earlier probe left.
func (q *queueMeter) arm(probe *atomic.Int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.probe, q.tripped = probe, false
}

// last returns the last report's queueing delay, how many reports were
// measured so far (a caller tells a fresh one by the count), and whether
// the armed probe was stopped for its queue since arm.
func (q *queueMeter) last() (d time.Duration, reports uint64, tripped bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.delay, q.reports, q.tripped
}

var (
	_ interceptor.Factory     = (*bweGateFactory)(nil)
	_ interceptor.Interceptor = (*bweGate)(nil)
)
