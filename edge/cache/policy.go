package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
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

// policy is what the school wants kept: pins and timetable entries in the
// store, and the list of items they make wanted now.
type policy struct {
	db      *bolt.DB
	horizon time.Duration
	quota   int64
	log     *slog.Logger
	item    func(id string) (media.Item, bool, error)
	// capacity is what the cache could hold on its disk at most (its blobs
	// plus the free space above the store's reserve): a pin beyond it can
	// never be fetched, quota or not.
	capacity func() (int64, error)
	// changed hears that pins or the timetable grew (the prefetcher looks).
	changed func()
}

// PutTimetable stores (replacing by id) timetable entries; it is the hook
// the sync engine feeds. Resources not (yet) in the catalogue are kept and
// fetched once the catalogue names them.
func (c *policy) PutTimetable(entries []TimetableEntry) error {
	for _, e := range entries {
		if err := e.Validate(); err != nil {
			return err
		}
	}
	err := c.db.Update(func(tx *bolt.Tx) error {
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
		c.changed()
	}
	return err
}

// DeleteTimetable removes an entry; it reports whether it existed.
func (c *policy) DeleteTimetable(id string) (bool, error) {
	return c.remove(BucketTimetable, id)
}

// Timetable lists the stored entries by start time.
func (c *policy) Timetable() ([]TimetableEntry, error) {
	out := []TimetableEntry{}
	err := c.db.View(func(tx *bolt.Tx) error {
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
func (c *policy) SetPin(id, by string) (Pin, error) {
	it, ok, err := c.item(id)
	if err != nil {
		return Pin{}, err
	}
	if !ok {
		return Pin{}, fmt.Errorf("%w: %s (is the catalogue synced?)", ErrUnknownItem, id)
	}
	limit, what := c.quota, "the %d-byte quota; unpin something or raise -cache-quota"
	if c.capacity != nil {
		if capa, err := c.capacity(); err == nil && (limit == 0 || capa < limit) {
			limit, what = capa, "the %d bytes the disk can hold for the cache (free space above the store's reserve, plus what is cached); unpin something or free disk space"
		}
	}
	if limit > 0 {
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
		if total > limit {
			return Pin{}, fmt.Errorf("%w: pinning %s (%d bytes) would make pinned and timetabled items %d bytes, over "+what, ErrPinOverQuota, id, it.Size, total, limit)
		}
	}
	p := Pin{ID: id, By: by, At: time.Now().UTC()}
	err = c.db.Update(func(tx *bolt.Tx) error {
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
	c.changed()
	return p, nil
}

// Unpin removes a pin; it reports whether there was one.
func (c *policy) Unpin(id string) (bool, error) {
	return c.remove(BucketPins, id)
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
func (c *policy) wanted(now time.Time) ([]Want, error) {
	by := map[string]*Want{}
	var order []string
	err := c.db.View(func(tx *bolt.Tx) error {
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
			if e.Start.Before(now.Add(-time.Hour)) || e.Start.After(now.Add(c.horizon)) {
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
func (c *policy) prunePast(cutoff time.Time) (int, error) {
	var old [][]byte
	err := c.db.View(func(tx *bolt.Tx) error { // no write (and fsync) when nothing is old
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
	err = c.db.Update(func(tx *bolt.Tx) error {
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

// remove deletes id from bucket; it reports whether it was there.
func (c *policy) remove(bucket []byte, id string) (bool, error) {
	var found bool
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		found = b.Get([]byte(id)) != nil
		return b.Delete([]byte(id))
	})
	return found, err
}
