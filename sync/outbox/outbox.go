// Package outbox is the edge's durable queue of records for the city: every
// record the edge creates (attendance, quiz answer, resource progress,
// session log) is appended here in the same bbolt transaction as the record
// itself, numbered with a per-edge sequence and given a stable id. The
// uplink reads it in sequence order and drops what the hub acknowledged.
//
// Two ways in:
//
//   - AppendTx(tx, kind, payload) inside the caller's own write transaction,
//     so the record and its outbox entry commit or vanish together;
//   - Outbox.Append / Outbox.Update for callers without a transaction: calls
//     from many goroutines are group-committed (one bbolt commit and fsync for
//     all calls waiting at that moment), and a call returns only after the
//     commit, so a returned append survives a power cut.
//
// A consumer package names only what it uses, e.g.
//
//	type outbox interface { AppendTx(tx *bolt.Tx, kind string, payload []byte) (wire.Record, error) }
//
// and swapping a local "pending uploads" bucket for the outbox is then the one
// line ob.AppendTx(tx, "attendance.mark", body) next to the record's Put.
package outbox

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/sync/wire"
)

var (
	// BucketRecords maps seq (8 bytes big-endian) to the stored record.
	BucketRecords = []byte("sync_outbox")
	// BucketMeta holds the last assigned and the last acknowledged seq.
	BucketMeta = []byte("sync_outbox_meta")
	keyLast    = []byte("last_seq")
	keyAcked   = []byte("acked_seq")
)

// ErrClosed is returned by appends after Close.
var ErrClosed = errors.New("outbox closed")

// ErrInvalid wraps a record refused for what it is (kind, payload): sending
// it again will not help. Every other append error is the store's (a full
// disk, say) and worth retrying.
var ErrInvalid = errors.New("invalid record")

// Migrate creates the outbox buckets (an edge store migration).
func Migrate(tx *bolt.Tx) error {
	for _, b := range [][]byte{BucketRecords, BucketMeta} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	return nil
}

// stored is a record at rest (the seq is the key).
type stored struct {
	ID      string          `json:"id"`
	Kind    string          `json:"kind"`
	At      int64           `json:"at"`
	Payload json.RawMessage `json:"p"`
}

// Clock returns the edge's wall time; tests set it hours wrong.
type Clock func() time.Time

// AppendTx appends one record inside tx (a write transaction) and returns it
// with its sequence number and id. It is durable when tx commits.
func AppendTx(tx *bolt.Tx, kind string, payload []byte, now time.Time) (wire.Record, error) {
	rec := wire.Record{Kind: kind, At: now.UnixMilli(), Payload: json.RawMessage(payload)}
	meta, recs := tx.Bucket(BucketMeta), tx.Bucket(BucketRecords)
	if meta == nil || recs == nil {
		return rec, errors.New("outbox buckets missing (store not migrated)")
	}
	rec.Seq = getU64(meta.Get(keyLast)) + 1
	id, err := newID()
	if err != nil {
		return rec, err
	}
	rec.ID = id
	if err := rec.Validate(); err != nil {
		return rec, fmt.Errorf("outbox append: %w: %w", ErrInvalid, err)
	}
	v, err := json.Marshal(stored{ID: rec.ID, Kind: rec.Kind, At: rec.At, Payload: rec.Payload})
	if err != nil {
		return rec, fmt.Errorf("outbox append: %w", err)
	}
	if err := recs.Put(u64(rec.Seq), v); err != nil {
		return rec, fmt.Errorf("outbox append: %w", err)
	}
	if err := meta.Put(keyLast, u64(rec.Seq)); err != nil {
		return rec, fmt.Errorf("outbox append: %w", err)
	}
	return rec, nil
}

// prepared is a record made ready outside the writer: everything but its
// sequence number, which only the commit can give.
type prepared struct {
	rec wire.Record // Seq 0
	val []byte      // the stored form
}

