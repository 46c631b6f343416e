package cache

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/media"
)

// Register adds the cache's routes to the edge API:
//
//	GET|HEAD /media/{id}        the resource, for LAN clients (no token)
//	GET      /api/v1/catalog    catalogue with cache state (admin)
//
// and the policy and progress API in status.go.
func (c *Cache) Register(s *api.Server) {
	s.Registry().MustRegister(c.metrics.requests, c.metrics.upstreamBytes, c.metrics.evictions)
	s.HandleFunc("GET /media/{id}", c.serveMedia) // GET patterns match HEAD too
	s.HandleFunc("GET /api/v1/catalog", s.Admin(c.listCatalog))
	c.registerPolicy(s)
}

func (c *Cache) serveMedia(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	outcome := "error"
	defer func() { c.metrics.requests.WithLabelValues(outcome).Inc() }()
	if !media.ValidID(id) {
		outcome = "refused"
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_id", "not a catalogue id (1-64 of a-z, 0-9, '.', '_', '-')")
		return
	}
	it, ok, err := c.item(id)
	if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", "could not read the catalogue: "+err.Error())
		return
	}
	if !ok {
		outcome = "refused"
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no catalogue item "+id+" (is the catalogue synced? see GET /api/v1/catalog)")
		return
	}
	h := w.Header()
	h.Set("ETag", media.ETag(it.SHA256))
	media.SetServeHeaders(h, it)
	h.Set("Cache-Control", "public, max-age=86400")
	h.Set("Accept-Ranges", "bytes")
	// Fast path for a cached item: one open and one fstat. The reader
	// count goes up first so eviction cannot remove the blob under us.
	c.reading(it.SHA256, 1)
	if f, err := os.Open(c.blobPath(it)); err == nil {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() == it.Size {
			outcome = "hit"
			c.touchInfo(it, fi)
			http.ServeContent(zeroCopy(w), r, "", time.Time{}, f)
			_ = f.Close()
			c.reading(it.SHA256, -1)
			return
		}
		_ = f.Close()
	}
	c.reading(it.SHA256, -1)
	retried := false
again:
	if st, _ := c.state(it); st != Cached {
		if etagMatch(r.Header.Get("If-None-Match"), it.SHA256) {
			outcome = "hit" // the client has the bytes: content-addressed
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if r.Method == http.MethodHead {
			outcome = "head_uncached"
			// Answer from the catalogue; HEAD never costs a WAN fetch.
			h.Set("Content-Length", strconv.FormatInt(it.Size, 10))
			w.WriteHeader(http.StatusOK)
			return
		}
		if c.cfg.Hub == "" {
			outcome = "refused"
			httpapi.WriteError(w, http.StatusServiceUnavailable, "not_cached", id+" is not cached and no hub is configured (-cloud)")
			return
		}
		// Join (or start) the one download of this item and stream it
		// as it arrives.
		d := c.begin(it)
		rc := http.NewResponseController(w)
		g, err := c.openGrowing(r.Context(), d, func() { _ = rc.Flush() })
		if err != nil {
			return // the client left
		}
		if g != nil {
			defer g.Close()
			outcome = "miss"
			c.reading(it.SHA256, 1)
			defer c.reading(it.SHA256, -1)
			http.ServeContent(w, r, "", time.Time{}, g)
			return
		}
		if d.err != nil {
			writeFetchError(w, id, d.err)
			return
		}
		outcome = "miss"
	} else {
		outcome = "hit"
	}
	c.reading(it.SHA256, 1)
	f, err := os.Open(c.blobPath(it))
	if errors.Is(err, fs.ErrNotExist) && !retried {
		// Evicted between the state check and the open: fetch again.
		c.reading(it.SHA256, -1)
		retried = true
		goto again
	}
	if err != nil {
		c.reading(it.SHA256, -1)
		outcome = "error"
		httpapi.WriteError(w, http.StatusInternalServerError, "blob_missing", "the cached file of "+id+" is gone: "+err.Error())
		return
	}
	defer f.Close()
	defer c.reading(it.SHA256, -1)
	c.touch(it)
	// ServeContent does Range, If-None-Match/If-Range and HEAD, and an
	// *os.File body lets net/http use sendfile.
	http.ServeContent(zeroCopy(w), r, "", time.Time{}, f)
}

