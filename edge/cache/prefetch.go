package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/media"
)

// Pin keeps an item cached: it is prefetched and never evicted.
type Pin struct {
	ID string `json:"id"`
	// By says who pinned it ("admin", or a teacher's name).
	By string    `json:"by,omitempty"`
	At time.Time `json:"at"`
}

// TimetableEntry is a lesson that needs resources at a time: the
// prefetcher fetches them ahead when Start is within the horizon. Until
// sync delivers timetables, the admin API sets entries; sync will call
// PutTimetable with the same type.
type TimetableEntry struct {
	ID        string    `json:"id"`
	Classroom string    `json:"classroom,omitempty"`
	Start     time.Time `json:"start"`
	Resources []string  `json:"resources"`
}

// Limits on timetable entries (they come from the API and from sync).
const (
	maxEntryResources = 64
	maxTimetable      = 20000
	maxPins           = 20000
)

// Validate checks an entry from the API or from sync.
func (e TimetableEntry) Validate() error {
	if !media.ValidID(e.ID) {
		return fmt.Errorf("timetable entry id %q: want 1-64 of [a-z0-9._-]", e.ID)
	}
	if len(e.Classroom) > media.MaxFieldLen {
		return fmt.Errorf("timetable entry %s: classroom longer than %d bytes", e.ID, media.MaxFieldLen)
	}
	if e.Start.IsZero() {
		return fmt.Errorf("timetable entry %s: start time missing", e.ID)
	}
	if len(e.Resources) == 0 || len(e.Resources) > maxEntryResources {
		return fmt.Errorf("timetable entry %s: want 1-%d resource ids", e.ID, maxEntryResources)
	}
	for _, r := range e.Resources {
		if !media.ValidID(r) {
			return fmt.Errorf("timetable entry %s: resource id %q is not a catalogue id", e.ID, r)
		}
	}
	return nil
}

// PutTimetable stores (replacing by id) timetable entries; it is the hook
// the sync engine feeds. Resources not (yet) in the catalogue are kept and
// fetched once the catalogue names them.
func (c *Cache) PutTimetable(entries []TimetableEntry) error {
	for _, e := range entries {
		if err := e.Validate(); err != nil {
			return err
		}
	}
	err := c.cfg.DB.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketTimetable)
		if b.Stats().KeyN+len(entries) > maxTimetable {
			return fmt.Errorf("the timetable holds at most %d entries; delete past ones", maxTimetable)
		}
		for _, e := range entries {
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(e.ID), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		c.Kick()
	}
	return err
}

// DeleteTimetable removes an entry; it reports whether it existed.
func (c *Cache) DeleteTimetable(id string) (bool, error) {
	var found bool
	err := c.cfg.DB.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketTimetable)
		found = b.Get([]byte(id)) != nil
		return b.Delete([]byte(id))
	})
	return found, err
}

// Timetable lists the stored entries by start time.
func (c *Cache) Timetable() ([]TimetableEntry, error) {
	out := []TimetableEntry{}
	err := c.cfg.DB.View(func(tx *bolt.Tx) error {
		return tx.Bucket(BucketTimetable).ForEach(func(k, v []byte) error {
			var e TimetableEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("timetable entry %s: %w", k, err)
			}
			out = append(out, e)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out, err
}

// ErrUnknownItem means the id is not in the catalogue.
var ErrUnknownItem = errors.New("not in the catalogue")

// SetPin pins id. It fails with ErrPinOverQuota when the pinned items
// together would not fit the quota.
func (c *Cache) SetPin(id, by string) (Pin, error) {
	it, ok, err := c.item(id)
	if err != nil {
		return Pin{}, err
	}
	if !ok {
		return Pin{}, fmt.Errorf("%w: %s (is the catalogue synced?)", ErrUnknownItem, id)
	}
	if c.cfg.Quota > 0 {
		want, err := c.wanted(time.Now())
		if err != nil {
			return Pin{}, err
		}
		sums := map[string]int64{it.SHA256: it.Size}
		for _, w := range want {
			sums[w.Item.SHA256] = w.Item.Size
		}
		var total int64
		for _, n := range sums {
			total += n
		}
		if total > c.cfg.Quota {
			return Pin{}, fmt.Errorf("%w: pinning %s (%d bytes) would make pinned and timetabled items %d bytes, over the %d-byte quota; unpin something or raise -cache-quota", ErrPinOverQuota, id, it.Size, total, c.cfg.Quota)
		}
	}
	p := Pin{ID: id, By: by, At: time.Now().UTC()}
	err = c.cfg.DB.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketPins)
		if b.Get([]byte(id)) == nil && b.Stats().KeyN >= maxPins {
			return fmt.Errorf("at most %d pins", maxPins)
		}
		v, err := json.Marshal(p)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), v)
	})
	if err != nil {
		return Pin{}, err
	}
	c.log.Info("resource pinned", "id", id, "by", by)
	c.Kick()
	return p, nil
}

