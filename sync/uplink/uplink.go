// Package uplink is the edge's sync client for cityhub: it enrols the edge
// once with a one-time token, then sends the outbox in signed, compressed,
// bounded batches in sequence order and drops what the hub acknowledged,
// and pulls roster and timetable changes since its cursor. It never holds
// a bbolt transaction across network I/O: it reads a batch, sends it, and
// only then writes the ack.
package uplink

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/time/rate"

	"github.com/campusedge/campusedge/edge/buildinfo"
	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/sync/outbox"
	"github.com/campusedge/campusedge/sync/wire"
)

var (
	// BucketState holds the enrolment and the downlink cursor.
	BucketState = []byte("sync_state")
	// BucketDocs holds the latest roster and timetable from the hub.
	BucketDocs  = []byte("sync_docs")
	keyEnrol    = []byte("enrolment")
	keyCursor   = []byte("downlink_cursor")
	errNotEnrol = errors.New("this edge is not enrolled with the city; run: edged enrol -data DIR -cloud URL -token TOKEN")
)

// Migrate creates the uplink's buckets (an edge store migration).
func Migrate(tx *bolt.Tx) error {
	for _, b := range [][]byte{BucketState, BucketDocs} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	return nil
}

// Enrolment is what the edge remembers of its enrolment.
type Enrolment struct {
	Hub      string    `json:"hub"`
	Edge     string    `json:"edge"`
	School   string    `json:"school"`
	Name     string    `json:"school_name"`
	Enrolled time.Time `json:"enrolled"`
	// HubPin is the pin (certs.SPKIPin) of the hub's TLS key from the
	// enrolment token; HubClient accepts an https:// hub only with it.
	HubPin string `json:"hub_pin,omitempty"`
	// HubTrust says how an https:// hub is trusted: TrustPin (HubPin) or
	// TrustCA (chain and host name, for a token without a pin); empty
	// for an http:// hub.
	HubTrust string `json:"hub_trust,omitempty"`
}

// How an enrolment trusts an https:// hub (Enrolment.HubTrust).
const (
	TrustPin = "pin"
	TrustCA  = "ca"
)

// LoadEnrolment reads the enrolment; ok is false when the edge has none.
func LoadEnrolment(db *bolt.DB) (e Enrolment, ok bool, err error) {
	err = db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(BucketState).Get(keyEnrol)
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &e)
	})
	return e, ok, err
}

// Enrol presents the one-time token with the edge's key and stores the
// school the hub assigned. The token is SECRET~PIN as cityhub enrol-token
// prints it: over https:// the hub must present the key PIN names (checked
// in the TLS handshake, before the token leaves the edge; client is then
// not used), and the pin is stored with the enrolment for HubClient. A
// token without a pin enrols an https:// hub by CA instead: its chain must
// lead to the system's roots or to cloudCA (edged -cloud-ca, PEM; nil for
// none) and name the hub's host, again before the secret is sent, and
// HubClient then verifies every connection the same way. Over http://
// client is used (nil: a default one) and nothing authenticates the hub.
func Enrol(ctx context.Context, db *bolt.DB, client *http.Client, hub, token string, id Identity, cloudCA []byte) (Enrolment, error) {
	// Only the secret goes to the hub; the pin is this edge's to check.
	token, pin, err := wire.ParseEnrolToken(token)
	if err != nil {
		return Enrolment{}, fmt.Errorf("enrol: %w", err)
	}
	hu, err := url.Parse(hub)
	if err != nil {
		return Enrolment{}, fmt.Errorf("enrol: hub URL %q: %w", hub, err)
	}
	trust := ""
	switch {
	case hu.Scheme == "https" && pin == "":
		client, trust = caClient(cloudCA), TrustCA
	case hu.Scheme == "https":
		client, trust = tokenClient(pin), TrustPin
	case client == nil:
		client = &http.Client{Timeout: 30 * time.Second}
	}
	pub := base64.StdEncoding.EncodeToString(id.Public())
	req := wire.EnrolRequest{Token: token, EdgeID: id.EdgeID(), PublicKey: pub,
		Proof: base64.StdEncoding.EncodeToString(id.Sign(wire.EnrolProofString(token, id.EdgeID(), pub)))}
	body, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(hub, "/")+"/api/v1/sync/enrol", bytes.NewReader(body))
	if err != nil {
		return Enrolment{}, fmt.Errorf("enrol: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hr)
	if err != nil {
		if pm := (*PinMismatchError)(nil); errors.As(err, &pm) {
			pm.Hub = hub // no SNI (so no name) when the hub is reached by address
			return Enrolment{}, fmt.Errorf("enrol: %w", pm)
		}
		if ue := (*certs.UntrustedError)(nil); errors.As(err, &ue) {
			return Enrolment{}, fmt.Errorf("enrol with the hub at %s: %w", hub, ue)
		}
		return Enrolment{}, fmt.Errorf("enrol: cannot reach the hub at %s: %w", hub, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return Enrolment{}, fmt.Errorf("enrol refused by the hub (%s): %s", resp.Status, apiMessage(raw))
	}
	var er wire.EnrolResponse
	if err := json.Unmarshal(raw, &er); err != nil || er.Edge != id.EdgeID() || !wire.ValidSchool(er.School) {
		return Enrolment{}, fmt.Errorf("enrol: the hub's answer is not an enrolment of this edge: %.200s", raw)
	}
	e := Enrolment{Hub: hub, Edge: er.Edge, School: er.School, Name: er.Name, Enrolled: time.Now().UTC(), HubPin: pin, HubTrust: trust}
	v, _ := json.Marshal(e)
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(BucketState).Put(keyEnrol, v) }); err != nil {
		return Enrolment{}, fmt.Errorf("enrol: save enrolment: %w", err)
	}
	return e, nil
}

