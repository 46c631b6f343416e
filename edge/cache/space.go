package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrPinOverQuota means the pinned items together would not fit the quota.
var ErrPinOverQuota = errors.New("pinned items would exceed the cache quota")

// space keeps the cache within its quota and the disk's free space: it
// reserves room for each download before a byte is fetched, evicts the
// least recently used blobs nobody is reading and the policy does not
// protect, and reports usage.
type space struct {
	layout
	quota     int64
	log       *slog.Logger
	evictions prometheus.Counter
	// protected lists the blob sums eviction must leave alone (pinned,
	// timetabled, waiting for upload); the facade combines the policy and
	// the upload queue.
	protected func() (map[string]bool, error)
	// removed hears of every blob eviction removed (open handles kept for
	// serving are closed, so the space really comes back).
	removed func(sum string)

	mu       sync.Mutex
	readers  map[string]int   // blob sum -> open readers
	reserved map[string]int64 // id -> bytes reserved by a download in flight
}

func newSpace(l layout, quota int64, log *slog.Logger, evictions prometheus.Counter, protected func() (map[string]bool, error)) *space {
	return &space{layout: l, quota: quota, log: log, evictions: evictions, protected: protected,
		readers: map[string]int{}, reserved: map[string]int64{}}
}

// reading counts readers of a blob; a blob being read is never evicted.
func (c *space) reading(sum string, delta int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readers[sum] += delta
	if c.readers[sum] <= 0 {
		delete(c.readers, sum)
	}
}

func (c *space) blobRemoved(sum string) {
	if c.removed != nil {
		c.removed(sum)
	}
}

// touch marks the blob sum, last marked at last, as used now, for
// least-recently-used eviction, and reports the new mark. The blob's mtime
// is the record: no store write on the serving path, and it survives a
// restart. It is updated at most once a minute per blob.
func (c *space) touch(sum string, last time.Time) (time.Time, bool) {
	now := time.Now()
	if now.Sub(last) <= time.Minute {
		return last, false
	}
	if err := os.Chtimes(media.BlobPath(c.blobs, sum), now, now); err != nil {
		return last, false
	}
	return now, true
}

// blobInfo is one verified blob on disk.
type blobInfo struct {
	sum  string
	size int64
	used time.Time
}

// scanBlobs lists the verified blobs.
func (c *space) scanBlobs() ([]blobInfo, error) {
	var out []blobInfo
	root := filepath.Join(c.blobs, "sha256")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() && media.ValidSHA256(d.Name()) {
			fi, err := d.Info()
			if err != nil {
				return nil // removed under us
			}
			out = append(out, blobInfo{sum: d.Name(), size: fi.Size(), used: fi.ModTime()})
		}
		return nil
	})
	return out, err
}

