// Choosing a layer per subscriber: the subscriber's link, judged from the
// send-side estimate (pion's gcc over the subscriber's TWCC feedback) and
// the loss that feedback reports, sets a budget; each simulcast track gets
// the highest layer the budget carries. A move up is earned by a probe:
// padding that raises what the link carries to the next layer's bitrate
// for a second; a move down happens as soon as the link shows congestion.

package sfu

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"time"

	"golang.org/x/time/rate"
)

// Layer choice timing and margins.
const (
	chooseTick  = 100 * time.Millisecond
	lossTicks   = 3  // loss is judged over this many ticks …
	lossPackets = 80 // … and packets: 40 at 3 % random loss read as 8 % one window in thirty
	// probeDrain: after a failed probe, its queue drains for this long
	// before loss is judged again (an exponential ramp stopped by gcc's
	// delay signal leaves at most a few hundred ms of queue).
	probeDrain    = 1200 * time.Millisecond
	probeDrainMax = 3 * time.Second
	congLoss      = 0.08 // loss above this is congestion (a thin link's queue overflowing), not random loss
	cutEvery      = 300 * time.Millisecond
	// probeDouble: a probe's send rate doubles this often, from what the
	// media sends to what the next layer needs. Exponential, not linear:
	// near a link's capacity the rate grows in proportion to it, so a
	// thin link is overfilled by as little (in ms of its queue) as a wide
	// one before gcc's delay signal stops the probe; and a wide link is
	// found in about a second.
	probeDouble = 500 * time.Millisecond
	// probeGiveUp: a probe whose send rate has not come to its last aim
	// this long after its ramp got there ends (a loaded machine's
	// padding falls short; the next probe starts soon).
	probeGiveUp = 1500 * time.Millisecond
	// probeLoss: loss during a probe above the link's loss before it
	// (random loss, 1-3 % on the test's links) by more than this ends it,
	// judged on at least probeLossMin packets: a few packets lost at
	// random among the first twenty read as 10 %.
	probeLoss    = 0.08
	probeLossMin = 100
	// probeRecentLoss over probeRecentMin packets in the last half
	// second (five ticks) ends a probe too: a queue overflowing now.
	probeRecentLoss = 0.12
	probeRecentMin  = 50
	probeHold       = 300 * time.Millisecond // at a layer before probing further up
	// probeVerdict: after its padding stops a probe is judged this much
	// later, once a shaper's queue (400 ms in tbf's usual setting) has
	// delivered or dropped the last of it and the feedback has told.
	probeVerdict = 500 * time.Millisecond
	// probeQueue: a probe ends when the link's queueing delay, measured
	// from its TWCC feedback (queueMeter), passes this: the probe has
	// emptied the shaper's token bucket and started a queue. Reports
	// come every 100 ms, so the queue the probe leaves is this and what
	// it adds in the 100-200 ms the verdict takes (on a 300 kbit/s link
	// probed towards 750 kbit/s, the bucket hides the overfill until the
	// send rate is twice the link's), which drains at what the link
	// carries beyond the media (50 kbit/s there). Links the probe did not
	// overfill showed no report past 10 ms (loads 4-8).
	probeQueue = 20 * time.Millisecond
	backoffMin = 2 * time.Second
	// backoffMax: a widened link is found again within this and a probe
	// (the bound is 10 s from widening to the higher layer).
	backoffMax  = 4 * time.Second
	failedUpFor = 3 * time.Second // a move down this soon after a move up means the probe misjudged
	// probeGentle: a probe towards a layer a probe has already failed
	// to reach doubles its rate this slowly above what the link is known
	// to carry (up to it at the usual pace): each step overfills the link
	// by less before the queue meter tells, and a widened link is still
	// found within the 10 s (backoffMax, then about 3 s from 1 to
	// 4 Mbit/s). 1 s (the ramp after a failure before) passed the strict
	// shaped test 1 of 4 times, 1.5 s 6 of 6; but on the 300 kbit/s link,
	// where gcc's delay statistics moved about once a second and only
	// loss ended a probe, one benchmark run froze longer (docs/BENCHMARKS.md;
	// both before the queue meter).
	probeGentle = 1500 * time.Millisecond
	// layerHeadroom: a layer is chosen when the budget exceeds its
	// measured payload bitrate by this factor (headers, SRTP, feedback).
	layerHeadroom = 1.1
	// A probe aims at what a layer needs (its bitrate × layerHeadroom,
	// with audio): a send rate of probeReached of an aim reaches it, and
	// the link that carried it is credited with the aim (and a hair, so
	// rounding leaves the layer's need within it). Aiming higher
	// overfilled a 1 Mbit/s link probing for a 600 kbit/s layer.
	probeReached = 0.97
	probeCredit  = 1.001
	// upMargin: a layer is taken when the budget is this share of its
	// need: the layer's measured rate moves between the probe that
	// credited it and the move (by 20 % on a loaded machine, whose
	// publisher sends in bursts). upMargin × layerHeadroom stays above
	// layerKeep, so a layer just taken is not left at once.
	upMargin = 0.87
	// layerKeep: a layer is left when the budget falls below this share
	// of its bitrate (below layerHeadroom, so a layer just reached is
	// not left at the next measurement).
	layerKeep    = 0.9
	audioReserve = 64_000 // bits/s kept for the subscriber's audio before video is chosen
	paceMin      = 500_000

	// gcc's settings for subscriber links.
	bweInitial = 1_000_000
	bweMin     = 50_000
	bweMax     = 50_000_000
)

