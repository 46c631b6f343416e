// Package faultproxy is a real TCP proxy for sync tests and benchmarks: it
// forwards connections to a target and can cut a connection after a given
// number of bytes in either direction (a WAN cut mid-request or mid-answer),
// and shape the link with a byte rate and a one-way delay.
package faultproxy

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Fault says what happens to one connection. A negative cut never cuts.
type Fault struct {
	CutUpAfter   int // close after forwarding this many client→server bytes
	CutDownAfter int // close after forwarding this many server→client bytes
}

// None is a connection left alone.
var None = Fault{CutUpAfter: -1, CutDownAfter: -1}

// Config sets up a proxy.
type Config struct {
	Target string
	// Plan chooses the fault of the n-th connection (0-based); nil: none.
	Plan func(n int) Fault
	// Rate caps bytes per second in each direction (0: unlimited).
	Rate int
	// Delay is the one-way latency added to every chunk.
	Delay time.Duration
}

// Proxy is a running proxy.
type Proxy struct {
	ln     net.Listener
	cfg    Config
	target atomic.Pointer[string]
	n      atomic.Int64
	cuts   atomic.Int64
	up     atomic.Int64
	down   atomic.Int64
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
	// One limiter per direction shared by every connection: the link's rate
	// is the link's, however many connections share it.
	upLim, downLim *rate.Limiter
}

// Start listens on 127.0.0.1:0.
func Start(cfg Config) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, cfg: cfg, conns: map[net.Conn]struct{}{}}
	if cfg.Rate > 0 {
		p.upLim = rate.NewLimiter(rate.Limit(cfg.Rate), 1500)
		p.downLim = rate.NewLimiter(rate.Limit(cfg.Rate), 1500)
	}
	p.target.Store(&cfg.Target)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetTarget points new connections elsewhere (a restarted hub).
func (p *Proxy) SetTarget(t string) { p.target.Store(&t) }

// Cuts is how many connections the proxy cut on purpose.
func (p *Proxy) Cuts() int64 { return p.cuts.Load() }

// Bytes is how many bytes went up (client→server) and down.
func (p *Proxy) Bytes() (up, down int64) { return p.up.Load(), p.down.Load() }

// DropAll closes every open connection (a WAN cut for everyone).
func (p *Proxy) DropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// Close stops the proxy and its connections.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.DropAll()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		f := None
		if p.cfg.Plan != nil {
			f = p.cfg.Plan(int(p.n.Add(1) - 1))
		}
		p.wg.Add(1)
		go p.serve(c, f)
	}
}

func (p *Proxy) serve(c net.Conn, f Fault) {
	defer p.wg.Done()
	s, err := net.DialTimeout("tcp", *p.target.Load(), 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	p.track(c, true)
	p.track(s, true)
	defer func() {
		_ = c.Close()
		_ = s.Close()
		p.track(c, false)
		p.track(s, false)
	}()
	done := make(chan struct{}, 2)
	go func() { p.pipe(s, c, f.CutUpAfter, &p.up, p.upLim); done <- struct{}{} }()
	go func() { p.pipe(c, s, f.CutDownAfter, &p.down, p.downLim); done <- struct{}{} }()
	<-done // either side ending (or a cut) ends both
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst, cutting after cut bytes, delaying each chunk by
// Delay and pacing at Rate.
func (p *Proxy) pipe(dst, src net.Conn, cut int, count *atomic.Int64, lim *rate.Limiter) {
	q := make(chan chunk, 4096)
	stop := make(chan struct{})
	defer close(stop)
	send := func(c chunk) bool {
		select {
		case q <- c:
			return true
		case <-stop:
			return false
		}
	}
	go func() {
		defer close(q)
		sent := 0
		for {
			buf := make([]byte, 1400)
			n, err := src.Read(buf)
			if n > 0 {
				if cut >= 0 && sent+n >= cut {
					n = cut - sent
					if n > 0 && !send(chunk{buf[:n], time.Now()}) {
						return
					}
					send(chunk{nil, time.Now()}) // marks the cut
					return
				}
				sent += n
				if !send(chunk{buf[:n], time.Now()}) {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range q {
		if d := time.Until(ch.at.Add(p.cfg.Delay)); d > 0 {
			time.Sleep(d)
		}
		if ch.b == nil {
			p.cuts.Add(1)
			_ = src.Close()
			_ = dst.Close()
			return
		}
		if lim != nil {
			_ = lim.WaitN(context.Background(), len(ch.b))
		}
		if _, err := dst.Write(ch.b); err != nil {
			_ = src.Close()
			return
		}
		count.Add(int64(len(ch.b)))
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		_ = dst.Close()
	}
	_, _ = io.Copy(io.Discard, src)
}