// prepare does AppendTx's work that does not need the transaction: the
// id, the checks, the stored form. An error means AppendTx would refuse
// the record too.
func prepare(kind string, payload []byte, now time.Time) (prepared, error) {
	rec := wire.Record{Kind: kind, At: now.UnixMilli(), Payload: json.RawMessage(payload)}
	id, err := newID()
	if err != nil {
		return prepared{}, err
	}
	rec.ID = id
	check := rec
	check.Seq = 1 // any: only the seq is not known yet
	if err := check.Validate(); err != nil {
		return prepared{}, err
	}
	v, err := json.Marshal(stored{ID: rec.ID, Kind: rec.Kind, At: rec.At, Payload: rec.Payload})
	if err != nil {
		return prepared{}, err
	}
	return prepared{rec: rec, val: v}, nil
}

// put stores p under the next sequence number in tx.
func (p prepared) put(tx *bolt.Tx) (wire.Record, error) {
	rec := p.rec
	meta, recs := tx.Bucket(BucketMeta), tx.Bucket(BucketRecords)
	if meta == nil || recs == nil {
		return rec, errors.New("outbox buckets missing (store not migrated)")
	}
	rec.Seq = getU64(meta.Get(keyLast)) + 1
	if err := recs.Put(u64(rec.Seq), p.val); err != nil {
		return rec, fmt.Errorf("outbox append: %w", err)
	}
	if err := meta.Put(keyLast, u64(rec.Seq)); err != nil {
		return rec, fmt.Errorf("outbox append: %w", err)
	}
	return rec, nil
}

// newID is a 128-bit random id, base32 lower case (26 characters).
func newID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("record id: %w", err)
	}
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)), nil
}

// Config sets up an Outbox.
type Config struct {
	DB    *bolt.DB
	Clock Clock // default time.Now
	// MaxGroup bounds how many calls share one commit (default 1024).
	MaxGroup int
	// Preallocate is how many bytes past bbolt's high-water mark the
	// writer keeps written with zeros (default 4 MiB; negative: off). A
	// growing bbolt file is extended sparsely (ftruncate), so every commit
	// into a hole allocates blocks and its fdatasync must also commit the
	// file system's journal; a commit into blocks already written only
	// flushes its pages.
	Preallocate int64
	// Linger is the most a group waits for the writers the last commit
	// answered to come back (default 2 ms, and never more than a quarter
	// of the last commit's time; negative: never waits).
	Linger time.Duration
}

// Outbox owns the group-committing writer over the store's outbox buckets.
type Outbox struct {
	db       *bolt.DB
	clock    Clock
	maxGroup int
	reqs     chan *request
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	// changed has one slot: a send after a commit wakes the uplink.
	changed chan struct{}

	commits  atomic.Uint64
	appended atomic.Uint64

	linger time.Duration // Config.Linger

	// Used by the writer goroutine only.
	ahead  int64    // Config.Preallocate
	zeroed int64    // the file is written up to here (0: not yet known)
	file   *os.File // edge.db opened for the zeros, lazily
}

type request struct {
	fn  func(tx *bolt.Tx) error
	err chan error
}

// New starts the outbox writer; Close stops it.
func New(cfg Config) *Outbox {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.MaxGroup <= 0 {
		cfg.MaxGroup = 1024
	}
	if cfg.Preallocate == 0 {
		cfg.Preallocate = 4 << 20
	}
	if cfg.Linger == 0 {
		cfg.Linger = 2 * time.Millisecond
	}
	o := &Outbox{db: cfg.DB, clock: cfg.Clock, maxGroup: cfg.MaxGroup, ahead: cfg.Preallocate, linger: cfg.Linger, reqs: make(chan *request),
		stop: make(chan struct{}), done: make(chan struct{}), changed: make(chan struct{}, 1)}
	go o.run()
	return o
}

// Close stops the writer after the calls already queued.
func (o *Outbox) Close() error {
	o.once.Do(func() { close(o.stop) })
	<-o.done
	return nil
}

// Changed is signalled (non-blocking, coalesced) after every commit that
// appended records, and after Ack.
func (o *Outbox) Changed() <-chan struct{} { return o.changed }

// Now is the edge clock the outbox stamps records with.
func (o *Outbox) Now() time.Time { return o.clock() }

// AppendTx appends inside the caller's write transaction, stamped with the
// outbox clock. The caller's commit makes it durable; call Notify after
// the commit to wake the uplink (it polls anyway).
func (o *Outbox) AppendTx(tx *bolt.Tx, kind string, payload []byte) (wire.Record, error) {
	return AppendTx(tx, kind, payload, o.clock())
}

