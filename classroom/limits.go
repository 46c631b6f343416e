package classroom

import (
	"encoding/hex"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/token"
)

// Budgets: what one token may make the edge hold or write, so that one
// client (or a leaked token) cannot exhaust a class for everyone else.
// Each refusal has its own error code and is counted in
// campusedge_live_limit_refusals_total{limit=…}.
const (
	// MaxConnsPerToken bounds the control connections one token holds at
	// once (a classroom page and a reconnect overlap: a few are normal).
	MaxConnsPerToken = 8
	// MaxWHEPPerToken bounds the WHEP viewers one token holds at once;
	// observer and cascade tokens are shared by design (an audience, every
	// receiving school) and get MaxWHEPPerSharedToken.
	MaxWHEPPerToken       = 8
	MaxWHEPPerSharedToken = 256
	// MaxCascadePublishersPerSession bounds the other schools' classrooms
	// sent back up a cascade into one session.
	MaxCascadePublishersPerSession = 16
	// MaxRecordsPerTokenMinute bounds the durable records (session log,
	// attendance joins and leaves) one token writes per minute; beyond it
	// the change still happens but is not logged.
	MaxRecordsPerTokenMinute = 120
)

// Limit names, the label of campusedge_live_limit_refusals_total.
const (
	limitConns            = "conns_per_token"
	limitWHEP             = "whep_per_token"
	limitCascadePublisher = "cascade_publishers_per_session"
	limitRecords          = "records_per_token_minute"
)

// tokenKey names a token in the budgets and as a resource's owner without
// keeping the token itself.
func tokenKey(tok string) string {
	h := token.Hash(tok)
	return hex.EncodeToString(h[:12])
}

// budgets counts what each token holds and writes.
type budgets struct {
	refusals *prometheus.CounterVec

	mu      sync.Mutex
	conns   map[string]int
	wheps   map[string]int
	minute  int64          // the records window (Unix minute)
	records map[string]int // this minute's records by token; cleared each minute
}

func newBudgets() *budgets {
	return &budgets{conns: map[string]int{}, wheps: map[string]int{}, records: map[string]int{},
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "campusedge_live_limit_refusals_total",
			Help: "Requests refused (or records not logged) by a live-class budget, by limit."}, []string{"limit"})}
}

// acquire takes one of limit places of key in m; release gives it back.
func (b *budgets) acquire(m map[string]int, name, key string, limit int) (release func(), ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m[key] >= limit {
		b.refusals.WithLabelValues(name).Inc()
		return nil, false
	}
	m[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			if m[key]--; m[key] <= 0 {
				delete(m, key)
			}
			b.mu.Unlock()
		})
	}, true
}

// conn takes a control-connection place for the token.
func (b *budgets) conn(key string) (func(), bool) {
	return b.acquire(b.conns, limitConns, key, MaxConnsPerToken)
}

// whep takes a WHEP-viewer place for the token of role.
func (b *budgets) whep(key string, role session.Role) (func(), bool) {
	limit := MaxWHEPPerToken
	if role == session.RoleObserver || role == session.RoleCascade {
		limit = MaxWHEPPerSharedToken
	}
	return b.acquire(b.wheps, limitWHEP, key, limit)
}

// record says whether the token may write one more durable record this
// minute, and counts it.
func (b *budgets) record(key string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m := now.Unix() / 60; m != b.minute {
		b.minute, b.records = m, map[string]int{}
	}
	if b.records[key] >= MaxRecordsPerTokenMinute {
		b.refusals.WithLabelValues(limitRecords).Inc()
		return false
	}
	b.records[key]++
	return true
}

// refuseBudget answers an HTTP request refused by a budget.
func refuseBudget(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Retry-After", "10")
	httpapi.WriteError(w, http.StatusTooManyRequests, code, msg)
}
