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

	"github.com/campusedge/campusedge/sync/catalog"
)

// Buckets the cache owns in edge.db.
var (
	BucketItems = []byte("cache_items") // id -> catalog.Item JSON
	BucketMeta  = []byte("cache_meta")  // sync cursor and status
)

var keyCursor = []byte("cursor")

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

	mu       sync.Mutex
	inflight map[string]*download
	syncSt   SyncStatus

	metrics metrics
}

type metrics struct {
	requests      *prometheus.CounterVec
	upstreamBytes prometheus.Counter
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
	c := &Cache{cfg: cfg, log: cfg.Logger, client: cfg.Client, blobs: filepath.Join(cfg.DataDir, "blobs"), inflight: map[string]*download{}}
	c.metrics.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "campusedge_media_requests_total", Help: "GET/HEAD /media requests by outcome: hit (served from disk), miss (fetched from the hub first), head_uncached, refused (bad id or unknown item), error.",
	}, []string{"outcome"})
	c.metrics.upstreamBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "campusedge_media_upstream_bytes_total", Help: "Resource bytes received from the hub (WAN cost of the cache).",
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
		keep := ok && e.Type().IsRegular() && catalog.ValidID(id)
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

// Start runs the catalogue sync loop until ctx ends or Close is called. It
// does nothing without a hub.
func (c *Cache) Start(ctx context.Context) {
	if c.cfg.Hub == "" {
		return
	}
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
		c.syncLoop(ctx)
	}()
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
func (c *Cache) item(id string) (catalog.Item, bool, error) {
	var it catalog.Item
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
func (c *Cache) blobPath(it catalog.Item) string { return catalog.BlobPath(c.blobs, it.SHA256) }

// partialPath is where item's download in progress lives. ids are
// validated (catalog.ValidID) before they reach a file name.
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
func (c *Cache) state(it catalog.Item) (State, int64) {
	if fi, err := os.Stat(c.blobPath(it)); err == nil && fi.Mode().IsRegular() && fi.Size() == it.Size {
		return Cached, it.Size
	}
	if fi, err := os.Stat(c.partialPath(it.ID)); err == nil && fi.Size() > 0 {
		return Partial, min(fi.Size(), it.Size)
	}
	return Missing, 0
}

var errOffline = errors.New("no hub configured (-cloud)")
