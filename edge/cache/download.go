package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/sync/catalog"
)

// download is one upstream fetch in flight; every request for the same id
// waits on it rather than starting its own (request collapsing).
type download struct {
	done chan struct{}
	err  error
}

// ErrCorrupt means the hub served bytes that do not match the catalogue.
var ErrCorrupt = errors.New("hub content does not match the catalogue")

// ErrNoSpace means the disk cannot hold the download.
var ErrNoSpace = errors.New("not enough free disk space")

// spaceReserve is left free for the store, logs and other writers.
const spaceReserve = 256 << 20

// errClosed means the cache is shutting down.
var errClosed = errors.New("resource cache is shutting down")

// stallTimeout aborts a download that receives nothing for this long; the
// next attempt resumes from the partial file.
const stallTimeout = 30 * time.Second

// maxAttempts bounds retries of one download (each resumes where the last
// stopped).
const maxAttempts = 6

// Ensure makes sure it is cached, fetching it from the hub if needed. Only
// one fetch per id runs at a time; concurrent callers share its result. The
// fetch runs on the cache's lifetime, not ctx: a reader that goes away does
// not abort the download others wait on. Ensure returns when the fetch ends
// or ctx does.
func (c *Cache) Ensure(ctx context.Context, it catalog.Item) error {
	if st, _ := c.state(it); st == Cached {
		return nil
	}
	if c.cfg.Hub == "" {
		return errOffline
	}
	c.mu.Lock()
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		return errClosed
	}
	d := c.inflight[it.ID]
	if d == nil {
		d = &download{done: make(chan struct{})}
		c.inflight[it.ID] = d
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			d.err = c.fetch(c.ctx, it)
			c.mu.Lock()
			delete(c.inflight, it.ID)
			c.mu.Unlock()
			close(d.done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-d.done:
		return d.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetch downloads it with retries and backoff, resuming each time from
// what is already in the partial file.
func (c *Cache) fetch(ctx context.Context, it catalog.Item) error {
	start := time.Now()
	backoff := 250 * time.Millisecond
	var err error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		var retry bool
		retry, err = c.fetchOnce(ctx, it)
		if err == nil {
			c.log.Info("resource cached", "id", it.ID, "bytes", it.Size, "attempts", attempt, "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if !retry || ctx.Err() != nil {
			break
		}
		c.log.Warn("resource download interrupted; resuming", "id", it.ID, "attempt", attempt, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 8*time.Second)
	}
	c.log.Error("resource download failed", "id", it.ID, "err", err)
	return err
}

// fetchOnce makes one attempt. retry says whether another attempt can help.
func (c *Cache) fetchOnce(ctx context.Context, it catalog.Item) (retry bool, err error) {
	if st, _ := c.state(it); st == Cached {
		return false, nil // e.g. another item with the same content
	}
	part := c.partialPath(it.ID)
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return false, fmt.Errorf("open partial file: %w", err)
	}
	defer func() {
		if f != nil {
			_ = f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	off := fi.Size()
	if off > it.Size {
		if err := f.Truncate(0); err != nil {
			return false, err
		}
		off = 0
	}
	resumed := off > 0
	if need := it.Size - off; need > 0 {
		free, err := freeBytes(c.blobs)
		if err != nil {
			return false, fmt.Errorf("check free space: %w", err)
		}
		if free-spaceReserve < need {
			return false, fmt.Errorf("%w: %s needs %d more bytes, %d are free (keeping %d in reserve); free space or evict resources", ErrNoSpace, it.ID, need, free, spaceReserve)
		}
	}
	if off < it.Size {
		if retry, err := c.fetchRange(ctx, f, it, off); err != nil {
			return retry, err
		}
	}
	// Verify the whole file against the catalogue before it counts.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return true, fmt.Errorf("read partial file: %w", err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); n != it.Size || sum != it.SHA256 {
		_ = f.Close()
		f = nil
		_ = os.Remove(part)
		// A resumed file may hold bytes of an older version or a torn
		// write: one more attempt from zero is worth it.
		return resumed, fmt.Errorf("%w: %s: got %d bytes with sha256 %s, catalogue says %d bytes with sha256 %s; the download was discarded", ErrCorrupt, it.ID, n, sum, it.Size, it.SHA256)
	}
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("fsync partial file: %w", err)
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	f = nil
	if err := catalog.PlaceBlob(part, c.blobs, it.SHA256); err != nil {
		return false, fmt.Errorf("store blob: %w", err)
	}
	return false, nil
}

// fetchRange appends bytes [off, size) of it from the hub to f.
func (c *Cache) fetchRange(ctx context.Context, f *os.File, it catalog.Item, off int64) (retry bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.Hub+"/api/v1/content/"+it.ID, nil)
	if err != nil {
		return false, err
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		req.Header.Set("If-Range", catalog.ETag(it.SHA256))
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return true, fmt.Errorf("hub unreachable: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		want := fmt.Sprintf("bytes %d-%d/%d", off, it.Size-1, it.Size)
		if got := resp.Header.Get("Content-Range"); got != want {
			// Never trust a range we did not ask for: start over.
			_ = f.Truncate(0)
			return true, fmt.Errorf("hub answered Content-Range %q, want %q; restarting from zero", got, want)
		}
		if resp.ContentLength != it.Size-off {
			_ = f.Truncate(0)
			return true, fmt.Errorf("hub answered Content-Length %d for a range of %d bytes; restarting from zero", resp.ContentLength, it.Size-off)
		}
	case resp.StatusCode == http.StatusOK:
		if off > 0 { // the hub ignored the range (or the content changed)
			if err := f.Truncate(0); err != nil {
				return false, err
			}
			off = 0
		}
		if resp.ContentLength >= 0 && resp.ContentLength != it.Size {
			_ = f.Truncate(0)
			return false, fmt.Errorf("%w: %s: hub sends %d bytes, catalogue says %d", ErrCorrupt, it.ID, resp.ContentLength, it.Size)
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		_ = f.Truncate(0)
		return true, fmt.Errorf("hub refused range from %d (416); restarting from zero", off)
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		transient := resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
		return transient, fmt.Errorf("hub answered %s for %s: %s", resp.Status, it.ID, b)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return false, err
	}
	body := &stallReader{r: resp.Body, t: time.AfterFunc(stallTimeout, cancel), bytes: c.metrics.upstreamBytes}
	defer body.t.Stop()
	// Read one byte more than expected so an overlong body is caught.
	n, err := io.Copy(f, io.LimitReader(body, it.Size-off+1))
	if off+n > it.Size {
		_ = f.Truncate(0)
		return false, fmt.Errorf("%w: %s: hub sent more than the catalogue's %d bytes", ErrCorrupt, it.ID, it.Size)
	}
	if err != nil {
		_ = f.Sync() // keep what arrived for the next attempt
		return true, fmt.Errorf("download cut at byte %d of %d: %w", off+n, it.Size, err)
	}
	if off+n < it.Size {
		_ = f.Sync()
		return true, fmt.Errorf("download ended at byte %d of %d", off+n, it.Size)
	}
	return false, nil
}

// stallReader cancels the request when no bytes arrive for stallTimeout.
type stallReader struct {
	r     io.Reader
	t     *time.Timer
	bytes prometheus.Counter
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.t.Reset(stallTimeout)
		s.bytes.Add(float64(n))
	}
	return n, err
}
