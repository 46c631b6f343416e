package uplink

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// pathEstimate is what the uplink knows of the path to the hub, measured
// from the hub's answers as a BBR sender measures from TCP's acks: the
// delivery rate (batch bytes answered per second over at least one ack
// latency, the largest of the recent samples, since a sample is only ever
// lower than the link) and the shortest recent ack latency (from a batch's
// last byte handed to TCP to its answer: the round trip, the rest of the
// batch still in the socket and the hub's commit). Their product is the
// bandwidth-delay product at the level the uplink controls: the bytes that
// must be on the way for an answer never to find the link idle.
type pathEstimate struct {
	mu      sync.Mutex
	rates   [6]float64 // bytes/s, a ring of recent samples
	ri      int
	lats    [8]time.Duration // a ring of recent ack latencies
	li      int
	total   int64 // bytes answered so far
	since   time.Time
	sinceAt int64 // answered at since
	last    int   // the last batch's size
}

// start opens a sampling interval (a send begins after a pause: the time
// before it is not the link's).
func (p *pathEstimate) start(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.since, p.sinceAt = now, p.total
}

// answered records the hub's answer, at now, to a batch of n bytes whose
// last byte went into the connection at written.
func (p *pathEstimate) answered(n int, written, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total += int64(n)
	p.last = n
	if !written.IsZero() && now.After(written) {
		p.lats[p.li%len(p.lats)] = now.Sub(written)
		p.li++
	}
	lat := p.minLatLocked()
	if el := now.Sub(p.since); !p.since.IsZero() && el >= max(lat, 50*time.Millisecond) {
		p.rates[p.ri%len(p.rates)] = float64(p.total-p.sinceAt) / el.Seconds()
		p.ri++
		p.since, p.sinceAt = now, p.total
	}
}

func (p *pathEstimate) minLatLocked() time.Duration {
	var m time.Duration
	for _, l := range p.lats[:min(p.li, len(p.lats))] {
		if m == 0 || l < m {
			m = l
		}
	}
	return m
}

// window is the bytes the uplink keeps on the way: the batch being written
// plus twice the measured bandwidth-delay product (a gain that covers a
// late answer or a rate sample below the link's); 0 before anything is
// measured (the caller keeps two batches going then).
func (p *pathEstimate) window() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var rate float64
	for _, r := range p.rates[:min(p.ri, len(p.rates))] {
		rate = max(rate, r)
	}
	bdp := rate * p.minLatLocked().Seconds()
	if bdp == 0 {
		return 0
	}
	return p.last + int(2*bdp)
}

// A batchGate orders batch bodies: a batch's body enters the connection
// only once the previous batch's body is all in it (and the socket holds
// little unsent data, see SetHubConnOptions). On one HTTP/2 connection the
// batches then cross the link one after another in sequence order, and the
// first is answered a round trip after it is through, not when all of them
// are. The first body on a new connection (see connSpan) starts earlier,
// when the previous one has nearBytes left: the new connection's first
// round trips carry little (TCP's initial window, doubling), and the old
// one's last bytes keep the link busy meanwhile. It also notes when a body
// was written, for the ack latency.
type batchGate struct {
	prev  *batchGate
	done  chan struct{}
	near  chan struct{} // closed when at most nearBytes are left to write
	once  sync.Once
	nonce sync.Once
	at    atomic.Int64 // unix ns when released
	// conns, over HTTP/2, hears which connection the batch went out on;
	// lastOnConn makes it the last batch that connection takes.
	conns      *connClock
	lastOnConn bool
	size       int         // the body's bytes
	full       atomic.Bool // the body was read to its end
	conn       atomic.Pointer[net.Conn]
}

// nearBytes is how much of a body is left to write when the next body, on
// a new connection, may start: with the old connection's unsent data
// (notSentLowat) and its segments in flight, the link is busy for about
// the new connection's first two round trips (10 and 20 segments).
const nearBytes = 64 << 10

func newBatchGate(prev *batchGate) *batchGate {
	return &batchGate{prev: prev, done: make(chan struct{}), near: make(chan struct{})}
}

// gotConn notes the connection the batch's request went out on.
func (g *batchGate) gotConn(c net.Conn) { g.conn.Store(&c) }

// onNewConn says whether the batch went out on another connection than
// the batch before it (both known).
func (g *batchGate) onNewConn() bool {
	if g.prev == nil {
		return false
	}
	c, p := g.conn.Load(), g.prev.conn.Load()
	return c != nil && p != nil && *c != *p
}

func (g *batchGate) nearDone() {
	g.nonce.Do(func() { close(g.near) })
}

// release opens the gate for the next batch (its body is written, or will
// never be); safe to call more than once and on nil.
func (g *batchGate) release() {
	if g == nil {
		return
	}
	g.nearDone()
	g.once.Do(func() {
		now := time.Now()
		g.at.Store(now.UnixNano())
		if g.conns != nil && g.full.Load() {
			g.conns.written(g.size, now)
		}
		close(g.done)
	})
}

