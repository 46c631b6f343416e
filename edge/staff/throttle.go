package staff

import (
	"sync"
	"time"
)

// throttle slows down guessing: after free failures from one key (an
// account, or an address) every further try must wait a delay that
// doubles with each failure, up to max. A try during the wait is answered
// "slow down" without the password being checked, so guessing speed is
// bounded however fast requests come. Nothing is ever locked for good,
// and one address or account being slowed leaves every other one alone.
// Failures are forgotten forget after the last one.
type throttle struct {
	free   int
	base   time.Duration
	max    time.Duration
	forget time.Duration
	limit  int // entries kept; beyond it the stalest go

	mu sync.Mutex
	m  map[string]*tries
}

type tries struct {
	n    int
	last time.Time
}

func newThrottle(free int, max time.Duration) *throttle {
	return &throttle{free: free, base: time.Second, max: max, forget: 15 * time.Minute, limit: 10_000, m: map[string]*tries{}}
}

// wait returns how long key must still wait before its next try (0: go).
func (t *throttle) wait(key string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[key]
	if e == nil {
		return 0
	}
	if now.Sub(e.last) > t.forget {
		delete(t.m, key)
		return 0
	}
	if e.n < t.free {
		return 0
	}
	d := t.base << min(e.n-t.free, 20)
	if d > t.max || d <= 0 {
		d = t.max
	}
	if left := e.last.Add(d).Sub(now); left > 0 {
		return left
	}
	return 0
}

// fail counts a wrong try by key.
func (t *throttle) fail(key string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[key]
	if e == nil {
		if len(t.m) >= t.limit {
			t.evict(now)
		}
		e = &tries{}
		t.m[key] = e
	}
	e.n++
	e.last = now
}

// reset forgets key's failures (a good sign-in on the account).
func (t *throttle) reset(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, key)
}

// evict drops forgotten entries and, if still full, the stalest one. It
// runs only when the map is full, so its O(n) scan is rare.
func (t *throttle) evict(now time.Time) {
	var oldest string
	var at time.Time
	for k, e := range t.m {
		if now.Sub(e.last) > t.forget {
			delete(t.m, k)
			continue
		}
		if oldest == "" || e.last.Before(at) {
			oldest, at = k, e.last
		}
	}
	if len(t.m) >= t.limit && oldest != "" {
		delete(t.m, oldest)
	}
}