// chooser is one subscriber's layer-choice state, owned by its
// chooseLayers goroutine.
type chooser struct {
	budget        float64 // bits/s the link is known to carry; 0 before a probe or a cut
	lastTx        uint64
	lastAt        time.Time
	txRate        float64
	lost, recv, n int
	loss          float64
	probing       *subTrack
	probeStart    time.Time
	// A probe ramps the send rate up through aims (bits/s, one per
	// layer above the current one); reached[i] is when what was sent
	// over the last 300 ms first came to aims[i] (zero: not yet),
	// credited how many aims the budget has taken.
	aims      []float64
	reached   []time.Time
	credited  int
	probeFrom float64       // bits/s the media sends: the ramp starts here
	stepFrom  float64       // the ramp's start towards the next aim (bits/s) …
	stepAt    time.Time     // … and when
	double    time.Duration // the ramp doubles the rate this often
	// baseLoss: the link's usual loss (random loss), a slow average of
	// the loss outside probes; loss above it is what congestion adds.
	baseLoss float64
	// hist: the bytes sent at the last few ticks, for the send rate over
	// 300 ms.
	hist             [4]txAt
	histN            int
	sent             float64 // bits/s over the last 300 ms
	probeLost        int
	probeRecv        int
	overPrev         bool
	graceUntil       time.Time // a failed probe's queue is draining …
	failedAt         time.Time // … since then
	backoff          time.Duration
	nextProbe        time.Time
	lastSwitch, upAt time.Time
	lastCut          time.Time
	trace            int       // ticks of gcc's view still to log after a probe
	recent           [5][2]int // lost, received at each of the last ticks
	recentN          int
	lastEst          float64       // gcc's last delay trend estimate …
	lastMeas         float64       // … and measurement seen
	qm               *queueMeter   // the link's queue meter (nil while the gate is shut)
	queue            time.Duration // the link's queueing delay, last measured
	queueReports     uint64        // reports the queue meter had measured then
	// failed holds, per layer a probe aimed at (by index), the probes in
	// a row that failed to reach it and the rate sent when the last one
	// failed: the next probe towards it waits longer and ramps gently
	// above what the link carries (gentle). Cleared when a probe reaches the layer or gcc's
	// estimate climbs past the rate that failed.
	failed map[int]failedProbe
	// gentle: this probe's aim failed before; known is what the link
	// carries (bits/s, the budget or what it sent before the probe),
	// above which the ramp is gentle.
	gentle bool
	known  float64
	target int // the layer index the probe aims at first
}

// failedProbe is what failed probes towards one layer left.
type failedProbe struct {
	n    int
	sent float64
}

// txAt is the subscriber's byte count at a tick.
type txAt struct {
	at time.Time
	tx uint64
}

// chooseLayers runs the subscriber's layer choice until it closes.
func (s *Subscriber) chooseLayers() {
	tick := time.NewTicker(chooseTick)
	defer tick.Stop()
	var c chooser
	for {
		select {
		case <-s.stopCong:
			return
		case now := <-tick.C:
			s.chooseOnce(&c, now)
		}
	}
}

