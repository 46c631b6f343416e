package uplink

import (
	"bytes"
	"context"
	"io"
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