// Unpin removes a pin; it reports whether there was one.
func (c *Cache) Unpin(id string) (bool, error) {
	var found bool
	err := c.cfg.DB.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketPins)
		found = b.Get([]byte(id)) != nil
		return b.Delete([]byte(id))
	})
	return found, err
}

// Want is an item the prefetch policy wants cached, and why.
type Want struct {
	Item    media.Item
	Reasons []string
	// Need is the earliest timetable start (zero for pins only).
	Need time.Time
}

// wanted evaluates the policy at now: pinned items, and items named by
// timetable entries starting in [now-1h, now+horizon]. Ids not in the
// catalogue are skipped. Earliest need first, pins last.
func (c *Cache) wanted(now time.Time) ([]Want, error) {
	by := map[string]*Want{}
	var order []string
	err := c.cfg.DB.View(func(tx *bolt.Tx) error {
		items := tx.Bucket(BucketItems)
		add := func(id, reason string, need time.Time) error {
			w := by[id]
			if w == nil {
				v := items.Get([]byte(id))
				if v == nil {
					return nil
				}
				w = &Want{}
				if err := json.Unmarshal(v, &w.Item); err != nil {
					return err
				}
				by[id] = w
				order = append(order, id)
			}
			w.Reasons = append(w.Reasons, reason)
			if !need.IsZero() && (w.Need.IsZero() || need.Before(w.Need)) {
				w.Need = need
			}
			return nil
		}
		if err := tx.Bucket(BucketPins).ForEach(func(k, _ []byte) error { return add(string(k), "pinned", time.Time{}) }); err != nil {
			return err
		}
		return tx.Bucket(BucketTimetable).ForEach(func(k, v []byte) error {
			var e TimetableEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if e.Start.Before(now.Add(-time.Hour)) || e.Start.After(now.Add(c.cfg.PrefetchHorizon)) {
				return nil
			}
			for _, r := range e.Resources {
				if err := add(r, "timetable:"+e.ID, e.Start); err != nil {
					return err
				}
			}
			return nil
		})
	})
	out := make([]Want, 0, len(order))
	for _, id := range order {
		out = append(out, *by[id])
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Need, out[j].Need
		if a.IsZero() != b.IsZero() {
			return !a.IsZero()
		}
		return a.Before(b)
	})
	return out, err
}

// pastKeep is how long a timetable entry is kept after its start.
const pastKeep = 7 * 24 * time.Hour

// prunePast deletes timetable entries that started before cutoff, so the
// bucket holds the coming weeks, not the school's whole history.
func (c *Cache) prunePast(cutoff time.Time) (int, error) {
	var old [][]byte
	err := c.cfg.DB.View(func(tx *bolt.Tx) error { // no write (and fsync) when nothing is old
		return tx.Bucket(BucketTimetable).ForEach(func(k, v []byte) error {
			var e TimetableEntry
			if err := json.Unmarshal(v, &e); err != nil || e.Start.Before(cutoff) {
				old = append(old, append([]byte(nil), k...))
			}
			return nil
		})
	})
	if err != nil || len(old) == 0 {
		return 0, err
	}
	err = c.cfg.DB.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketTimetable)
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	return len(old), err
}

// Kick asks the prefetcher to look at the policy now.
func (c *Cache) Kick() {
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
func (c *Cache) prefetchLoop(ctx context.Context) {
	sem := make(chan struct{}, c.cfg.PrefetchConcurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(c.cfg.PrefetchInterval)
	defer t.Stop()
	for {
		if n, err := c.prunePast(time.Now().Add(-pastKeep)); err != nil {
			c.log.Error("prefetch: prune past timetable entries", "err", err)
		} else if n > 0 {
			c.log.Info("pruned past timetable entries", "entries", n)
		}
		want, err := c.wanted(time.Now())
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
				err := c.Ensure(ctx, it)
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