// measure updates the send rate, loss and congestion signal; it reports
// whether the link is congested now.
func (s *Subscriber) measure(c *chooser, now time.Time) bool {
	tx := s.tx.Load()
	if !c.lastAt.IsZero() {
		r := float64(tx-c.lastTx) * 8 / now.Sub(c.lastAt).Seconds()
		c.txRate = 0.7*c.txRate + 0.3*r
	}
	c.lastTx, c.lastAt = tx, now
	c.hist[c.histN%len(c.hist)] = txAt{now, tx}
	c.histN++
	if c.histN >= len(c.hist) {
		old := c.hist[c.histN%len(c.hist)] // the oldest kept
		c.sent = float64(tx-old.tx) * 8 / now.Sub(old.at).Seconds()
	}
	// Loss over at least lossTicks and lossPackets (up to a second): on
	// a thin link's low layer a few packets lost at random would read as
	// congestion.
	l, r := s.cong.takeFast()
	if now.Before(c.graceUntil) {
		// A failed probe's queue drains: what it loses is the probe's,
		// and must not be the first window judged after it.
		l, r = 0, 0
		c.lost, c.recv, c.n = 0, 0, 0
		c.loss = c.baseLoss
	}
	c.lost, c.recv, c.n = c.lost+l, c.recv+r, c.n+1
	c.probeLost, c.probeRecv = c.probeLost+l, c.probeRecv+r
	c.recent[c.recentN%len(c.recent)] = [2]int{l, r}
	c.recentN++
	if c.n >= lossTicks && (c.lost+c.recv >= lossPackets || c.n >= 10) {
		if c.lost+c.recv >= 10 {
			c.loss = float64(c.lost) / float64(c.lost+c.recv)
			if c.probing == nil && !now.Before(c.graceUntil) {
				c.baseLoss = 0.8*c.baseLoss + 0.2*min(c.loss, congLoss)
			}
		}
		c.lost, c.recv, c.n = 0, 0, 0
	}
	s.lossPPM.Store(int64(c.loss * 1e6))
	overuse := false
	s.bweMu.Lock()
	bwe := s.gate.estimator() // nil while the gate is shut
	qm := s.gate.queue()
	s.bweMu.Unlock()
	c.qm = qm
	queued := false // the probe started a queue
	if qm != nil {
		d, n, tripped := qm.last()
		if n != c.queueReports {
			queued = c.probing != nil && probeQueued(d)
			c.queue, c.queueReports = d, n
		}
		queued = queued || (c.probing != nil && tripped)
	}
	if bwe != nil {
		// Overuse on two ticks in a row: one keyframe's burst through a
		// shaper reads as overuse for a moment.
		// gcc's "usage" says overuse for one update only, while its
		// delay trend estimate can stay above the threshold for long
		// after: an overuse episode starts with the first and lasts
		// while the second holds. It counts on its second tick (a
		// keyframe's burst through a shaper reads as overuse for a
		// moment).
		st := bwe.GetStats()
		est, _ := st["delayEstimate"].(float64)
		thr, _ := st["delayThreshold"].(float64)
		// A probe's queue is the queue meter's to judge (measure's
		// caller): gcc's delay trend crossed its threshold by a hair on
		// a loaded machine with no queue at all, on an unshaped link and
		// on one just widened, and each such probe cost a climb 4-6 s.
		over := c.probing == nil && (st["usage"] == "overuse" || (c.overPrev && est > 0 && thr > 0 && est > thr))
		if now.Before(c.graceUntil) {
			// A failed probe's queue drains: the trend estimate stays
			// above the threshold for a second or more while it falls,
			// which is no news. Congestion after it starts anew. A
			// probe that filled a thin link's 400 ms queue leaves gcc
			// above its threshold past probeDrain: the drain lasts
			// while it is, or while the queue meter still shows the
			// queue, up to probeDrainMax.
			over = false
			if (c.queue > probeQueue/2 || (est > thr && thr > 0)) && c.graceUntil.Sub(now) < chooseTick && now.Sub(c.failedAt) < probeDrainMax {
				c.graceUntil = now.Add(chooseTick)
				s.cong.quietAt(c.graceUntil)
			}
		}
		if meas, _ := st["delayMeasurement"].(float64); est == c.lastEst && meas == c.lastMeas {
			// No feedback since the last tick: the same measurement
			// must not count twice (a single delay spike on a loaded
			// machine read as two ticks of overuse).
			over = c.overPrev && over
		} else {
			overuse = over && c.overPrev
			c.overPrev = over
			c.lastEst, c.lastMeas = est, meas
		}
		// During a probe and for a second after, the debug log has
		// gcc's view each tick: why a probe ended is read from it.
		if (c.probing != nil || c.trace > 0) && s.sfu.log.Enabled(context.Background(), slog.LevelDebug) {
			if c.probing == nil {
				c.trace--
			} else {
				c.trace = 10
			}
			s.sfu.log.Debug("subscriber gcc", "subscriber", s.id, "usage", st["usage"], "est", est, "thr", thr, "meas", st["delayMeasurement"],
				"target", bwe.GetTargetBitrate(), "sent", int(c.txRate), "loss", c.loss, "probe_lost", c.probeLost, "probe_received", c.probeRecv,
				"queue", c.queue.Milliseconds())
		}
		s.target.Store(int64(bwe.GetTargetBitrate()))
	}
	if queued {
		s.sfu.log.Debug("subscriber probe queued", "subscriber", s.id, "queue", c.queue, "sent", int(c.sent))
		return true // the probe filled the shaper's bucket and started a queue
	}
	if now.UnixNano() < s.cong.quietUntil.Load() || now.Before(c.graceUntil) {
		return false // a priming burst's or a failed probe's losses say little about the link
	}
	lossy := c.loss > congLoss+min(c.baseLoss, congLoss/2) // above the link's random loss
	if overuse || lossy {
		s.sfu.log.Debug("subscriber link congestion signal", "subscriber", s.id, "overuse", overuse, "loss", c.loss, "sent", int(c.txRate), "probing", c.probing != nil)
	}
	if c.probing != nil && c.probeLost+c.probeRecv >= probeLossMin && float64(c.probeLost) > (min(c.baseLoss, congLoss)+probeLoss)*float64(c.probeLost+c.probeRecv) {
		s.sfu.log.Debug("subscriber probe lost", "subscriber", s.id, "lost", c.probeLost, "of", c.probeLost+c.probeRecv, "before", c.baseLoss)
		return true // the shaper started dropping what the probe added
	}
	if c.probing != nil && c.recentN >= len(c.recent) {
		// The last half second alone: counted from the probe's start,
		// the loss of a thin link whose queue has just overflowed (gcc's
		// delay trend missed it) is diluted by the second before it,
		// and the link drops frames all the while.
		lost, n := 0, 0
		for _, x := range c.recent {
			lost, n = lost+x[0], n+x[0]+x[1]
		}
		if n >= probeRecentMin && float64(lost) > (min(c.baseLoss, congLoss)+probeRecentLoss)*float64(n) {
			s.sfu.log.Debug("subscriber probe lost lately", "subscriber", s.id, "lost", lost, "of", n, "before", c.baseLoss)
			return true
		}
	}
	return lossy || overuse
}