func apiMessage(raw []byte) string {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Error.Code != "" {
		return e.Error.Code + ": " + e.Error.Message
	}
	return fmt.Sprintf("%.200s", raw)
}

// Identity is what the uplink needs of the edge identity.
type Identity interface {
	wire.Signer
	Public() []byte
}

// Config wires the uplink.
type Config struct {
	Hub      string // -cloud; empty: offline
	DB       *bolt.DB
	Outbox   *outbox.Outbox
	Identity Identity
	// Client talks to the hub; default HubClient(DB, CloudCA), which trusts
	// an https:// hub by the key pinned at enrolment, or by CA.
	Client *http.Client
	// CloudCA is extra roots (PEM, edged -cloud-ca) for an https:// hub
	// trusted by CA: for the default Client and for enrolment.
	CloudCA []byte
	Logger  *slog.Logger
	// Certs, when set, gets the edge's TLS certificate signed by the city
	// CA whenever it says one is due (see CertSigner); nil: never asks.
	Certs      CertSigner
	MaxRecords int // per batch, default 4000
	MaxBytes   int // payload bytes per batch, default 1 MiB
	// InFlight caps how many batches may be on the way at once (default
	// 16, and what wire.MaxAhead allows); within it the window is sized in
	// bytes from the measured bandwidth-delay product (see SendOnce).
	InFlight   int
	RateBytes  int           // optional cap on upload bytes per second
	MinBackoff time.Duration // default 500 ms
	MaxBackoff time.Duration // default 60 s
	PullEvery  time.Duration // downlink poll, default 60 s
	// Apply is called in the downlink transaction for every change, so a
	// capability (timetable-driven prefetch, say) updates with it atomically.
	Apply func(tx *bolt.Tx, kind string, data []byte) error
	// OnNoSpace (may be nil) hears that an append failed for lack of disk
	// space (the disk watcher reports "full" at once).
	OnNoSpace func()
}

