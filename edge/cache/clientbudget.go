package cache

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/campusedge/campusedge/edge/httpapi"
)

// A LAN client's reads of items that are not cached cost WAN bandwidth
// the whole school shares, so each client address gets a budget: at most
// MaxUncachedReadsPerClient distinct such items streaming at once, and at
// most MaxUncachedStartsPerClient distinct ones per UncachedWindow. Many
// reads of one item share its one download and count once; cached items
// are never limited.
const (
	MaxUncachedReadsPerClient  = 4
	MaxUncachedStartsPerClient = 30
	UncachedWindow             = time.Hour
)

// CodeUncachedBudget is the refusal of a read over the client's budget.
const CodeUncachedBudget = "uncached_budget"

type clientBudget struct {
	mu      sync.Mutex
	open    map[string]map[string]int // uncached reads streaming now: address → item → readers
	window  time.Time                 // start of the current starts window
	started map[string]map[string]bool
}

func newClientBudget() *clientBudget {
	return &clientBudget{open: map[string]map[string]int{}, started: map[string]map[string]bool{}}
}

// take admits an uncached read of id by the request's client, or answers
// it with the refusal (ok false). A re-read of an item the client already
// started in this window (a player's next Range) costs no new start.
func (b *clientBudget) take(w http.ResponseWriter, r *http.Request, id string, now time.Time) (release func(), ok bool) {
	addr, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		addr = r.RemoteAddr
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.window) >= UncachedWindow {
		b.window, b.started = now, map[string]map[string]bool{} // bounded: cleared every window
	}
	ids := b.started[addr]
	switch {
	case b.open[addr][id] == 0 && len(b.open[addr]) >= MaxUncachedReadsPerClient:
		refuseUncached(w, "this device already streams "+strconv.Itoa(MaxUncachedReadsPerClient)+" resources that are not cached yet; wait for one to finish")
		return nil, false
	case !ids[id] && len(ids) >= MaxUncachedStartsPerClient:
		refuseUncached(w, "this device asked for "+strconv.Itoa(MaxUncachedStartsPerClient)+" resources that were not cached within the hour; ask the admin to pin what the class needs")
		return nil, false
	}
	if ids == nil {
		ids = map[string]bool{}
		b.started[addr] = ids
	}
	ids[id] = true
	if b.open[addr] == nil {
		b.open[addr] = map[string]int{}
	}
	b.open[addr][id]++
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			if b.open[addr][id]--; b.open[addr][id] <= 0 {
				delete(b.open[addr], id)
				if len(b.open[addr]) == 0 {
					delete(b.open, addr)
				}
			}
			b.mu.Unlock()
		})
	}, true
}

func refuseUncached(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", "60")
	httpapi.WriteError(w, http.StatusTooManyRequests, CodeUncachedBudget, msg)
}
