// Package cache is the edge's micro-lesson resource cache: it keeps the city
// catalogue in the store (synced from cityhub by cursor), serves cached
// resources on the LAN at /media/{id} straight from content-addressed blob
// files, and fetches an uncached resource from the hub on first request,
// once per resource however many classrooms ask at the same moment.
//
// On disk, under the data dir:
//
//	blobs/sha256/ab/abcdef…   verified content, named by its SHA-256
//	blobs/partial/{id}.part   a download in progress (resumed with Range)
//
// A resource is "cached" exactly when its blob file exists: blobs are only
// renamed into place after size and SHA-256 match the catalogue, so the
// blob directory, not a flag in the store, is the truth and the two cannot
// disagree after a power cut.
package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/edge/media"
)

// Buckets the cache owns in edge.db.
var (
	BucketItems = []byte("cache_items") // id -> media.Item JSON
	BucketMeta  = []byte("cache_meta")  // sync cursor and status
)

// Buckets added by MigratePolicy.
var (
	BucketPins      = []byte("cache_pins")      // id -> Pin JSON
	BucketTimetable = []byte("cache_timetable") // entry id -> TimetableEntry JSON
	BucketUploads   = []byte("cache_uploads")   // id -> upload state JSON (local items for the hub)
)

var keyCursor = []byte("cursor")

// MigratePolicy creates the buckets of pins, timetable and the upload
// queue; appliance.Migrations runs it once, after Migrate.
func MigratePolicy(tx *bolt.Tx) error {
	for _, b := range [][]byte{BucketPins, BucketTimetable, BucketUploads} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	return nil
}

// Migrate creates the cache's buckets; appliance.Migrations runs it once.
func Migrate(tx *bolt.Tx) error {
	for _, b := range [][]byte{BucketItems, BucketMeta} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	return nil
}

// Config wires a Cache.
type Config struct {
	DB      *bolt.DB
	DataDir string
	// Hub is the cityhub base URL; empty means offline (serve what is cached).
	Hub    string
	Logger *slog.Logger
	// SyncInterval is the time between catalogue syncs (default 60 s).
	SyncInterval time.Duration
	// Client talks to the hub; the default has connect and header timeouts.
	Client *http.Client
	// Quota caps the bytes the cache keeps on disk (0 = the disk's free
	// space, less a reserve, is the only limit).
	Quota int64
	// Bandwidth caps WAN downloads by time of day (zero value: no cap).
	Bandwidth Schedule
	// PrefetchHorizon is how far ahead timetable entries are prefetched
	// (default 7 days).
	PrefetchHorizon time.Duration
	// PrefetchConcurrency bounds parallel prefetch downloads (default 2).
	PrefetchConcurrency int
	// MaxDownloads bounds hub downloads running at once, read-through and
	// prefetch together (default 6); more wait their turn.
	MaxDownloads int
	// PrefetchInterval is how often the policy is re-read (default 30 s;
	// pins and timetable changes also trigger it at once).
	PrefetchInterval time.Duration
	// UploadMax bounds one teacher upload (default 2 GiB).
	UploadMax int64
	// UploadInterval is how often the hub upload queue is retried
	// (default 60 s).
	UploadInterval time.Duration
	// RetryBackoff is the first wait between download attempts (default
	// 250 ms, doubling to 8 s); tests shorten it.
	RetryBackoff time.Duration
	// Now is the clock of the bandwidth schedule (tests); default time.Now.
	Now func() time.Time
}

// Cache is the resource cache.
type Cache struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client
	blobs  string

	ctx    context.Context // lifetime of downloads: not any one request's
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	inflight    map[string]*download
	failures    map[string]failure
	retries     map[string]retryState
	prefetching map[string]bool
	syncSt      SyncStatus
	upSt        map[string]string // upload id -> last error

	spaceMu  sync.Mutex
	readers  map[string]int   // blob sum -> open readers
	reserved map[string]int64 // id -> bytes reserved by a download in flight

	shaper *shaper
	dlSlot chan struct{} // one per hub download running (MaxDownloads)
	kick   chan struct{} // wakes the prefetcher
	upKick chan struct{} // wakes the uploader

	metrics metrics
}

type metrics struct {
	requests      *prometheus.CounterVec
	upstreamBytes prometheus.Counter
	evictions     prometheus.Counter
}

// SyncStatus is the catalogue sync's state, reported in the API.
type SyncStatus struct {
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
}

