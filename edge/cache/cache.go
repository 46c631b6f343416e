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
	"errors"
	"fmt"
	"io"
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

// Cache is the resource cache: a thin facade over the parts that each do
// one job, wired together in New.
//
//	index       the catalogue in the store and its sync from the hub (sync.go)
//	downloads   hub downloads in flight and their readers (download.go, fetch.go, stream.go)
//	space       quota, free space, eviction, blob readers (space.go)
//	policy      pins and timetable: what is wanted (policy.go)
//	prefetch    fetching what is wanted ahead of need (prefetch.go)
//	uploads     school-made resources and their upload to the hub (upload.go)
//
// The facade serves /media and the cache API (http.go, status.go).
type Cache struct {
	cfg    Config
	log    *slog.Logger
	layout layout
	shaper *shaper

	index     *index
	downloads *downloader
	space     *space
	policy    *policy
	prefetch  *prefetcher
	uploads   *uploader
	clients   *clientBudget // uncached reads per LAN client (clientbudget.go)
	served    *servedItems  // catalogue items as /media serves them (served.go)
	files     *blobFiles    // open handles of recently served blobs (blobfiles.go)

	ctx context.Context // the cache's lifetime; Close ends it
	wg  sync.WaitGroup  // loops and downloads

	metrics metrics
}

type metrics struct {
	requests      *prometheus.CounterVec
	outcomes      map[string]prometheus.Counter // requests' children, looked up once
	upstreamBytes prometheus.Counter
	evictions     prometheus.Counter
	abandoned     prometheus.Counter
	overBudget    prometheus.Counter
	fast          prometheus.Counter // responses of the fast path (fastpath.go)
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
	if cfg.Client == nil {
		cfg.Client = defaultClient()
	}
	cfg.Hub = strings.TrimRight(cfg.Hub, "/")
	c := &Cache{cfg: cfg, log: cfg.Logger, layout: layout{blobs: filepath.Join(cfg.DataDir, "blobs")},
		shaper: newShaper(cfg.Bandwidth, cfg.Now), metrics: newMetrics()}
	if err := os.MkdirAll(filepath.Join(c.layout.blobs, "partial"), 0o700); err != nil {
		return nil, fmt.Errorf("create blob dir: %w", err)
	}
	c.wire()
	if err := c.downloads.reconcile(c.index.item); err != nil {
		return nil, err
	}
	if err := c.space.reconcileBlobs(cfg.DB); err != nil {
		return nil, fmt.Errorf("reconcile blobs: %w", err)
	}
	return c, nil
}

// wire makes the parts and connects them: each gets only the functions of
// the others it needs.
func (c *Cache) wire() {
	cfg := c.cfg
	ctx, cancel := context.WithCancel(context.Background())
	c.ctx = ctx
	c.index = &index{db: cfg.DB, hub: cfg.Hub, client: cfg.Client, log: c.log, interval: cfg.SyncInterval}
	c.served = newServedItems(c.index.item)
	c.files = newBlobFiles(func(sum string) string { return media.BlobPath(c.layout.blobs, sum) })
	c.space = newSpace(c.layout, cfg.Quota, c.log, c.metrics.evictions, c.protected)
	c.space.removed = c.files.drop
	c.downloads = &downloader{layout: c.layout, hub: cfg.Hub, client: cfg.Client, log: c.log, space: c.space, shaper: c.shaper,
		backoff: cfg.RetryBackoff, upstream: c.metrics.upstreamBytes, abandoned: c.metrics.abandoned, ctx: ctx, cancel: cancel, wg: &c.wg,
		slot: make(chan struct{}, cfg.MaxDownloads), inflight: map[string]*download{}, failures: map[string]failure{}}
	c.clients = newClientBudget()
	c.policy = &policy{db: cfg.DB, horizon: cfg.PrefetchHorizon, quota: cfg.Quota, log: c.log, item: c.index.item, capacity: c.space.capacity}
	c.prefetch = newPrefetcher(c.policy, c.layout.state, c.downloads.ensure, c.log, cfg.PrefetchInterval, cfg.PrefetchConcurrency)
	c.policy.changed = c.prefetch.Kick
	c.index.changed = func(items []media.Item) {
		c.served.changed()
		c.downloads.catalogueChanged(items)
		c.prefetch.Kick()
	}
	c.uploads = &uploader{layout: c.layout, db: cfg.DB, hub: cfg.Hub, client: cfg.Client, log: c.log, max: cfg.UploadMax,
		interval: cfg.UploadInterval, space: c.space, shaper: c.shaper, item: c.index.item,
		kick: make(chan struct{}, 1), errs: map[string]string{}, stored: c.served.changed}
}