// Notify wakes the uplink after a commit made outside the outbox writer.
func (o *Outbox) Notify() {
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

// Append appends one record through the group-committing writer and
// returns once it is durably committed. The record is made ready (id,
// checks, encoding) in the caller's goroutine, so the writer's own work
// between two commits is only the puts: with many writers it is the one
// thing they all wait for.
func (o *Outbox) Append(ctx context.Context, kind string, payload []byte) (wire.Record, error) {
	p, perr := prepare(kind, payload, o.clock())
	var rec wire.Record
	err := o.Update(ctx, func(tx *bolt.Tx) error {
		var err error
		if perr != nil {
			// Refused: AppendTx says why, with the seq it would have had.
			rec, err = o.AppendTx(tx, kind, payload)
			return err
		}
		rec, err = p.put(tx)
		return err
	})
	return rec, err
}

// Update runs fn in a write transaction shared with other concurrent calls
// and returns after that transaction is committed (fsynced). fn must only
// touch the database: if another call in the same group fails, the group is
// rolled back and fn runs again in the next one. ctx bounds the wait for a
// place in a group; once queued, Update waits for the commit, because a
// caller must know whether its record is durable.
func (o *Outbox) Update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	r := &request{fn: fn, err: make(chan error, 1)}
	select {
	case o.reqs <- r:
	case <-o.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-r.err
}

func (o *Outbox) run() {
	defer close(o.done)
	defer func() {
		if o.file != nil {
			_ = o.file.Close()
		}
	}()
	group := make([]*request, 0, o.maxGroup)
	var lastSize int
	var lastTook time.Duration
	for {
		var first *request
		select {
		case first = <-o.reqs:
		case <-o.stop:
			return
		}
		group = append(group[:0], first)
		// Take everyone already waiting: that is the group.
		o.take(&group)
		// The writers the last commit answered are on their way back with
		// their next record; with many writers, half of them would miss
		// this group by microseconds and the commits would alternate
		// between two half-full groups, each paying the full fsyncs. Give
		// them a few scheduler turns, at most a quarter of the last commit's
		// time. A lone writer (last group of one) commits at once: no
		// latency is added when the outbox is idle.
		if lastSize > 1 && len(group) < o.maxGroup && o.linger > 0 {
			o.gather(&group, lastSize, min(lastTook/4, o.linger))
		}
		t0 := time.Now()
		o.commit(group)
		lastSize, lastTook = len(group), time.Since(t0)
	}
}

// take adds every request already waiting to group, up to maxGroup, and
// says how many it took.
func (o *Outbox) take(group *[]*request) int {
	n := 0
	for len(*group) < o.maxGroup {
		select {
		case r := <-o.reqs:
			*group = append(*group, r)
			n++
		default:
			return n
		}
	}
	return n
}

// gather yields the processor so that writers just answered can queue
// again, and takes them, until the group holds want (the last group's
// size: those writers and the ones that waited through that commit), or
// two turns in a row bring nobody, or d has passed.
func (o *Outbox) gather(group *[]*request, want int, d time.Duration) {
	deadline := time.Now().Add(d)
	for idle := 0; idle < 2 && len(*group) < want && len(*group) < o.maxGroup && time.Now().Before(deadline); {
		runtime.Gosched()
		if o.take(group) == 0 {
			idle++
		} else {
			idle = 0
		}
	}
}

// commit runs the group in one transaction; a failing fn is answered with
// its error and the rest are retried without it.
func (o *Outbox) commit(group []*request) {
	for len(group) > 0 {
		failed := -1
		var ferr error
		err := o.db.Update(func(tx *bolt.Tx) error {
			o.preallocate(tx)
			for i, r := range group {
				if err := r.fn(tx); err != nil {
					failed, ferr = i, err
					return err
				}
			}
			return nil
		})
		if failed >= 0 {
			group[failed].err <- ferr
			group = append(group[:failed], group[failed+1:]...)
			continue
		}
		if err == nil {
			o.commits.Add(1)
			o.appended.Add(uint64(len(group)))
			o.Notify()
		}
		for _, r := range group {
			r.err <- err
		}
		return
	}
}

// preallocate writes zeros past the high-water mark of tx's file when
// less than half of Config.Preallocate is left there. It runs inside a
// write transaction, so no commit moves the mark meanwhile: the zeros land
// only on pages no one uses, and the pages this commit allocates there are
// written after them. The commit's own fdatasync makes them durable. It is
// an optimisation: a failure (a full disk) is left for bbolt to meet.
func (o *Outbox) preallocate(tx *bolt.Tx) {
	if o.ahead <= 0 {
		return
	}
	mark := tx.Size()
	if mark+o.ahead/2 <= o.zeroed {
		return
	}
	if o.file == nil {
		f, err := os.OpenFile(o.db.Path(), os.O_WRONLY, 0)
		if err != nil {
			o.ahead = 0
			return
		}
		o.file = f
	}
	const chunk = 256 << 10
	zeros := make([]byte, chunk)
	from, to := max(mark, o.zeroed), mark+o.ahead
	for off := from; off < to; off += chunk {
		if _, err := o.file.WriteAt(zeros[:min(chunk, to-off)], off); err != nil {
			break
		}
	}
	o.zeroed = to // after a failure too: retried once the mark has moved on
}

// Commits is how many group commits (fsyncs) the writer made.
func (o *Outbox) Commits() uint64 { return o.commits.Load() }

// Pending returns unacknowledged records in sequence order, at most
// maxRecords and (except for a single oversized first record) at most
// maxBytes of payload, starting after seq after.
func (o *Outbox) Pending(after uint64, maxRecords, maxBytes int) ([]wire.Record, error) {
	var out []wire.Record
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(BucketRecords).Cursor()
		size := 0
		for k, v := c.Seek(u64(after + 1)); k != nil && len(out) < maxRecords; k, v = c.Next() {
			var s stored
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("outbox record %d is damaged: %w", getU64(k), err)
			}
			size += len(s.Payload) + len(s.ID) + len(s.Kind) + 40
			if len(out) > 0 && size > maxBytes {
				break
			}
			out = append(out, wire.Record{Seq: getU64(k), ID: s.ID, Kind: s.Kind, At: s.At,
				Payload: append(json.RawMessage(nil), s.Payload...)})
		}
		return nil
	})
	return out, err
}