// New makes a cache; call Start to begin syncing and Close to stop.
func New(cfg Config) (*Cache, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = 60 * time.Second
	}
	if cfg.PrefetchHorizon <= 0 {
		cfg.PrefetchHorizon = 7 * 24 * time.Hour
	}
	if cfg.PrefetchConcurrency <= 0 {
		cfg.PrefetchConcurrency = 2
	}
	if cfg.PrefetchInterval <= 0 {
		cfg.PrefetchInterval = 30 * time.Second
	}
	if cfg.UploadMax <= 0 {
		cfg.UploadMax = 2 << 30
	}
	if cfg.MaxDownloads <= 0 {
		cfg.MaxDownloads = 6
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = 250 * time.Millisecond
	}
	if cfg.UploadInterval <= 0 {
		cfg.UploadInterval = time.Minute
	}
	c := &Cache{cfg: cfg, log: cfg.Logger, client: cfg.Client, blobs: filepath.Join(cfg.DataDir, "blobs"),
		inflight: map[string]*download{}, failures: map[string]failure{}, retries: map[string]retryState{}, prefetching: map[string]bool{},
		upSt: map[string]string{}, readers: map[string]int{}, reserved: map[string]int64{},
		shaper: newShaper(cfg.Bandwidth, cfg.Now), dlSlot: make(chan struct{}, cfg.MaxDownloads), kick: make(chan struct{}, 1), upKick: make(chan struct{}, 1)}
	c.metrics.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "campusedge_media_requests_total", Help: "GET/HEAD /media requests by outcome: hit (served from disk), miss (fetched from the hub first), head_uncached, refused (bad id or unknown item), error.",
	}, []string{"outcome"})
	c.metrics.upstreamBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "campusedge_media_upstream_bytes_total", Help: "Resource bytes received from the hub (WAN cost of the cache).",
	})
	c.metrics.evictions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "campusedge_media_evictions_total", Help: "Cached resources removed to make room (least recently used, unpinned, not being read).",
	})
	if c.client == nil {
		c.client = defaultClient()
	}
	c.cfg.Hub = strings.TrimRight(cfg.Hub, "/")
	if err := os.MkdirAll(filepath.Join(c.blobs, "partial"), 0o700); err != nil {
		return nil, fmt.Errorf("create blob dir: %w", err)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if err := c.reconcile(); err != nil {
		return nil, err
	}
	if err := c.reconcileBlobs(); err != nil {
		return nil, fmt.Errorf("reconcile blobs: %w", err)
	}
	return c, nil
}

// reconcile runs at start-up, before anything is served: it removes partial
// files that no catalogue item owns (bad names, unknown ids, or longer than
// their item) so they can neither be resumed wrongly nor fill the disk.
// Verified blobs need no check: they only ever appear by rename.
func (c *Cache) reconcile() error {
	dir := filepath.Join(c.blobs, "partial")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".part")
		keep := ok && e.Type().IsRegular() && media.ValidID(id)
		if keep {
			it, found, err := c.item(id)
			if err != nil {
				return err
			}
			fi, err := e.Info()
			keep = found && err == nil && fi.Size() <= it.Size
		}
		if !keep {
			c.log.Info("removing orphan partial download", "file", e.Name())
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("remove orphan %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// defaultClient bounds connecting and waiting for headers; bodies of large
// resources are bounded per read by the download loop, not by a total.
func defaultClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 20 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
	}}
}

// Start runs the catalogue sync, prefetch and upload loops until ctx ends
// or Close is called. They do nothing without a hub.
func (c *Cache) Start(ctx context.Context) {
	if c.cfg.Hub == "" {
		return
	}
	for _, loop := range []func(context.Context){c.syncLoop, c.prefetchLoop, c.uploadLoop} {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() {
				select {
				case <-c.ctx.Done():
					cancel()
				case <-ctx.Done():
				}
			}()
			loop(ctx)
		}()
	}
}

// Close stops syncing and downloads and waits for them to finish, so the
// store can be closed after it.
func (c *Cache) Close() {
	c.mu.Lock() // orders with Ensure's wg.Add
	c.cancel()
	c.mu.Unlock()
	c.wg.Wait()
}

// item reads one catalogue item from the store.
func (c *Cache) item(id string) (media.Item, bool, error) {
	var it media.Item
	var ok bool
	err := c.cfg.DB.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketItems).Get([]byte(id))
		if b == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(b, &it)
	})
	return it, ok, err
}

// blobPath is where item's verified content lives.
func (c *Cache) blobPath(it media.Item) string { return media.BlobPath(c.blobs, it.SHA256) }

// partialPath is where item's download in progress lives. ids are
// validated (media.ValidID) before they reach a file name.
func (c *Cache) partialPath(id string) string {
	return filepath.Join(c.blobs, "partial", id+".part")
}

// State is an item's cache state.
type State string

// States.
const (
	Cached  State = "cached"
	Partial State = "partial"
	Missing State = "missing"
)

// state reports it's state and how many bytes of it are on disk.
func (c *Cache) state(it media.Item) (State, int64) {
	if fi, err := os.Stat(c.blobPath(it)); err == nil && fi.Mode().IsRegular() && fi.Size() == it.Size {
		return Cached, it.Size
	}
	if fi, err := os.Stat(c.partialPath(it.ID)); err == nil && fi.Size() > 0 {
		return Partial, min(fi.Size(), it.Size)
	}
	return Missing, 0
}

var errOffline = errors.New("no hub configured (-cloud)")