func (s *Subscriber) chooseOnce(c *chooser, now time.Time) {
	congested := s.measure(c, now)
	if congested && c.probing != nil {
		s.sfu.log.Debug("subscriber probe failed", "subscriber", s.id, "after", now.Sub(c.probeStart), "sent", int(c.txRate),
			"aims", c.aims, "credited", c.credited, "gcc", s.target.Load(), "loss", c.loss)
		s.endProbe(c, now, false) // the probe found the link's limit: no cut
		congested = false
	}
	if congested && now.Sub(c.lastCut) >= cutEvery && c.txRate > 0 {
		// What arrived, less a margin, is what the link carries.
		if cut := 0.9 * c.txRate * (1 - c.loss); c.budget == 0 || cut < c.budget {
			s.sfu.log.Debug("subscriber link congested", "room", s.room, "subscriber", s.id, "loss", c.loss,
				"sent", int(c.txRate), "budget", int(cut), "probing", c.probing != nil)
			c.budget = cut
		}
		c.lastCut = now
	}
	if c.probing != nil {
		s.rampProbe(c, now)
	}
	s.budget.Store(int64(c.budget))

	video := s.videoTracks()
	var layered []*subTrack
	for _, t := range video {
		if t.layered() {
			layered = append(layered, t)
		}
	}
	if len(layered) > 0 {
		s.openGate()
	}
	for _, t := range video {
		s.paceFor(t, c)
	}
	shares := s.split(c, video, layered)
	for i, t := range layered {
		s.chooseFor(c, t, shares[i], congested, now)
	}
}

// share is one layered track's part of the link budget: budget (bits/s)
// for its layer, and what the subscriber's other layered tracks take while
// it probes (n copies of its own next layer, plus others bits/s).
type share struct {
	budget float64
	n      int
	others float64
}

