package cache

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/campusedge/campusedge/edge/media"
)

// prefetcher fetches what the policy wants before it is asked for, a few
// at a time, backing off from items that keep failing.
type prefetcher struct {
	policy      *policy
	state       func(media.Item) (State, int64)
	ensure      func(context.Context, media.Item) error
	log         *slog.Logger
	interval    time.Duration
	concurrency int

	kick chan struct{} // wakes the loop

	mu          sync.Mutex
	retries     map[string]retryState
	prefetching map[string]bool
}

func newPrefetcher(p *policy, state func(media.Item) (State, int64), ensure func(context.Context, media.Item) error, log *slog.Logger, interval time.Duration, concurrency int) *prefetcher {
	return &prefetcher{policy: p, state: state, ensure: ensure, log: log, interval: interval, concurrency: concurrency,
		kick: make(chan struct{}, 1), retries: map[string]retryState{}, prefetching: map[string]bool{}}
}

// nextRetry is when the prefetcher tries a failed item again.
func (c *prefetcher) nextRetry(id string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rs, ok := c.retries[id]
	return rs.next, ok
}

// Kick asks the prefetcher to look at the policy now.
func (c *prefetcher) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// retryState is the prefetcher's backoff for one item.
type retryState struct {
	failures int
	next     time.Time
}

// prefetchLoop fetches what the policy wants, PrefetchConcurrency at a
// time, retrying failures with exponential backoff (30 s to 1 h).
func (c *prefetcher) prefetchLoop(ctx context.Context) {
	sem := make(chan struct{}, c.concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		if n, err := c.policy.prunePast(time.Now().Add(-pastKeep)); err != nil {
			c.log.Error("prefetch: prune past timetable entries", "err", err)
		} else if n > 0 {
			c.log.Info("pruned past timetable entries", "entries", n)
		}
		want, err := c.policy.wanted(time.Now())
		if err != nil {
			c.log.Error("prefetch: read policy", "err", err)
		}
		var missing int
		for _, w := range want {
			if st, _ := c.state(w.Item); st == Cached {
				continue
			}
			missing++
			c.mu.Lock()
			rs := c.retries[w.Item.ID]
			busy := c.prefetching[w.Item.ID]
			c.mu.Unlock()
			if busy || time.Now().Before(rs.next) {
				continue
			}
			select {
			case sem <- struct{}{}:
			default:
				continue // all slots busy; the next round picks it up
			}
			c.mu.Lock()
			c.prefetching[w.Item.ID] = true
			c.mu.Unlock()
			wg.Add(1)
			go func(it media.Item, reasons []string) {
				defer wg.Done()
				defer func() { <-sem }()
				c.log.Info("prefetch started", "id", it.ID, "bytes", it.Size, "reasons", reasons)
				err := c.ensure(ctx, it)
				c.mu.Lock()
				delete(c.prefetching, it.ID)
				if err != nil && ctx.Err() == nil {
					rs := c.retries[it.ID]
					rs.failures++
					wait := min(30*time.Second<<min(rs.failures-1, 7), time.Hour)
					rs.next = time.Now().Add(wait)
					c.retries[it.ID] = rs
					c.mu.Unlock()
					c.log.Warn("prefetch failed; will retry", "id", it.ID, "err", err, "retry_in", wait)
				} else {
					delete(c.retries, it.ID)
					c.mu.Unlock()
				}
				c.Kick()
			}(w.Item, w.Reasons)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}