// Status is the sync state shown by GET /api/v1/sync.
type Status struct {
	Link          string    `json:"link"` // offline, not_enrolled, connecting, up, down, refused
	Hub           string    `json:"hub,omitempty"`
	School        string    `json:"school,omitempty"`
	Backlog       uint64    `json:"backlog"`
	OldestAt      time.Time `json:"oldest_at,omitzero"`
	OldestAgeSecs float64   `json:"oldest_age_seconds"`
	LastSeq       uint64    `json:"last_seq"`
	AckedSeq      uint64    `json:"acked_seq"`
	LastSuccess   time.Time `json:"last_success,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	ClockOffsetMS int64     `json:"clock_offset_ms"`
	DownCursor    uint64    `json:"downlink_cursor"`
	SentRecords   uint64    `json:"sent_records"`
	SentBytes     uint64    `json:"sent_bytes"`
}

// Uplink runs the sync loop.
type Uplink struct {
	cfg Config
	log *slog.Logger
	lim *rate.Limiter

	offset atomic.Int64 // hub clock minus edge clock, ms
	path   pathEstimate
	// multiplexed: the hub's last answer came over HTTP/2, so batches
	// share one connection (and its congestion window).
	multiplexed atomic.Bool
	// headAlone: the last SendOnce failed, so the next starts with the
	// backlog's first batch alone and opens the window only once it is
	// answered. Like TCP after a loss: a failing link is not handed a
	// window of batches that all fail again, and a fault that recurs with
	// the window's shape (every connection carrying the first batch cut)
	// cannot hold the backlog's head back for ever.
	headAlone atomic.Bool
	// restartEvery: see restartEvery; tests shorten it.
	restartEvery time.Duration
	certs        certState // used by the Run goroutine only
	mu           sync.Mutex
	st           Status
	wake         chan struct{}
}

// New makes an Uplink; Run starts it.
func New(cfg Config) *Uplink {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Client == nil {
		cfg.Client = HubClient(cfg.DB, cfg.CloudCA)
	}
	if cfg.MaxRecords <= 0 || cfg.MaxRecords > wire.MaxBatchRecords {
		cfg.MaxRecords = 4000
	}
	if cfg.MaxBytes <= 0 || cfg.MaxBytes > wire.MaxBatchRawBytes/2 {
		cfg.MaxBytes = 1 << 20
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 16
	}
	// The hub accepts at most wire.MaxAhead records beyond its contiguous
	// prefix; a window must fit.
	cfg.InFlight = max(1, min(cfg.InFlight, wire.MaxAhead/cfg.MaxRecords))
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 60 * time.Second
	}
	if cfg.PullEvery <= 0 {
		cfg.PullEvery = 60 * time.Second
	}
	u := &Uplink{cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1), restartEvery: restartEvery}
	// An https:// hub speaks HTTP/2 (cityhub offers it), so the first
	// batches already go in order on one connection (see batchGate); the
	// first answer says for sure. Should it be HTTP/1.1 after all, the
	// first window's bodies still go one after another, each on its own
	// connection (the hub client does not cap connections per host; a
	// client that allowed one would hold a later batch's connection
	// waiting for an earlier body until requestTimeout).
	u.multiplexed.Store(strings.HasPrefix(cfg.Hub, "https://"))
	if cfg.RateBytes > 0 {
		u.lim = rate.NewLimiter(rate.Limit(cfg.RateBytes), max(cfg.RateBytes, 4<<10))
	}
	u.st.Link, u.st.Hub = "offline", cfg.Hub
	if cfg.Hub != "" {
		u.st.Link = "connecting"
	}
	return u
}

// Status returns the current sync state, with the backlog read fresh.
func (u *Uplink) Status() (Status, error) {
	u.mu.Lock()
	s := u.st
	u.mu.Unlock()
	ob, err := u.cfg.Outbox.Stats()
	if err != nil {
		return s, err
	}
	s.Backlog, s.LastSeq, s.AckedSeq, s.OldestAt = ob.Backlog, ob.LastSeq, ob.AckedSeq, ob.Oldest
	if !ob.Oldest.IsZero() {
		s.OldestAgeSecs = max(0, u.cfg.Outbox.Now().Sub(ob.Oldest).Seconds())
	}
	s.ClockOffsetMS = u.offset.Load()
	_ = u.cfg.DB.View(func(tx *bolt.Tx) error {
		s.DownCursor = getU64(tx.Bucket(BucketState).Get(keyCursor))
		return nil
	})
	return s, nil
}

// Wake makes the loop try now (after an enrolment, say).
func (u *Uplink) Wake() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

func (u *Uplink) setLink(link string, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.st.Link = link
	if err != nil {
		u.st.LastError = err.Error()
	} else {
		u.st.LastError = ""
		u.st.LastSuccess = time.Now().UTC()
	}
}

// refusedError is a hub answer that retrying will not fix without an
// operator (revoked, unknown edge, sequence gap); the loop still retries,
// slowly, so a fix on the hub side is picked up.
type refusedError struct {
	msg   string
	cause error // when one is worth matching (errors.As)
}

func (e *refusedError) Error() string { return e.msg }
func (e *refusedError) Unwrap() error { return e.cause }

// Run syncs until ctx ends. Without a hub it only waits.
func (u *Uplink) Run(ctx context.Context) {
	if u.cfg.Hub == "" {
		u.log.Info("no city cloud configured (-cloud): running offline; records stay in the outbox until one is set and the edge is enrolled")
		return
	}
	backoff := time.Duration(0)
	var nextPull time.Time
	for {
		err := u.cycle(ctx, &nextPull)
		if ctx.Err() != nil {
			return
		}
		var wait time.Duration
		var refused *refusedError
		switch {
		case errors.Is(err, errNotEnrol):
			u.setLink("not_enrolled", err)
			backoff, wait = 0, 30*time.Second
		case errors.As(err, &refused):
			u.setLink("refused", err)
			u.log.Error("hub refuses this edge's sync; an operator must act", "hub", u.cfg.Hub, "err", err)
			backoff, wait = 0, u.cfg.MaxBackoff
		case err != nil:
			u.setLink("down", err)
			backoff = min(max(2*backoff, u.cfg.MinBackoff), u.cfg.MaxBackoff)
			// Full jitter: many edges cut by one WAN outage do not come back in step.
			wait = time.Duration(rand.Int64N(int64(backoff)) + 1)
			u.log.Warn("sync failed; will retry", "hub", u.cfg.Hub, "err", err, "retry_in", wait.Round(time.Millisecond))
		default:
			backoff = 0
			wait = time.Until(nextPull)
		}
		var down *unreachableError
		if !u.wait(ctx, wait, err != nil, errors.As(err, &down)) {
			return
		}
	}
}

// probeEvery is how often, while the loop backs off after the hub was
// unreachable, a cheap GET /healthz asks whether it is back: the backlog
// then leaves within about a second of the link returning instead of
// waiting out the rest of the backoff (up to a minute). Bounded: at most
// one probe per probeEvery, each within probeTimeout, only during a
// backoff.
const (
	probeEvery   = 500 * time.Millisecond
	probeTimeout = time.Second
)

// wait sleeps d, or less: an enrolment (Wake) ends it; a new record ends
// it unless the last cycle failed (new records wait out the backoff); a
// successful probe ends it when the hub was unreachable. It returns false
// when ctx ended.
func (u *Uplink) wait(ctx context.Context, d time.Duration, failed, probe bool) bool {
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	changed := u.cfg.Outbox.Changed()
	if failed {
		changed = nil // the signal stays pending for the next wait
	}
	var tick <-chan time.Time
	if probe {
		tk := time.NewTicker(probeEvery)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-u.wake:
			return true
		case <-changed:
			return true
		case <-tick:
			if u.reachable(ctx) {
				u.log.Info("hub reachable again; sending now", "hub", u.cfg.Hub)
				return true
			}
		}
	}
}

// reachable is the probe: does the hub answer GET /healthz with 200?
func (u *Uplink) reachable(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(u.cfg.Hub, "/")+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := u.cfg.Client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// unreachableError is a request that got no answer from the hub at all
// (connection refused or cut, timeout): the case a probe can end early.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// cycle sends the whole backlog and pulls changes when due.
func (u *Uplink) cycle(ctx context.Context, nextPull *time.Time) error {
	enr, ok, err := LoadEnrolment(u.cfg.DB)
	if err != nil {
		return err
	}
	if !ok {
		return errNotEnrol
	}
	u.mu.Lock()
	u.st.School = enr.School
	u.mu.Unlock()
	// A long backlog (a day offline) reports progress in the log every 10 s
	// (SendOnce) and once when it is all sent; GET /api/v1/sync has it live.
	sent, began := 0, time.Now()
	for {
		n, err := u.SendOnce(ctx, enr)
		if err != nil {
			if sent > 0 {
				u.log.Info("sync interrupted", "sent", sent, "err", err)
			}
			return err
		}
		if n == 0 {
			break
		}
		sent += n
	}
	if sent > 0 && (sent >= 1000 || time.Since(began) > 10*time.Second) {
		u.log.Info("backlog sent to the city", "records", sent, "took", time.Since(began).Round(time.Millisecond))
	}
	if time.Now().After(*nextPull) {
		if err := u.PullOnce(ctx); err != nil {
			return err
		}
		*nextPull = time.Now().Add(u.cfg.PullEvery)
	}
	u.setLink("up", nil)
	u.maybeCityCert(ctx)
	return nil
}

// SendOnce sends batches from the first unacknowledged record through a
// sliding window sized from the path: the bytes on the way (sent or being
// sent, not yet answered) are kept near what the link delivers in a
// round trip — its delivery rate and the shortest ack latency, both
// measured from the hub's answers (see pathEstimate) — plus the batch
// being written, so the link never idles waiting for an answer and the
// queue at the bottleneck is not filled by batches that only wait there.
// When the hub answers over HTTP/2 (one connection for all batches),
// batch bodies enter it strictly one after another (each waits until the
// previous one has been handed to TCP, see batchGate), so the batches
// cross the link in sequence order and are answered in it, instead of
// sharing the link and finishing together. Batches may still reach the hub out of
// order (a retransmission); the hub keeps those ahead of a gap (up to
// wire.MaxAhead records) and acknowledges only a contiguous prefix, so the
// edge never drops a record the hub does not hold. It logs progress every
// 10 s, stops launching after sendSpan (so the caller pulls the downlink
// even while records keep coming), collects what is in flight, and returns
// how many records the hub took (0: nothing to send).
func (u *Uplink) SendOnce(ctx context.Context, enr Enrolment) (int, error) {
	st, err := u.cfg.Outbox.Stats()
	if err != nil {
		return 0, err
	}
	if st.Backlog > uint64(u.cfg.MaxRecords) {
		// A backlog of more than a batch: a connection to the hub is
		// opened (if none is) while the first batch is read and
		// compressed, which takes 30 ms on an idle edge and hundreds on
		// a busy one; the batches then find it open or half-way there.
		warm := make(chan struct{})
		go func() {
			defer close(warm)
			u.reachable(ctx)
		}()
		defer func() { <-warm }()
	}
	type result struct {
		ack   uint64
		n     int
		bytes int
		gate  *batchGate
		err   error
	}
	results := make(chan result, u.cfg.InFlight)
	acked, next := st.AckedSeq, st.AckedSeq // next: the last seq launched
	began := time.Now()
	lastLog := began
	u.path.start(began)
	inflight, inBytes, sent := 0, 0, 0
	var prev *batchGate // the batch launched last: the next body waits for it
	conns := &connClock{span: u.restartEvery, cc: socketCC{}}
	clockCtx, stopClock := context.WithCancel(ctx)
	clockDone := make(chan struct{})
	go func() {
		defer close(clockDone)
		conns.run(clockCtx, func(n int) { u.log.Debug("congestion control restarted", "connections", n) })
	}()
	defer func() { stopClock(); <-clockDone }()
	var errs []error
	var prep <-chan preparedBatch // the next batch, being read and encoded
	defer func() {
		if prep != nil {
			<-prep // its goroutine reads the outbox: not past SendOnce
		}
	}()
	drops := u.startAcker() // drops acknowledged records meanwhile
	for {
		if err := drops.failed(); err != nil && len(errs) == 0 {
			errs = append(errs, err)
		}
		for len(errs) == 0 && inflight < u.cfg.InFlight && time.Since(began) < sendSpan {
			// The hub refuses a batch starting beyond its contiguous
			// prefix + MaxAhead; acked is what it has said so far.
			if next+uint64(u.cfg.MaxRecords) > acked+wire.MaxAhead {
				break
			}
			// The window: never fewer than minBatchesOut (one on the wire,
			// the next behind it, more while answers are unmeasured).
			if inflight >= minBatchesOut && inBytes >= u.path.window() {
				break
			}
			if inflight > 0 && u.headAlone.Load() {
				break
			}
			if prep == nil {
				prep = u.prepare(enr, next)
			}
			p := <-prep
			prep = nil
			if p.err != nil {
				errs = append(errs, p.err)
				break
			}
			if len(p.recs) == 0 {
				break // asked again next time: records may come meanwhile
			}
			recs, body := p.recs, p.body
			next = recs[len(recs)-1].Seq
			// The batch after this one is read and compressed while
			// this one goes: on a busy edge that takes hundreds of
			// milliseconds, which the link would otherwise spend idle
			// once the window opens.
			prep = u.prepare(enr, next)
			// Over HTTP/1.1 each batch has a connection of its own, whose
			// congestion window a gate would leave idle while another
			// recovers from a loss: there the batches share the link.
			var after *batchGate
			mux := u.multiplexed.Load()
			if mux {
				after = prev
			}
			gate := newBatchGate(after)
			if mux {
				gate.conns = conns
			}
			prev = gate
			inflight++
			inBytes += len(body)
			u.log.Debug("batch launched", "first", recs[0].Seq, "n", len(recs), "bytes", len(body), "inflight", inflight, "in_bytes", inBytes, "window", u.path.window(), "acked", acked)
			go func() {
				ack, err := u.sendBatch(ctx, enr, recs, body, gate)
				results <- result{ack, len(recs), len(body), gate, err}
			}()
		}
		if inflight == 0 {
			break
		}
		r := <-results
		inflight--
		inBytes -= r.bytes
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		u.path.answered(r.bytes, r.gate.written(), time.Now())
		u.headAlone.Store(false)
		sent += r.n
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			if st, err := u.cfg.Outbox.Stats(); err == nil {
				u.log.Info("sending backlog to the city", "sent", sent, "remaining", st.Backlog, "elapsed", time.Since(began).Round(time.Second))
			}
		}
		if r.ack > acked {
			acked = r.ack
			drops.to(acked)
		}
	}
	if err := drops.finish(); err != nil && len(errs) == 0 {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		u.headAlone.Store(true)
		return 0, err
	}
	if acked < next {
		u.headAlone.Store(true)
		return 0, fmt.Errorf("hub acknowledged only up to %d of batches ending at %d", acked, next)
	}
	return sent, nil
}

// preparedBatch is a batch read from the outbox and encoded; no records
// and no error: nothing to send.
type preparedBatch struct {
	recs []wire.Record
	body []byte
	err  error
}

// prepare reads and encodes, in its own goroutine, the batch after seq.
func (u *Uplink) prepare(enr Enrolment, seq uint64) <-chan preparedBatch {
	ch := make(chan preparedBatch, 1)
	go func() {
		recs, err := u.cfg.Outbox.Pending(seq, u.cfg.MaxRecords, u.cfg.MaxBytes)
		if err != nil || len(recs) == 0 {
			ch <- preparedBatch{err: err}
			return
		}
		body, err := u.encodeBatch(enr, recs)
		ch <- preparedBatch{recs: recs, body: body, err: err}
	}()
	return ch
}

// acker drops acknowledged records from the outbox in its own goroutine:
// a drop is a bbolt commit (two fdatasyncs), which on a busy disk takes
// tens to hundreds of milliseconds, and while SendOnce waited for it no
// batch was launched and the link went idle. Acks arriving meanwhile are
// merged into one drop up to the latest. Records are still dropped only
// up to what the hub acknowledged; SendOnce returns after the last drop.
type acker struct {
	ob     *outbox.Outbox
	mu     sync.Mutex
	want   uint64 // the latest ack to write
	err    error  // the first drop that failed
	signal chan struct{}
	stop   chan struct{}
	done   chan struct{}
}

func (u *Uplink) startAcker() *acker {
	a := &acker{ob: u.cfg.Outbox, signal: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *acker) run() {
	defer close(a.done)
	var wrote uint64
	for {
		stopping := false
		select {
		case <-a.signal:
		case <-a.stop:
			stopping = true
		}
		a.mu.Lock()
		want, failed := a.want, a.err != nil
		a.mu.Unlock()
		if want > wrote && !failed {
			if _, err := a.ob.Ack(want); err != nil {
				a.mu.Lock()
				a.err = &refusedError{msg: err.Error()}
				a.mu.Unlock()
			} else {
				wrote = want
			}
		}
		if stopping {
			a.mu.Lock()
			want, failed = a.want, a.err != nil
			a.mu.Unlock()
			if want <= wrote || failed {
				return
			}
		}
	}
}

// to asks for the records up to seq to be dropped.
func (a *acker) to(seq uint64) {
	a.mu.Lock()
	a.want = max(a.want, seq)
	a.mu.Unlock()
	select {
	case a.signal <- struct{}{}:
	default:
	}
}

// failed is the first drop's error, if one failed.
func (a *acker) failed() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// finish waits until everything asked for is dropped (or a drop failed).
func (a *acker) finish() error {
	close(a.stop)
	<-a.done
	return a.failed()
}

// minBatchesOut is the fewest batches the window keeps going.
const minBatchesOut = 4

// sendSpan is how long one SendOnce keeps launching batches. Its end
// drains the window (the link idles for an answer's round trip), so it is
// long next to that.
const sendSpan = time.Minute

// encodeBatch is the compressed body of a batch of recs.
func (u *Uplink) encodeBatch(enr Enrolment, recs []wire.Record) ([]byte, error) {
	for i := range recs {
		recs[i].School = enr.School
	}
	return wire.EncodeBatch(&wire.Batch{Edge: enr.Edge, School: enr.School, Records: recs})
}

// sendBatch sends one encoded batch, its body entering the connection
// when gate allows, and returns the hub's ack.
func (u *Uplink) sendBatch(ctx context.Context, enr Enrolment, recs []wire.Record, body []byte, gate *batchGate) (uint64, error) {
	// The cap is paid before sending: a batch leaves once the bucket has
	// its size, so the average stays at RateBytes (bursts up to a second's worth).
	for left := len(body); u.lim != nil && left > 0; {
		n := min(left, u.lim.Burst())
		if err := u.lim.WaitN(ctx, n); err != nil {
			gate.release()
			return 0, err
		}
		left -= n
	}
	raw, nonce, err := u.doSigned(ctx, http.MethodPost, "/api/v1/sync/batch", "application/vnd.campusedge.batch+gzip", body, gate)
	if err != nil {
		return 0, err
	}
	var ack wire.Ack
	if err := json.Unmarshal(raw, &ack); err != nil {
		return 0, fmt.Errorf("hub's ack is not JSON: %w", err)
	}
	// Records are dropped only on an answer to this very request.
	if ack.Edge != enr.Edge || ack.Nonce != nonce {
		return 0, fmt.Errorf("the hub's ack (edge %q, nonce %q) does not answer this batch (edge %q, nonce %q); nothing is dropped", ack.Edge, ack.Nonce, enr.Edge, nonce)
	}
	u.mu.Lock()
	u.st.SentRecords += uint64(len(recs))
	u.st.SentBytes += uint64(len(body))
	u.mu.Unlock()
	u.log.Debug("batch sent", "first", recs[0].Seq, "n", len(recs), "bytes", len(body), "acked", ack.Acked, "dups", ack.Dups)
	return ack.Acked, nil
}

// do sends a signed request, correcting the edge clock by the hub's once
// if the hub says it is off.
func (u *Uplink) do(ctx context.Context, method, pathQuery string, body []byte) ([]byte, error) {
	return u.doType(ctx, method, pathQuery, "application/vnd.campusedge.batch+gzip", body)
}

// requestTimeout bounds one signed sync request, answer included.
const requestTimeout = 2 * time.Minute

// doType is do with the body's content type.
func (u *Uplink) doType(ctx context.Context, method, pathQuery, contentType string, body []byte) ([]byte, error) {
	raw, _, err := u.doSigned(ctx, method, pathQuery, contentType, body, nil)
	return raw, err
}

// doSigned is doType that also returns the nonce of the signed request
// the answer is for. With a gate, the body enters the connection when the
// gate opens (see batchGate); gate is released whatever happens.
func (u *Uplink) doSigned(ctx context.Context, method, pathQuery, contentType string, body []byte, gate *batchGate) ([]byte, string, error) {
	defer gate.release()
	for attempt := 0; ; attempt++ {
		// The hub client has no overall timeout (downloads share it); one
		// sync request, body included, gets requestTimeout.
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		if gate != nil && gate.conns != nil {
			rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
				// Connections are told apart by identity (a *tls.Conn);
				// one of a type == would panic on is not tracked.
				if i.Conn == nil || !reflect.TypeOf(i.Conn).Comparable() {
					return
				}
				gate.conns.got(i.Conn, time.Now())
			}})
		}
		req, err := http.NewRequestWithContext(rctx, method, strings.TrimRight(u.cfg.Hub, "/")+pathQuery, bytes.NewReader(body))
		if err != nil {
			cancel()
			return nil, "", err
		}
		if gate != nil && attempt == 0 {
			// Same length, same bytes: only when they are read changes.
			req.Body = gate.body(rctx, body)
		}
		if body != nil {
			req.Header.Set("Content-Type", contentType)
		}
		req.Header.Set(wire.HeaderVersion, buildinfo.Version) // for the city console
		// Likewise the outbox backlog, for the city's view of who is behind.
		if ob, err := u.cfg.Outbox.Stats(); err == nil {
			bl := wire.Backlog{Records: ob.Backlog}
			if ob.Backlog > 0 && !ob.Oldest.IsZero() {
				bl.Oldest = max(0, u.cfg.Outbox.Now().Sub(ob.Oldest))
			}
			req.Header.Set(wire.HeaderBacklog, bl.String())
		}
		now := u.cfg.Outbox.Now().Add(time.Duration(u.offset.Load()) * time.Millisecond)
		if err := wire.Sign(req, u.cfg.Identity, now, body); err != nil {
			cancel()
			return nil, "", err
		}
		sent := u.cfg.Outbox.Now()
		resp, err := u.cfg.Client.Do(req)
		if err != nil {
			cancel()
			if pm := (*PinMismatchError)(nil); errors.As(err, &pm) {
				pm.Hub = u.cfg.Hub
				return nil, "", &refusedError{msg: pm.Error()}
			}
			if errors.Is(err, errNoPin) {
				return nil, "", &refusedError{msg: errNoPin.Error()}
			}
			// A certificate refused by CA trust needs an operator too.
			if ue := (*certs.UntrustedError)(nil); errors.As(err, &ue) {
				return nil, "", &refusedError{msg: ue.Error(), cause: ue}
			}
			return nil, "", &unreachableError{fmt.Errorf("hub %s unreachable: %w", u.cfg.Hub, err)}
		}
		raw, rerr := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		resp.Body.Close()
		cancel()
		u.multiplexed.Store(resp.ProtoMajor == 2)
		if ht, err := strconv.ParseInt(resp.Header.Get(wire.HeaderHubTime), 10, 64); err == nil {
			// Midpoint of the round trip: good to well under MaxSkew.
			mid := sent.Add(u.cfg.Outbox.Now().Sub(sent) / 2)
			off := ht - mid.UnixMilli()
			if old := u.offset.Swap(off); absDiff(old, off) > 60_000 {
				u.log.Warn("edge clock differs from the hub's; signing with the hub's time", "offset", time.Duration(off)*time.Millisecond)
			}
		}
		if rerr != nil {
			return nil, "", fmt.Errorf("reading hub answer: %w", rerr)
		}
		if resp.StatusCode == http.StatusOK {
			return raw, req.Header.Get(wire.HeaderNonce), nil
		}
		msg := apiMessage(raw)
		if resp.StatusCode == http.StatusUnauthorized && strings.HasPrefix(msg, "clock_skew") && attempt == 0 {
			continue // offset updated from this answer
		}
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusConflict, http.StatusBadRequest:
			return nil, "", &refusedError{msg: fmt.Sprintf("hub refused %s %s (%s): %s", method, pathQuery, resp.Status, msg)}
		}
		return nil, "", fmt.Errorf("hub answered %s: %s", resp.Status, msg)
	}
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}

// changesResponse mirrors hub.ChangesResponse (the edge does not import hub).
type changesResponse struct {
	Changes []struct {
		Seq  uint64          `json:"seq"`
		Kind string          `json:"kind"`
		Data json.RawMessage `json:"data"`
	} `json:"changes"`
	Next uint64 `json:"next"`
	More bool   `json:"more"`
}

// PullOnce fetches downlink changes since the cursor, page by page; each
// page and its cursor are written in one transaction, and a change at or
// below the cursor is skipped, so a cut or a repeat changes nothing.
func (u *Uplink) PullOnce(ctx context.Context) error {
	for range 1000 {
		var cursor uint64
		if err := u.cfg.DB.View(func(tx *bolt.Tx) error {
			cursor = getU64(tx.Bucket(BucketState).Get(keyCursor))
			return nil
		}); err != nil {
			return err
		}
		raw, err := u.do(ctx, http.MethodGet, "/api/v1/sync/changes?since="+strconv.FormatUint(cursor, 10), nil)
		if err != nil {
			return err
		}
		var page changesResponse
		if err := json.Unmarshal(raw, &page); err != nil {
			return fmt.Errorf("downlink page is not JSON: %w", err)
		}
		for _, c := range page.Changes {
			if err := ValidateDoc(c.Kind, c.Data); err != nil {
				return &refusedError{msg: fmt.Sprintf("downlink change %d (%s) is invalid, not applied: %v", c.Seq, c.Kind, err)}
			}
		}
		applied := 0
		err = u.cfg.DB.Update(func(tx *bolt.Tx) error {
			st, docs := tx.Bucket(BucketState), tx.Bucket(BucketDocs)
			cur := getU64(st.Get(keyCursor))
			for _, c := range page.Changes {
				if c.Seq <= cur {
					continue
				}
				if err := docs.Put([]byte(c.Kind), c.Data); err != nil {
					return err
				}
				if u.cfg.Apply != nil {
					if err := u.cfg.Apply(tx, c.Kind, c.Data); err != nil {
						return err
					}
				}
				cur = c.Seq
				applied++
			}
			return st.Put(keyCursor, be64(cur))
		})
		if err != nil {
			return fmt.Errorf("apply downlink: %w", err)
		}
		if applied > 0 {
			u.log.Info("downlink applied", "changes", applied, "next", page.Next)
		}
		if !page.More {
			return nil
		}
	}
	return errors.New("downlink: more than 1000 pages in one pull")
}

func be64(v uint64) []byte {
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}