// split divides the budget among the layered tracks, after audio and the
// video that has no layers to choose from. Screen shares go first: each
// takes the highest layer that leaves the tracks after it their lowest, so
// on a thin link the slide stays readable and the camera goes down first.
// Without a screen share the tracks share equally.
func (s *Subscriber) split(c *chooser, video, layered []*subTrack) []share {
	total := c.budget - audioReserve
	for _, t := range video {
		if !t.layered() {
			if f := t.cur.Load(); f != nil {
				total -= float64(f.bitrate.Load())
			}
		}
	}
	out := make([]share, len(layered))
	screens := false
	for _, t := range layered {
		screens = screens || t.screen()
	}
	if !screens {
		for i := range out {
			out[i] = share{budget: total / float64(len(layered)), n: len(layered)}
		}
		return out
	}
	order := make([]int, 0, len(layered))
	for i, t := range layered {
		if t.screen() {
			order = append(order, i)
		}
	}
	for i, t := range layered {
		if !t.screen() {
			order = append(order, i)
		}
	}
	cur := make([]float64, len(layered))
	lowest := make([]float64, len(layered))
	sum := 0.0
	for i, t := range layered {
		if f := t.cur.Load(); f != nil {
			cur[i] = float64(f.bitrate.Load())
		}
		if ls := t.fwd.grp.layers(); len(ls) > 0 {
			lowest[i] = float64(ls[0].bitrate.Load()) * layerHeadroom
		}
		sum += cur[i]
	}
	avail := total
	for k, i := range order {
		rest := 0.0
		for _, j := range order[k+1:] {
			rest += lowest[j]
		}
		b := avail - rest
		out[i] = share{budget: b, n: 1, others: sum - cur[i]}
		avail -= taken(layered[i], b, cur[i])
	}
	return out
}

// taken is what t's layer will cost within budget b: its current layer
// while b keeps it (chooseFor's rule), else the highest that fits.
func taken(t *subTrack, b, cur float64) float64 {
	if cur > 0 && b >= layerKeep*cur {
		return cur
	}
	ls := t.fwd.grp.layers()
	if len(ls) == 0 {
		return 0
	}
	j := 0
	for j+1 < len(ls) && float64(ls[j+1].bitrate.Load())*layerHeadroom <= b {
		j++
	}
	return float64(ls[j].bitrate.Load())
}

// openGate lets the estimator see this subscriber's packets and feedback
// from now on: it has a layer to choose (bwegate.go). The gate stays open
// for the connection's life: a publisher that stops sending simulcast for
// a moment (a layer idle, a renegotiation) must not reset the estimate.
func (s *Subscriber) openGate() {
	s.bweMu.Lock()
	g := s.gate
	s.bweMu.Unlock()
	if g != nil && !g.open.Swap(true) {
		s.sfu.estimating.Add(1)
		s.sfu.log.Debug("subscriber has simulcast: estimating its link", "room", s.room, "subscriber", s.id)
	}
}

// rampProbe raises the probe's padding along its ramp, one aim at a
// time: the send rate doubles every c.double up to the next aim, holds
// there until what was sent over the last 300 ms came to it and then
// probeVerdict more with no congestion (what a thin link did with it,
// queued then dropped, reaches the feedback only after its queue's
// delay), and the budget is credited with that aim before the ramp goes
// on. Held at each aim, a link that carries one layer but not the next
// is overfilled only after the first is credited. The probe ends when
// its last aim is credited, or when the send rate never gets to an aim
// (a loaded machine's padding falls short).
func (s *Subscriber) rampProbe(c *chooser, now time.Time) {
	k := c.credited
	aim := c.aims[k]
	if c.reached[k].IsZero() && c.sent >= probeReached*aim {
		c.reached[k] = now
	}
	if !c.reached[k].IsZero() && now.Sub(c.reached[k]) >= probeVerdict {
		c.budget = max(c.budget, probeCredit*aim)
		s.sfu.log.Debug("subscriber probe step", "subscriber", s.id, "aim", int(aim), "budget", int(c.budget), "gcc", s.target.Load())
		c.credited++
		if c.credited == len(c.aims) {
			s.endProbe(c, now, true)
			return
		}
		c.stepFrom, c.stepAt = aim, now
		k, aim = c.credited, c.aims[c.credited]
	}
	if c.credited > 0 && (c.probing.want.Load() != nil || now.Sub(c.lastSwitch) < probeHold) {
		// The layer just credited is being switched to: hold the ramp at
		// its aim until its keyframe is through, so the burst does not
		// meet the ramp's overfill of a link that carries no more (a
		// cascade's rural classrooms lost a second of frames to that).
		c.stepAt = now
	}
	r := c.stepFrom * math.Exp2(float64(now.Sub(c.stepAt))/float64(c.double))
	if base := max(c.known, c.stepFrom); c.gentle && k == 0 && r > base {
		// Up to what the link carries at the usual pace, then gently.
		up := float64(c.double) * math.Log2(base/c.stepFrom)
		r = base * math.Exp2((float64(now.Sub(c.stepAt))-up)/float64(probeGentle))
	}
	if c.qm != nil {
		if _, _, tripped := c.qm.last(); tripped {
			return // the meter stopped the padding: the next tick ends the probe
		}
	}
	media := s.mediaRate()
	pad := r - media
	if r >= aim {
		// At the aim: make up for what the padding fell short by (late
		// ticks on a loaded machine, a layer sending less than its
		// measured rate), up to twice the padding.
		pad = aim - media
		pad += min(pad, max(0, aim-c.sent))
		full := c.double * time.Duration(math.Ceil(math.Log2(aim/c.stepFrom)))
		if c.gentle && k == 0 {
			full = probeGentle * time.Duration(math.Ceil(math.Log2(aim/c.stepFrom)))
		}
		if c.reached[k].IsZero() && now.Sub(c.stepAt) > full+probeGiveUp {
			s.sfu.log.Debug("subscriber probe short", "subscriber", s.id, "sent", int(c.sent), "aims", c.aims, "credited", c.credited)
			s.endProbe(c, now, true)
			c.nextProbe = now.Add(probeHold)
			return
		}
	}
	c.probing.probe.Store(int64(max(pad, 20_000)))
}

