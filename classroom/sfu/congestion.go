// Congestion: a subscriber's link measured from its TWCC feedback, and
// its video paused while the link is too weak.

package sfu

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
)

// Congestion policy. Forwarding never transcodes, and one publisher sends
// one quality, so the only way to send a weak link less is to stop its
// video: a classroom on a link that loses packets keeps the teacher's
// voice instead of getting broken video and broken audio. The loss comes
// from the subscriber's TWCC feedback (every packet the edge sends carries
// a transport-wide sequence number; the feedback says which arrived).
const (
	congWindow      = time.Second
	congPauseLoss   = 0.20 // loss above this …
	congPauseAfter  = 2    // … for this many windows in a row pauses video
	congProbeFirst  = 4 * time.Second
	congProbeMax    = 32 * time.Second
	congStableReset = 10 * time.Second // video flowing this long resets the probe backoff
)

// congestion tracks one subscriber's link.
type congestion struct {
	videoPaused atomic.Bool
	// quietUntil (unix nanos): loss reported before then is not judged.
	// A joining subscriber's primed group of pictures is sent faster than
	// the lesson's rate; what it loses says little about the link, and
	// pausing a classroom's video in its first seconds is the worst time.
	quietUntil atomic.Int64
	// probing: the layer chooser is testing the link with padding; what
	// the padding loses is the probe's verdict (choose.go), not a reason
	// to pause the video of a room that takes the layer it can carry.
	probing atomic.Bool

	mu             sync.Mutex
	lost, received int
	// The layer chooser's own count, taken on its shorter period.
	fastLost, fastReceived int
}

// feedback counts the packet statuses of one TWCC report.
func (c *congestion) feedback(p *rtcp.TransportLayerCC) {
	lost, got := 0, 0
	left := int(p.PacketStatusCount)
	count := func(sym uint16, n int) {
		n = min(n, left)
		left -= n
		if sym == rtcp.TypeTCCPacketNotReceived {
			lost += n
		} else {
			got += n
		}
	}
	for _, ch := range p.PacketChunks {
		switch c := ch.(type) {
		case *rtcp.RunLengthChunk:
			count(c.PacketStatusSymbol, int(c.RunLength))
		case *rtcp.StatusVectorChunk:
			for _, sym := range c.SymbolList {
				count(sym, 1)
			}
		}
	}
	c.mu.Lock()
	c.lost += lost
	c.received += got
	c.fastLost += lost
	c.fastReceived += got
	c.mu.Unlock()
}

// takeFast is take for the layer chooser.
func (c *congestion) takeFast() (lost, received int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	lost, received = c.fastLost, c.fastReceived
	c.fastLost, c.fastReceived = 0, 0
	return lost, received
}

// quietFor ignores loss while a priming burst of d is sent, plus two
// windows for its feedback to arrive.
func (c *congestion) quietFor(d time.Duration) {
	tail := 2 * congWindow
	if d < 250*time.Millisecond {
		tail = 700 * time.Millisecond // a small burst (a low layer's pictures) is over at once
	}
	c.quietAt(time.Now().Add(d + tail))
}

// quietAt ignores loss reported before t (or a later time already set).
func (c *congestion) quietAt(t time.Time) {
	until := t.UnixNano()
	for {
		old := c.quietUntil.Load()
		if old >= until || c.quietUntil.CompareAndSwap(old, until) {
			return
		}
	}
}

// take returns the loss ratio since the last call and how many packets it
// is based on.
func (c *congestion) take() (float64, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.lost + c.received
	var r float64
	if n > 0 {
		r = float64(c.lost) / float64(n)
	}
	c.lost, c.received = 0, 0
	return r, n
}

// adapt pauses this subscriber's video while its link loses too much and
// probes with exponential backoff to bring it back.
func (s *Subscriber) adapt() {
	tick := time.NewTicker(congWindow)
	defer tick.Stop()
	bad := 0
	probe := congProbeFirst
	var pausedAt, resumedAt time.Time
	for {
		select {
		case <-s.stopCong:
			return
		case <-tick.C:
		}
		loss, n := s.cong.take()
		if s.cong.videoPaused.Load() {
			if time.Since(pausedAt) >= probe {
				s.cong.videoPaused.Store(false)
				resumedAt, bad = time.Now(), 0
				s.sfu.resumes.Add(1)
				s.sfu.log.Info("subscriber link: trying video again", "room", s.room, "subscriber", s.id, "after", probe)
				s.keyframes()
			}
			continue
		}
		if n < 10 {
			continue // too little feedback to judge
		}
		if s.aboveLowest() {
			bad = 0
			continue // the layer chooser moves it down first
		}
		if s.cong.probing.Load() {
			bad = 0
			continue // a probe's padding: judged by the chooser
		}
		if time.Now().UnixNano() < s.cong.quietUntil.Load() {
			bad = 0
			continue // a priming burst: not the link's weakness
		}
		if loss > congPauseLoss {
			bad++
		} else {
			bad = 0
			if !resumedAt.IsZero() && time.Since(resumedAt) > congStableReset {
				probe, resumedAt = congProbeFirst, time.Time{}
			}
		}
		if bad >= congPauseAfter {
			s.cong.videoPaused.Store(true)
			pausedAt, bad = time.Now(), 0
			if !resumedAt.IsZero() {
				probe = min(probe*2, congProbeMax) // the probe failed: wait longer
			}
			s.sfu.pauses.Add(1)
			s.sfu.log.Warn("subscriber link too weak for video: video paused, audio continues", "room", s.room, "subscriber", s.id,
				"loss", loss, "probe_in", probe)
		}
	}
}
