package api

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/edge/httpapi"
)

// Pairing attempts per address. A device that sends wrong codes is slowed
// down on its own: after PairFreeTries wrong codes each further try from
// its address waits twice as long as the one before (1 s, 2 s, 4 s … up to
// PairMaxBackoff), while the right code from any other device still
// pairs. (The edge-wide lock-out after five wrong codes, which a single
// device could trigger to stop every pairing, is gone; fleet keeps an
// edge-wide cap of fleet.MaxPairingFailures wrong codes per issued code
// against a device that changes its address for each guess.)
const (
	PairFreeTries  = 3
	PairMaxBackoff = 10 * time.Minute
	// pairForget: an address with no wrong try for this long starts afresh.
	pairForget = time.Hour
	// maxPairAddrs bounds the addresses remembered (oldest forgotten first).
	maxPairAddrs = 4096
)

// CodePairingBackoff is the error of a try made during its address's back-off.
const CodePairingBackoff = "pairing_backoff"

type pairBackoff struct {
	now     func() time.Time
	refused prometheus.Counter

	mu    sync.Mutex
	addrs map[string]*pairTries
}

type pairTries struct {
	wrong int
	last  time.Time // last wrong try
	until time.Time // no try before
}

func newPairBackoff(now func() time.Time) *pairBackoff {
	return &pairBackoff{now: now, addrs: map[string]*pairTries{},
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "campusedge_pairing_backoff_refusals_total",
			Help: "Pairing tries refused because their address is backing off after wrong codes."})}
}

// allow answers a try from addr that comes too early itself (false).
func (b *pairBackoff) allow(w http.ResponseWriter, addr string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.addrs[addr]
	now := b.now()
	if t == nil || !now.Before(t.until) {
		return true
	}
	b.refused.Inc()
	wait := t.until.Sub(now)
	w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
	httpapi.WriteError(w, http.StatusTooManyRequests, CodePairingBackoff,
		"this device sent "+strconv.Itoa(t.wrong)+" wrong pairing codes; try again in "+wait.Round(time.Second).String()+" with the 6 digits on the admin console")
	return false
}

// wrong counts a wrong code from addr and starts or lengthens its back-off.
func (b *pairBackoff) wrong(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	t := b.addrs[addr]
	if t != nil && now.Sub(t.last) > pairForget {
		t = nil
	}
	if t == nil {
		b.makeRoomLocked(now)
		t = &pairTries{}
		b.addrs[addr] = t
	}
	t.wrong++
	t.last = now
	if n := t.wrong - PairFreeTries; n >= 0 {
		t.until = now.Add(min(time.Second<<min(n, 20), PairMaxBackoff))
	}
}

// paired forgets addr's wrong tries.
func (b *pairBackoff) paired(addr string) {
	b.mu.Lock()
	delete(b.addrs, addr)
	b.mu.Unlock()
}

// makeRoomLocked keeps the map under maxPairAddrs: stale entries go, then
// the oldest.
func (b *pairBackoff) makeRoomLocked(now time.Time) {
	if len(b.addrs) < maxPairAddrs {
		return
	}
	oldest, at := "", now
	for a, t := range b.addrs {
		if now.Sub(t.last) > pairForget && now.After(t.until) {
			delete(b.addrs, a)
			continue
		}
		if t.last.Before(at) {
			oldest, at = a, t.last
		}
	}
	if len(b.addrs) >= maxPairAddrs {
		delete(b.addrs, oldest)
	}
}