// mediaRate is what the subscriber's media sends (bits/s), from the
// layers' own rates: the send rate holds a probe's padding.
func (s *Subscriber) mediaRate() float64 {
	media := audioReserve / 2.0
	for _, v := range s.videoTracks() {
		if f := v.cur.Load(); f != nil {
			media += float64(f.bitrate.Load())
		}
	}
	return media
}

// endProbe stops the probe; the budget holds what it credited.
func (s *Subscriber) endProbe(c *chooser, now time.Time, ok bool) {
	if c.qm != nil {
		c.qm.arm(nil)
	}
	c.probing.probe.Store(0)
	c.probing = nil
	s.cong.probing.Store(false)
	if !ok {
		// The aim it did not reach: its layer waits longer for the next
		// probe, which ramps gently near this rate.
		if c.failed == nil {
			c.failed = map[int]failedProbe{}
		}
		l := c.target + c.credited
		f := c.failed[l]
		f.n++
		f.sent = c.sent
		c.failed[l] = f
	}
	if !ok && c.credited == 0 {
		// Backoff per layer: 2 s, 4 s for the layer that keeps failing
		// (capped so a widened link is found within 10 s).
		c.backoff = min(backoffMin*time.Duration(1<<min(c.failed[c.target].n-1, 4)), backoffMax)
		c.nextProbe = now.Add(c.backoff)
	}
	if !ok {
		// The link carried what was sent before the probe: let the
		// queue the probe built drain before judging it again (nor
		// pausing the video for it).
		c.graceUntil, c.failedAt = now.Add(probeDrain), now
		s.cong.quietAt(now.Add(probeDrain))
		if c.credited > 0 {
			// It found a step up, not the next: try again once the
			// queue drained (a delay spike on a loaded machine ends a
			// probe as surely as a link's limit).
			c.nextProbe = now.Add(probeDrain)
		}
		return
	}
	s.sfu.log.Debug("subscriber probe done", "subscriber", s.id, "sent", int(c.sent), "aims", c.aims, "budget", int(c.budget), "gcc", s.target.Load())
	c.backoff, c.nextProbe = 0, now
	for l := range c.failed {
		if l < c.target+c.credited {
			delete(c.failed, l) // reached
		}
	}
}