// written is when the gate was released (zero: not yet).
func (g *batchGate) written() time.Time {
	if ns := g.at.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// body is the request body b, read only after the previous batch's gate
// opened; reading its last byte (or closing it) opens this one.
func (g *batchGate) body(ctx context.Context, b []byte) io.ReadCloser {
	return &gatedBody{g: g, ctx: ctx, r: bytes.NewReader(b)}
}

// gateChunk is the most a gated body hands over per read.
const gateChunk = 16 << 10

type gatedBody struct {
	g      *batchGate
	ctx    context.Context
	r      *bytes.Reader
	opened bool
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if !b.opened {
		if b.g.prev != nil {
			wait := b.g.prev.done
			if b.g.onNewConn() {
				wait = b.g.prev.near
			}
			select {
			case <-wait:
			case <-b.ctx.Done():
				b.g.release()
				return 0, b.ctx.Err()
			}
		}
		b.opened = true
		if c := b.g.conn.Load(); c != nil && b.g.conns != nil {
			b.g.conns.started(*c, time.Now())
		}
	}
	// A little at a time: an HTTP/2 client reads a whole body into its
	// own buffer when it can, and the gate would open long before the
	// bytes are in the socket.
	n, err := b.r.Read(p[:min(len(p), gateChunk)])
	if b.r.Len() <= nearBytes {
		b.g.nearDone()
	}
	if b.r.Len() == 0 {
		b.g.full.Store(true)
		b.g.release()
	}
	return n, err
}

func (b *gatedBody) Close() error {
	b.g.release()
	return nil
}

// connSpan is how long one connection to the hub carries a backlog before
// the uplink moves the batches after it to a new one. Linux's BBR (v1)
// takes its minimum RTT from the SYN; on a thin link a full-size segment
// never comes back as fast, so 10 s after the connection opened (or after
// its last lower sample) the estimate expires and BBR drains the
// connection to 4 segments for 200 ms and a round trip (ProbeRTT): at
// 2 Mbit/s and 200 ms the link idled about half a second of every ten. A
// connection that has handed all its bytes to TCP before then never gets
// there. It is counted from the connection's first body: a connection
// opened while others fill the link sees the queue in its SYN's RTT, and
// its estimate is renewed when its own segments first find the queue
// shorter. The margin covers the first connection's handshake and the
// rate estimate's error.
const connSpan = 8500 * time.Millisecond

// connClock tracks, for one SendOnce, the connections its batches went out
// on (from httptrace's GotConn): which one the next batch will most likely
// get and since when it has carried this backlog; and how fast batch
// bodies go into TCP, which over HTTP/2 (one body after another, each
// written once the socket holds little unsent, see notSentLowat) is the
// rate the link takes them at.
type connClock struct {
	span    time.Duration // connSpan
	mu      sync.Mutex
	seen    [4]connSeen // the latest first, older ones pushed out
	closing bool        // a batch asked the newest one to close; wait for the next
	writes  [4]bodyWritten
	wi      int
}

type bodyWritten struct {
	at time.Time
	n  int
}

// written notes that a body of n bytes was all in TCP at at.
func (k *connClock) written(n int, at time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.writes[k.wi%len(k.writes)] = bodyWritten{at, n}
	k.wi++
}

// rate is bytes/s into TCP over the last bodies (0: fewer than four
// written): from the first's end to the last's end, the others' bytes.
func (k *connClock) rate() float64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.rateLocked()
}

func (k *connClock) rateLocked() float64 {
	if k.wi < len(k.writes) {
		return 0
	}
	first := k.writes[k.wi%len(k.writes)]
	last := k.writes[(k.wi-1)%len(k.writes)]
	n := 0
	for i := 1; i < len(k.writes); i++ {
		n += k.writes[(k.wi+i)%len(k.writes)].n
	}
	el := last.at.Sub(first.at)
	if el <= 0 {
		return 0
	}
	return float64(n) / el.Seconds()
}

type connSeen struct {
	c  net.Conn
	at time.Time // its first body began; zero: not yet
}

// started notes that a body began to go into c at now.
func (k *connClock) started(c net.Conn, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range k.seen {
		if k.seen[i].c == c && k.seen[i].at.IsZero() {
			k.seen[i].at = now
		}
	}
}

// got notes that a batch went out on c. A connection opened while
// others carry the backlog gets its pacing capped at newConnPacing times
// the rate bodies go into TCP: its BBR starts up at 2.89 times the rate it
// measures, and with the link already full that overfilled the queue
// (segments dropped, the RTT at 600 ms) for a second or more after every
// switch.
func (k *connClock) got(c net.Conn) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, s := range k.seen {
		if s.c == c {
			return // a batch launched before the switch, on an older connection
		}
	}
	copy(k.seen[1:], k.seen[:len(k.seen)-1])
	k.seen[0] = connSeen{c: c}
	k.closing = false
	if r := k.rateLocked(); r > 0 {
		capPacing(c, uint64(r*newConnPacing))
	}
}

// newConnPacing is the cap on a new connection's pacing, over the rate
// measured on the one before: the headroom BBR's own probing asks for
// (gain 1.25), so the cap binds only in start-up. It stays for the
// connection's life (at most about connSpan under a backlog; then an
// idle connection the next backlog may reuse, whose measured rate sets
// the next connection's cap).
const newConnPacing = 1.25

// rotate says whether a batch whose body will be in TCP by done should be
// the last the newest connection takes (it is then closed once its
// answers are in, and the batches after it open a new one): when done is
// span or more after that connection began to carry this backlog.
// Once it has said yes it says no until a batch shows a new connection.
func (k *connClock) rotate(done time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.seen[0].at.IsZero() || k.closing || done.Sub(k.seen[0].at) < k.span {
		return false
	}
	k.closing = true
	return true
}