// Ack drops every record up to and including seq. An ack beyond the last
// appended seq means the hub is confused (or hostile): it is refused.
func (o *Outbox) Ack(seq uint64) (dropped int, err error) {
	err = o.db.Update(func(tx *bolt.Tx) error {
		meta, recs := tx.Bucket(BucketMeta), tx.Bucket(BucketRecords)
		last, acked := getU64(meta.Get(keyLast)), getU64(meta.Get(keyAcked))
		if seq > last {
			return fmt.Errorf("hub acknowledged seq %d but this edge has only appended up to %d; is the edge pointed at the right hub, or was its store restored from a backup?", seq, last)
		}
		if seq <= acked {
			return nil
		}
		c := recs.Cursor()
		for k, _ := c.First(); k != nil && getU64(k) <= seq; k, _ = c.First() {
			if err := recs.Delete(k); err != nil {
				return err
			}
			dropped++
		}
		return meta.Put(keyAcked, u64(seq))
	})
	if err != nil {
		return 0, fmt.Errorf("outbox ack: %w", err)
	}
	return dropped, nil
}

// Stats is the backlog as the API, metrics and console show it.
type Stats struct {
	LastSeq  uint64    `json:"last_seq"`
	AckedSeq uint64    `json:"acked_seq"`
	Backlog  uint64    `json:"backlog"`
	Oldest   time.Time `json:"oldest_at,omitzero"` // edge clock of the oldest unacked record
}

// Stats reads the backlog.
func (o *Outbox) Stats() (Stats, error) {
	var s Stats
	err := o.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(BucketMeta)
		s.LastSeq, s.AckedSeq = getU64(meta.Get(keyLast)), getU64(meta.Get(keyAcked))
		s.Backlog = s.LastSeq - s.AckedSeq
		if _, v := tx.Bucket(BucketRecords).Cursor().First(); v != nil {
			var st stored
			if err := json.Unmarshal(v, &st); err == nil {
				s.Oldest = time.UnixMilli(st.At)
			}
		}
		return nil
	})
	return s, err
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