// chooseFor moves t down when its share of the budget no longer carries
// its layer, or up when it does, probing first.
func (s *Subscriber) chooseFor(c *chooser, t *subTrack, sh share, congested bool, now time.Time) {
	if w := t.want.Load(); w != nil {
		if !slices.Contains(t.fwd.grp.layers(), w) {
			// The layer it waits for went quiet (a browser short of
			// CPU or uplink stops its top layer): its keyframe may
			// never come. Stay, and choose again next tick.
			t.want.CompareAndSwap(w, nil)
			return
		}
		if now.Sub(time.Unix(0, t.wantAt.Load())) > 1500*time.Millisecond {
			t.wantAt.Store(now.UnixNano()) // the keyframe request may have been lost
			w.keyframe()
		}
		return
	}
	ls := t.fwd.grp.layers()
	ci := slices.Index(ls, t.cur.Load())
	if ci < 0 && len(ls) > 0 && t.cur.Load() != nil && t.cur.Load().grp == t.fwd.grp {
		// The layer it takes went quiet: the lowest live one keeps the
		// picture, and the budget moves it up from there.
		t.switchTo(ls[0])
		c.lastSwitch = now
		return
	}
	if len(ls) < 2 || ci < 0 {
		return
	}
	top := len(ls) - 1
	if s.sfu.cfg.NoLayers {
		if ci != top {
			t.switchTo(ls[top])
		}
		return
	}
	if s.heldLow(t) {
		if ci != 0 {
			t.switchTo(ls[0])
			s.sfu.downs.Add(1)
			c.lastSwitch = now
		}
		return
	}
	need := func(i int) float64 { return float64(ls[i].bitrate.Load()) * layerHeadroom }
	budget := sh.budget
	if c.budget > 0 && ci > 0 && budget < layerKeep*float64(ls[ci].bitrate.Load()) {
		j := ci - 1
		for j > 0 && need(j) > budget {
			j--
		}
		t.switchTo(ls[j])
		s.sfu.downs.Add(1)
		s.sfu.log.Info("subscriber layer down", "room", s.room, "subscriber", s.id, "layer", ls[j].rid, "budget", int(c.budget))
		if now.Sub(c.upAt) < failedUpFor {
			c.backoff = min(max(2*c.backoff, backoffMin), backoffMax)
			c.nextProbe = now.Add(c.backoff)
		}
		c.lastSwitch = now
		return
	}
	// Loss rising above the link's usual (random) loss, or congestion:
	// no move up, nor a probe.
	if ci == top || congested || c.loss >= min(c.baseLoss, congLoss)+congLoss/2 || s.cong.videoPaused.Load() {
		return
	}
	// (A probe credited exactly the need it measured then; the layer's
	// rate has moved a little since.)
	if c.budget > 0 && budget >= upMargin*need(ci+1) {
		// The budget carries a higher layer (a probe credited it, maybe
		// while it goes on towards the next).
		j := ci + 1
		for j < top && upMargin*need(j+1) <= budget {
			j++
		}
		t.switchTo(ls[j])
		s.sfu.ups.Add(1)
		s.sfu.log.Info("subscriber layer up", "room", s.room, "subscriber", s.id, "layer", ls[j].rid, "budget", int(c.budget))
		c.lastSwitch, c.upAt = now, now
		return
	}
	if c.probing != nil || now.Before(c.nextProbe) || now.Sub(c.lastSwitch) < probeHold || now.UnixNano() < s.cong.quietUntil.Load() {
		return
	}
	if c.queue > probeQueue/2 {
		return // a queue (a keyframe's, the last probe's) still drains: a probe now would start on it
	}
	// Probe: ramp what is sent up through what each higher layer would
	// need, crediting each the link carries (rampProbe), so a wide link
	// reaches the top layer in one probe.
	c.aims, c.reached, c.credited = c.aims[:0], c.reached[:0], 0
	for k := ci + 1; k <= top; k++ {
		c.aims = append(c.aims, need(k)*float64(sh.n)+sh.others+audioReserve)
		c.reached = append(c.reached, time.Time{})
	}
	media := s.mediaRate()
	c.probeFrom = max(media, min(c.aims[0]/4, 200_000))
	c.double = probeDouble
	c.target = ci + 1
	f, failed := c.failed[c.target]
	if failed && float64(s.target.Load()) > f.sent {
		// gcc's estimate grew past the rate that failed: the link
		// changed, probe as if new.
		delete(c.failed, c.target)
		failed = false
	}
	// Gentle only when the last probe failed short of this aim: the
	// link did not carry it. One that failed after its send rate got
	// there (a delay spike on a loaded machine, a keyframe's burst
	// during its verdict) says nothing of the link, and a gentle ramp
	// would cost a joiner its 5 s to settle.
	c.gentle, c.known = failed && f.sent < probeReached*c.aims[0], max(c.budget, c.txRate)
	if c.backoff > 0 || failed {
		// The last probe failed: a gentler ramp overfills the link by
		// less before gcc sees the queue.
		c.double = probeDouble * 2
	}
	t.probe.Store(int64(max(c.probeFrom-media, 20_000)))
	s.sfu.log.Debug("subscriber probe", "subscriber", s.id, "aims", c.aims, "from", int(c.probeFrom), "layer", ci, "budget", int(c.budget),
		"gentle", c.gentle, "known", int(c.known), "failed_before", c.failed[c.target].n,
		"gcc", s.target.Load(), "loss", c.loss, "base_loss", c.baseLoss)
	if c.qm != nil {
		c.qm.arm(&t.probe)
	}
	c.probing, c.probeStart = t, now
	c.stepFrom, c.stepAt = c.probeFrom, now
	s.cong.probing.Store(true)
	c.probeLost, c.probeRecv = 0, 0
	c.recent, c.recentN = [5][2]int{}, 0
	s.sfu.probes.Add(1)
}

