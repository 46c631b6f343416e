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
// are. It also notes when a body was written, for the ack latency.
type batchGate struct {
	prev *batchGate
	done chan struct{}
	once sync.Once
	at   atomic.Int64 // unix ns when released
	// conns, over HTTP/2, hears which connection the batch went out on
	// (see connClock).
	conns *connClock
}

func newBatchGate(prev *batchGate) *batchGate {
	return &batchGate{prev: prev, done: make(chan struct{})}
}

// release opens the gate for the next batch (its body is written, or will
// never be); safe to call more than once and on nil.
func (g *batchGate) release() {
	if g == nil {
		return
	}
	g.once.Do(func() {
		g.at.Store(time.Now().UnixNano())
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
			select {
			case <-b.g.prev.done:
			case <-b.ctx.Done():
				b.g.release()
				return 0, b.ctx.Err()
			}
		}
		b.opened = true
	}
	// A little at a time: an HTTP/2 client reads a whole body into its
	// own buffer when it can, and the gate would open long before the
	// bytes are in the socket.
	n, err := b.r.Read(p[:min(len(p), gateChunk)])
	if b.r.Len() == 0 {
		b.g.release()
	}
	return n, err
}

func (b *gatedBody) Close() error {
	b.g.release()
	return nil
}

// restartEvery is how often, while a backlog is sent, the uplink restarts
// BBR on each connection to the hub. Linux's BBR (v1) takes its minimum
// RTT from the handshake; on a thin link a full-size segment never comes
// back as fast (at 2 Mbit/s its own serialisation is 6 ms), so 10 s after
// the connection opened the estimate expires and BBR drains the connection
// to 4 segments for 200 ms and a round trip (ProbeRTT): at 2 Mbit/s and
// 200 ms the link idled about half a second of every ten. Choosing the
// congestion control again starts BBR afresh (its minimum RTT is then the
// connection's own, renewed now), keeping the connection, its congestion
// window and the link busy; moving to a new connection instead paid a
// handshake and a slow start that left the link idle 0.08-0.28 s per
// switch. It is counted from when a batch first got the connection, which
// for a new one is its handshake's end and for one reused after an idle
// spell comes before its first ack (which renews the expired estimate);
// the margin covers a restart put off while the connection recovers a loss.
const restartEvery = 8 * time.Second

// restartTick is how often the connections are looked at: a restart due
// is at most this late, and a pacing cap this long past BBR's start-up.
const restartTick = 250 * time.Millisecond

// How a restart of a connection's congestion control went.
type restartResult int

const (
	restartDone  restartResult = iota // restarted; its pacing capped until start-up ends
	restartLater                      // recovering a loss: not now
	restartNever                      // not BBR, or no socket to reach
)

// connCC is what connClock does to a connection's congestion control (see
// sockopt_linux.go); tests put in their own.
type connCC interface {
	restart(c net.Conn) restartResult
	// uncap lifts the pacing cap of a restart once BBR's start-up is over
	// (or always, when done), and says whether it did.
	uncap(c net.Conn, always bool) bool
}

// connClock tracks, for one SendOnce, the connections its batches went out
// on (from httptrace's GotConn) and restarts BBR on each every span (see
// restartEvery). A restarted BBR starts up again at up to 2.89 times the
// rate it measures while the link is already full, which overfilled the
// bottleneck's queue (segments dropped, the RTT at 600 ms); its pacing is
// capped at restartPacing times the bandwidth it had measured until its
// start-up ends, then left to BBR.
type connClock struct {
	span time.Duration // restartEvery
	cc   connCC
	mu   sync.Mutex
	seen [4]connSeen // the latest first, older ones pushed out
}

type connSeen struct {
	c      net.Conn
	since  time.Time // its BBR's minimum RTT was last renewed, about
	capped bool      // restarted, its pacing not yet uncapped
	never  bool      // restartNever
}

// restartPacing is the cap on a restarted connection's pacing during its
// start-up, over the bandwidth its BBR had measured: the link is full, so
// pacing faster only lengthens the queue (at 1.1 a start-up that lasted
// 2.75 s filled the 400 ms queue of the benchmark's link: 12 segments
// dropped, 0.1 s idle). A link that got faster is found once the cap is
// lifted, by BBR's own probing at 1.25.
const restartPacing = 1.0

// got notes that a batch went out on c at now.
func (k *connClock) got(c net.Conn, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, s := range k.seen {
		if s.c == c {
			return
		}
	}
	copy(k.seen[1:], k.seen[:len(k.seen)-1])
	k.seen[0] = connSeen{c: c, since: now}
}

// tick restarts the connections whose span is up and uncaps the ones
// whose start-up is over; it returns how many it restarted.
func (k *connClock) tick(now time.Time) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for i := range k.seen {
		s := &k.seen[i]
		if s.c == nil || s.never {
			continue
		}
		if s.capped && k.cc.uncap(s.c, false) {
			s.capped = false
		}
		if now.Sub(s.since) < k.span {
			continue
		}
		switch k.cc.restart(s.c) {
		case restartDone:
			s.since, s.capped = now, true
			n++
		case restartNever:
			s.never = true
		}
	}
	return n
}

// run ticks until ctx ends, then lifts every cap left (a connection
// reused by a later backlog starts from its own estimate); log hears of
// each restart.
func (k *connClock) run(ctx context.Context, log func(n int)) {
	tk := time.NewTicker(restartTick)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			k.mu.Lock()
			defer k.mu.Unlock()
			for i := range k.seen {
				if k.seen[i].capped {
					k.cc.uncap(k.seen[i].c, true)
					k.seen[i].capped = false
				}
			}
			return
		case now := <-tk.C:
			if n := k.tick(now); n > 0 {
				log(n)
			}
		}
	}
}