func writeFetchError(w http.ResponseWriter, id string, err error) {
	switch {
	case errors.Is(err, ErrNoSpace):
		httpapi.WriteError(w, http.StatusInsufficientStorage, "disk_full", err.Error())
	case errors.Is(err, ErrCorrupt):
		httpapi.WriteError(w, http.StatusBadGateway, "upstream_corrupt", err.Error())
	case errors.Is(err, errClosed):
		httpapi.WriteError(w, http.StatusServiceUnavailable, "shutting_down", err.Error())
	default:
		httpapi.WriteError(w, http.StatusBadGateway, "upstream_failed", "could not fetch "+id+" from the hub: "+err.Error())
	}
}

// etagMatch reports whether an If-None-Match header names sum.
func etagMatch(inm, sum string) bool {
	for t := range strings.SplitSeq(inm, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == media.ETag(sum) {
			return true
		}
	}
	return false
}

// CatalogItem is an item with its local cache state.
type CatalogItem struct {
	media.Item
	State State `json:"state"`
	// Bytes is how much of the item is on disk.
	Bytes int64 `json:"bytes"`
	// Downloading is true while a fetch from the hub is in flight.
	Downloading bool `json:"downloading"`
}

// CatalogResponse is the body of GET /api/v1/catalog.
type CatalogResponse struct {
	Items []CatalogItem `json:"items"`
	// Total counts the matching items, of which Items holds up to limit.
	Total  int        `json:"total"`
	Cursor string     `json:"cursor"`
	Sync   SyncStatus `json:"sync"`
}

func (c *Cache) listCatalog(w http.ResponseWriter, r *http.Request) {
	q := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("q")))
	if len(q) > 256 {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_query", "q is longer than 256 bytes")
		return
	}
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid_limit", "limit must be 1-1000")
			return
		}
		limit = n
	}
	out := CatalogResponse{Items: []CatalogItem{}}
	var matched []media.Item
	err := c.cfg.DB.View(func(tx *bolt.Tx) error {
		out.Cursor = string(tx.Bucket(BucketMeta).Get(keyCursor))
		return tx.Bucket(BucketItems).ForEach(func(k, v []byte) error {
			var it media.Item
			if err := json.Unmarshal(v, &it); err != nil {
				return err
			}
			if q == "" || strings.Contains(strings.ToLower(it.Title+"\x00"+it.Subject+"\x00"+it.Grade+"\x00"+it.ID), q) {
				out.Total++
				if len(matched) < limit {
					matched = append(matched, it)
				}
			}
			return nil
		})
	})
	if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", "could not read the catalogue: "+err.Error())
		return
	}
	for _, it := range matched { // stat outside the transaction
		st, n := c.state(it)
		out.Items = append(out.Items, CatalogItem{Item: it, State: st, Bytes: n})
	}
	c.mu.Lock()
	for i := range out.Items {
		out.Items[i].Downloading = c.inflight[out.Items[i].ID] != nil
	}
	out.Sync = c.syncSt
	c.mu.Unlock()
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// sendfileWriter lets http.ServeContent reach net/http's zero-copy
// ReadFrom (sendfile) through middleware wrappers that record the status
// but do not forward io.ReaderFrom. Headers and status still go through
// the wrapper; only the body bypasses it.
type sendfileWriter struct {
	http.ResponseWriter
	rf io.ReaderFrom
}

func (s sendfileWriter) ReadFrom(r io.Reader) (int64, error) { return s.rf.ReadFrom(r) }

// zeroCopy returns w, or w with the innermost io.ReaderFrom exposed.
func zeroCopy(w http.ResponseWriter) http.ResponseWriter {
	if _, ok := w.(io.ReaderFrom); ok {
		return w
	}
	for inner := w; ; {
		u, ok := inner.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		inner = u.Unwrap()
		if rf, ok := inner.(io.ReaderFrom); ok {
			return sendfileWriter{ResponseWriter: w, rf: rf}
		}
	}
}