// paceFor sets t's pacer from the budget: twice what the link carries
// spreads a keyframe's burst without holding back the layer's own rate.
func (s *Subscriber) paceFor(t *subTrack, c *chooser) {
	if c.budget <= 0 {
		return
	}
	r := max(2*c.budget, paceMin)
	if f := t.cur.Load(); f != nil {
		r = max(r, 1.5*float64(f.bitrate.Load()))
	}
	r = max(r, 1.5*(float64(t.probe.Load())+c.txRate))
	r = min(r, s.sfu.cfg.PaceBitrate)
	t.pace.SetLimit(rate.Limit(r / 8))
}

// videoTracks returns the subscriber's attached video tracks.
func (s *Subscriber) videoTracks() []*subTrack {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*subTrack
	for _, t := range s.tracks {
		if t.attached && t.pace != nil {
			out = append(out, t)
		}
	}
	return out
}

// aboveLowest reports whether any of the subscriber's simulcast tracks
// takes a layer above its lowest: its video is not paused before those
// have moved down.
func (s *Subscriber) aboveLowest() bool {
	if s.sfu.cfg.NoLayers {
		return false // every subscriber takes the top layer: pausing is all there is
	}
	s.mu.Lock()
	tracks := slices.Clone(s.tracks)
	s.mu.Unlock()
	for _, t := range tracks {
		if !t.layered() {
			continue
		}
		ls := t.fwd.grp.layers()
		if len(ls) > 1 && t.cur.Load() != ls[0] {
			return true
		}
	}
	return false
}

// Link is what the SFU knows of one subscriber's link, for metrics and
// the console.
type Link struct {
	Subscriber string
	// Layer is the simulcast layer its (first) layered video takes, 0
	// the lowest; -1 when it has no layered video.
	Layer int
	// Budget (bits/s) is what the link is known to carry (0 before a
	// probe or congestion told); Target is gcc's own estimate.
	Budget, Target int64
	Loss           float64 // recent loss ratio from its TWCC feedback
	VideoPaused    bool
	// Estimating: gcc runs on this link (it receives simulcast); Target
	// is 0 while it does not.
	Estimating bool
	// Layers is how many layers that video has (0: none).
	Layers int
}

// Link is what the SFU knows of this subscriber's link.
func (s *Subscriber) Link() Link { return s.link() }

// Links returns the links of roomID's subscribers.
func (s *SFU) Links(roomID string) []Link {
	subs := s.roomSubs(roomID)
	out := make([]Link, 0, len(subs))
	for _, sub := range subs {
		out = append(out, sub.link())
	}
	return out
}

// AllLinks returns every subscriber's link, in every room.
func (s *SFU) AllLinks() []Link {
	s.mu.Lock()
	var subs []*Subscriber
	for _, r := range s.rooms {
		for _, sub := range r.subs {
			subs = append(subs, sub)
		}
	}
	s.mu.Unlock()
	out := make([]Link, 0, len(subs))
	for _, sub := range subs {
		out = append(out, sub.link())
	}
	return out
}

func (s *Subscriber) link() Link {
	l := Link{Subscriber: s.id, Layer: -1, Budget: s.budget.Load(), Target: s.target.Load(),
		Loss: float64(s.lossPPM.Load()) / 1e6, VideoPaused: s.cong.videoPaused.Load()}
	s.bweMu.Lock()
	l.Estimating = s.gate.estimator() != nil
	s.bweMu.Unlock()
	for _, t := range s.videoTracks() {
		if !t.layered() {
			continue
		}
		ls := t.fwd.grp.layers()
		l.Layer, l.Layers = max(0, slices.Index(ls, t.cur.Load())), len(ls)
		break
	}
	return l
}