func newMetrics() metrics {
	m := metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "campusedge_media_requests_total", Help: "GET/HEAD /media requests by outcome: hit (served from disk), miss (fetched from the hub first), head_uncached, refused (bad id or unknown item), error.",
		}, []string{"outcome"}),
		upstreamBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "campusedge_media_upstream_bytes_total", Help: "Resource bytes received from the hub (WAN cost of the cache).",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "campusedge_media_evictions_total", Help: "Cached resources removed to make room (least recently used, unpinned, not being read).",
		}),
		abandoned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "campusedge_media_downloads_abandoned_total", Help: "Hub downloads started by LAN readers and stopped because every reader left (not pinned or timetabled).",
		}),
		overBudget: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "campusedge_media_uncached_budget_refusals_total", Help: "Reads of uncached items refused because the client was over its budget (uncached_budget).",
		}),
		fast: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "campusedge_media_fastpath_responses_total", Help: "GET/HEAD /media responses sent by the fast path below net/http (-media-fastpath); each is also counted in campusedge_media_requests_total and campusedge_http_requests_total.",
		}),
		outcomes: map[string]prometheus.Counter{},
	}
	for _, o := range []string{"hit", "miss", "head_uncached", "refused", "error"} {
		m.outcomes[o] = m.requests.WithLabelValues(o)
	}
	return m
}

// outcome counts a /media request by its outcome.
func (m metrics) outcome(o string) {
	if c, ok := m.outcomes[o]; ok {
		c.Inc()
		return
	}
	m.requests.WithLabelValues(o).Inc()
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
	for _, loop := range []func(context.Context){c.index.syncLoop, c.prefetch.prefetchLoop, c.uploads.uploadLoop} {
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

// policyWants reports whether the school's policy (pins, the timetable
// within the prefetch horizon) wants id cached: a fill of such an item
// continues when its LAN readers leave.
func (c *Cache) policyWants(id string) bool {
	want, err := c.policy.wanted(time.Now())
	if err != nil {
		return true // in doubt, keep the bytes coming
	}
	for _, w := range want {
		if w.Item.ID == id {
			return true
		}
	}
	return false
}

// Close stops syncing and downloads and waits for them to finish, so the
// store can be closed after it.
func (c *Cache) Close() {
	c.downloads.stop()
	c.wg.Wait()
	_ = c.files.closeAll()
}

// protected is the set of blob sums that eviction must leave alone:
// pinned items and items the timetable needs within the prefetch horizon.
func (c *Cache) protected() (map[string]bool, error) {
	keep := map[string]bool{}
	want, err := c.policy.wanted(time.Now())
	if err != nil {
		return nil, err
	}
	for _, w := range want {
		keep[w.Item.SHA256] = true
	}
	// A local resource the hub does not have yet exists only here.
	q, err := c.uploads.uploadQueue()
	if err != nil {
		return nil, err
	}
	for _, e := range q {
		if it, ok, err := c.index.item(e.ID); err == nil && ok {
			keep[it.SHA256] = true
		}
	}
	return keep, nil
}

// Ensure makes sure it is cached, fetching it from the hub if needed. Only
// one fetch per id runs at a time; concurrent callers share it. The fetch
// runs on the cache's lifetime, not ctx: a reader that goes away does not
// abort the download others wait on. Ensure returns when the fetch ends or
// ctx does.
func (c *Cache) Ensure(ctx context.Context, it media.Item) error {
	return c.downloads.ensure(ctx, it)
}

// SyncOnce pulls every catalogue change since the stored cursor; see index.
func (c *Cache) SyncOnce(ctx context.Context) (int, error) { return c.index.SyncOnce(ctx) }

// KeepReserve evicts cached resources (least recently used first, never
// pinned, timetabled, waiting for upload or being read) until the disk has
// the store's reserve free (fsutil.StoreReserve); the disk watcher calls it
// when free space runs low. It returns the bytes freed.
func (c *Cache) KeepReserve() (int64, error) { return c.space.keepReserve() }

// Kick asks the prefetcher to look at the policy now.
func (c *Cache) Kick() { c.prefetch.Kick() }

// PutTimetable stores (replacing by id) timetable entries; it is the hook
// the sync engine feeds. Resources not (yet) in the catalogue are kept and
// fetched once the catalogue names them.
func (c *Cache) PutTimetable(entries []TimetableEntry) error { return c.policy.PutTimetable(entries) }

// DeleteTimetable removes an entry; it reports whether it existed.
func (c *Cache) DeleteTimetable(id string) (bool, error) { return c.policy.DeleteTimetable(id) }

// Timetable lists the stored entries by start time.
func (c *Cache) Timetable() ([]TimetableEntry, error) { return c.policy.Timetable() }

// SetPin pins id. It fails with ErrPinOverQuota when the pinned items
// together would not fit the quota.
func (c *Cache) SetPin(id, by string) (Pin, error) { return c.policy.SetPin(id, by) }

// Unpin removes a pin; it reports whether there was one.
func (c *Cache) Unpin(id string) (bool, error) { return c.policy.Unpin(id) }

// AddLocal stores a school-made resource read from r and queues it for the
// hub; see uploader.AddLocal.
func (c *Cache) AddLocal(ctx context.Context, r io.Reader, declared int64, meta media.Item) (media.Item, error) {
	return c.uploads.AddLocal(ctx, r, declared, meta)
}

var errOffline = errors.New("no hub configured (-cloud)")