// partialBytes sums the partial files of downloads not in flight.
func (c *space) partialBytes(skip map[string]int64) int64 {
	var n int64
	ents, _ := os.ReadDir(filepath.Join(c.blobs, "partial"))
	for _, e := range ents {
		id, _ := strings.CutSuffix(e.Name(), ".part")
		if _, ok := skip[id]; ok {
			continue
		}
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// Usage is the cache's use of the disk.
type Usage struct {
	// Quota is the cap on cached bytes (0 = only the disk's free space).
	Quota int64 `json:"quota_bytes"`
	// Used counts verified blobs, partial files, and the full size of
	// downloads in flight (reserved when they start).
	Used int64 `json:"used_bytes"`
	// Pinned counts the blobs of pinned and timetabled items.
	Pinned int64 `json:"pinned_bytes"`
	// Free is what the file system has free, as df says it.
	Free int64 `json:"free_bytes"`
	// Reserve is kept free for the store (fsutil.StoreReserve): the cache
	// never writes into it, and evicts to keep it.
	Reserve int64 `json:"reserve_bytes"`
	// Available is what the cache may still fill: Free less Reserve.
	Available int64 `json:"available_bytes"`
	Blobs     int   `json:"blobs"`
}

func (c *space) usage() (Usage, error) {
	blobs, err := c.scanBlobs()
	if err != nil {
		return Usage{}, err
	}
	keep, err := c.protected()
	if err != nil {
		return Usage{}, err
	}
	u := Usage{Quota: c.quota, Blobs: len(blobs)}
	for _, b := range blobs {
		u.Used += b.size
		if keep[b.sum] {
			u.Pinned += b.size
		}
	}
	c.mu.Lock()
	for _, n := range c.reserved {
		u.Used += n
	}
	u.Used += c.partialBytes(c.reserved)
	c.mu.Unlock()
	if free, size, err := fsutil.Space(c.blobs); err == nil {
		u.Free, u.Reserve = free, fsutil.StoreReserve(size)
		u.Available = max(0, free-u.Reserve)
	}
	return u, nil
}

// capacity is what the cache could hold on its disk: its blobs, partial
// files and reservations plus the free space above the store's reserve.
func (c *space) capacity() (int64, error) {
	u, err := c.usage()
	if err != nil {
		return 0, err
	}
	return u.Used + u.Available, nil
}

// makeRoom reserves space for the rest of a download of it (need bytes),
// evicting least-recently-used unprotected blobs that nobody is reading if
// the quota or the disk requires it. It fails with a clear error, before
// any byte is fetched, when that is not enough.
func (c *space) makeRoom(it media.Item, need int64) error {
	keep, err := c.protected()
	if err != nil {
		return err
	}
	blobs, err := c.scanBlobs()
	if err != nil {
		return fmt.Errorf("scan blobs: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var used int64
	for _, b := range blobs {
		used += b.size
	}
	for id, n := range c.reserved {
		if id != it.ID {
			used += n
		}
	}
	skip := map[string]int64{it.ID: 0}
	for id := range c.reserved {
		skip[id] = 0
	}
	used += c.partialBytes(skip)
	have := it.Size - need // already in the partial file
	free, size, err := fsutil.Space(c.blobs)
	if err != nil {
		return fmt.Errorf("check free space: %w", err)
	}
	reserve := fsutil.StoreReserve(size)
	free -= reserve
	// Downloads in flight will still write the rest of what they reserved.
	for id, n := range c.reserved {
		if id == it.ID {
			continue
		}
		if fi, err := os.Stat(c.partialPath(id)); err == nil {
			n -= fi.Size()
		}
		free -= max(0, n)
	}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].used.Before(blobs[j].used) })
	over := func() bool {
		return c.quota > 0 && used+it.Size > c.quota || free < need
	}
	for _, b := range blobs {
		if !over() {
			break
		}
		if keep[b.sum] || c.readers[b.sum] > 0 || b.sum == it.SHA256 {
			continue
		}
		if err := os.Remove(media.BlobPath(c.blobs, b.sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("evict %s: %w", b.sum, err)
		}
		c.blobRemoved(b.sum)
		c.log.Info("evicted resource to make room", "sha256", b.sum, "bytes", b.size, "last_used", b.used.Format(time.RFC3339), "for", it.ID)
		c.evictions.Inc()
		used -= b.size
		free += b.size
	}
	if c.quota > 0 && used+it.Size > c.quota {
		return fmt.Errorf("%w: %s needs %d bytes but the cache quota is %d and %d are held by pinned, timetabled or in-use items; unpin something or raise -cache-quota", ErrNoSpace, it.ID, it.Size, c.quota, used)
	}
	if free < need {
		return fmt.Errorf("%w: %s needs %d more bytes (has %d), the disk has %d free after the %d reserve; free disk space or unpin items", ErrNoSpace, it.ID, need, have, max(0, free), reserve)
	}
	c.reserved[it.ID] = it.Size
	return nil
}

// keepReserve evicts least-recently-used unprotected blobs nobody is
// reading until the disk has the store's reserve free again (something
// other than the cache filled it: records, logs, a recording). It returns
// the bytes freed; short of the reserve when only protected blobs remain.
func (c *space) keepReserve() (int64, error) {
	free, size, err := fsutil.Space(c.blobs)
	if err != nil {
		return 0, fmt.Errorf("check free space: %w", err)
	}
	reserve := fsutil.StoreReserve(size)
	if free >= reserve {
		return 0, nil
	}
	keep, err := c.protected()
	if err != nil {
		return 0, err
	}
	blobs, err := c.scanBlobs()
	if err != nil {
		return 0, fmt.Errorf("scan blobs: %w", err)
	}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].used.Before(blobs[j].used) })
	c.mu.Lock()
	defer c.mu.Unlock()
	var freed int64
	for _, b := range blobs {
		if free+freed >= reserve {
			break
		}
		if keep[b.sum] || c.readers[b.sum] > 0 {
			continue
		}
		if err := os.Remove(media.BlobPath(c.blobs, b.sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return freed, fmt.Errorf("evict %s: %w", b.sum, err)
		}
		c.blobRemoved(b.sum)
		c.log.Warn("evicted resource to keep the store's disk reserve", "sha256", b.sum, "bytes", b.size, "reserve", reserve, "free", free+freed)
		c.evictions.Inc()
		freed += b.size
	}
	return freed, nil
}

// release drops the space reservation of a download that ended.
func (c *space) release(id string) {
	c.mu.Lock()
	delete(c.reserved, id)
	c.mu.Unlock()
}

// reconcileBlobs runs at start-up: it removes temp files, blobs that no
// catalogue item names (orphans), and blobs whose size disagrees with
// every item that names them (torn or foreign files). Items whose blob is
// missing need no change: their state is read from the disk, so they show
// as not cached.
func (c *space) reconcileBlobs(db *bolt.DB) error {
	sizes := map[string]int64{}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(BucketItems).ForEach(func(k, v []byte) error {
			var it media.Item
			if err := json.Unmarshal(v, &it); err != nil {
				return fmt.Errorf("item %s: %w", k, err)
			}
			sizes[it.SHA256] = it.Size
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("read catalogue: %w", err)
	}
	_ = os.RemoveAll(filepath.Join(c.blobs, "tmp"))
	if err := os.MkdirAll(filepath.Join(c.blobs, "tmp"), 0o700); err != nil {
		return err
	}
	root := filepath.Join(c.blobs, "sha256")
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		sum := d.Name()
		size, known := sizes[sum]
		ok := d.Type().IsRegular() && media.ValidSHA256(sum) && known && filepath.Base(filepath.Dir(p)) == sum[:2]
		if ok {
			fi, err := d.Info()
			ok = err == nil && fi.Size() == size
		}
		if !ok {
			c.log.Warn("removing orphan or damaged blob", "file", p, "known", known)
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("remove orphan blob %s: %w", p, err)
			}
			c.blobRemoved(sum)
		}
		return nil
	})
}

// ParseSize reads a byte count with an optional K, M, G or T suffix
// (powers of 1024), e.g. "500G". "" and "0" are 0 (no limit).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	mult := int64(1)
	if i := len(s) - 1; i > 0 {
		switch s[i] {
		case 'K', 'k':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:i]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("size %q: want a whole number of bytes with an optional K, M, G or T suffix, e.g. 500G", s)
	}
	return n * mult, nil
}
