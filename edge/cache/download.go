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
	"sync"
	"time"

	"github.com/campusedge/campusedge/edge/media"
)

// download is one upstream fetch in flight. Every request for the same id
// joins it rather than starting its own (request collapsing) and reads the
// partial file as it grows, so LAN readers get bytes as they arrive from
// the WAN.
type download struct {
	it      media.Item
	done    chan struct{} // closed when the fetch ends; err is then set
	err     error
	started time.Time

	mu sync.Mutex
	// gen changes whenever the partial file is truncated or replaced:
	// bytes a reader took from an older generation are void.
	gen int
	// written is how many bytes from 0 of the partial file are final for gen.
	written int64
	// live is set once the current attempt's response passed its checks
	// (status, Content-Length, Content-Range): readers may start.
	live bool
	// verified is set once size and SHA-256 matched and the blob is in place.
	verified bool
	wake     chan struct{} // closed and replaced on every change
}

func newDownload(it media.Item) *download {
	return &download{it: it, done: make(chan struct{}), wake: make(chan struct{}), started: time.Now()}
}

// update changes d under its lock and wakes every waiting reader.
func (d *download) update(f func()) {
	d.mu.Lock()
	f()
	close(d.wake)
	d.wake = make(chan struct{})
	d.mu.Unlock()
}

type dlSnapshot struct {
	gen            int
	written        int64
	live, verified bool
	wake           <-chan struct{}
}

func (d *download) snapshot() dlSnapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	return dlSnapshot{d.gen, d.written, d.live, d.verified, d.wake}
}

// truncated records that the partial file now holds n bytes of a new
// generation.
func (d *download) truncated(n int64) {
	d.update(func() { d.gen++; d.written = n; d.live = false })
}

// resumeAt records that a new attempt continues after n bytes on disk.
// Readers keep streaming unless bytes they may have read are gone.
func (d *download) resumeAt(n int64) {
	d.update(func() {
		if n < d.written {
			d.gen++
		}
		d.written, d.live = n, false
	})
}

// ErrCorrupt means the hub served bytes that do not match the catalogue.
var ErrCorrupt = errors.New("hub content does not match the catalogue")

// ErrNoSpace means the disk (or the cache quota) cannot hold the download.
var ErrNoSpace = errors.New("not enough free disk space")

// spaceReserve is left free for the store, logs and other writers.
const spaceReserve = 256 << 20

// errClosed means the cache is shutting down.
var errClosed = errors.New("resource cache is shutting down")

// stallTimeout aborts a download that receives nothing for this long; the
// next attempt resumes from the partial file.
const stallTimeout = 30 * time.Second

// progressLogEvery is how often a running download logs its progress.
const progressLogEvery = 10 * time.Second

// maxAttempts bounds retries of one download (each resumes where the last
// stopped).
const maxAttempts = 6

// corruptHold is how long an item whose hub content failed verification is
// refused without asking the hub again (a catalogue change clears it).
const corruptHold = 10 * time.Minute

// begin returns the download of it in flight, starting one if none is.
// It never starts a second fetch of the same id while one runs: there is
// no time-out after which a waiting reader goes to the hub on its own.
func (c *Cache) begin(it media.Item) *download {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.inflight[it.ID]; d != nil {
		return d
	}
	d := newDownload(it)
	if c.ctx.Err() != nil {
		d.err = errClosed
		close(d.done)
		return d
	}
	if f, ok := c.failures[it.ID]; ok && f.corrupt && f.sha256 == it.SHA256 && time.Since(f.at) < corruptHold {
		d.err = fmt.Errorf("%w: %s (refused since %s; a catalogue update or %s clears this)", ErrCorrupt, f.msg, f.at.Format(time.RFC3339), corruptHold)
		close(d.done)
		return d
	}
	c.inflight[it.ID] = d
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		select { // readers that joined wait with it; none starts its own
		case c.dlSlot <- struct{}{}:
			d.err = c.fetch(c.ctx, d)
			<-c.dlSlot
		case <-c.ctx.Done():
			d.err = errClosed
		}
		c.release(it.ID)
		c.mu.Lock()
		delete(c.inflight, it.ID)
		if d.err != nil {
			c.failures[it.ID] = failure{msg: d.err.Error(), at: time.Now(), corrupt: errors.Is(d.err, ErrCorrupt), sha256: it.SHA256}
		} else {
			delete(c.failures, it.ID)
		}
		c.mu.Unlock()
		d.update(func() {})
		close(d.done)
	}()
	return d
}

// failure is the last failed download of an item, shown in the API.
type failure struct {
	msg     string
	at      time.Time
	corrupt bool
	sha256  string
}

// Ensure makes sure it is cached, fetching it from the hub if needed. Only
// one fetch per id runs at a time; concurrent callers share it. The fetch
// runs on the cache's lifetime, not ctx: a reader that goes away does not
// abort the download others wait on. Ensure returns when the fetch ends or
// ctx does.
func (c *Cache) Ensure(ctx context.Context, it media.Item) error {
	if st, _ := c.state(it); st == Cached {
		return nil
	}
	if c.cfg.Hub == "" {
		return errOffline
	}
	d := c.begin(it)
	select {
	case <-d.done:
		return d.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetch downloads d.it with retries and backoff, resuming each time from
// what is already in the partial file.
func (c *Cache) fetch(ctx context.Context, d *download) error {
	it := d.it
	start := time.Now()
	backoff := c.cfg.RetryBackoff
	var err error
	var highWater int64 // the most bytes ever on disk in this fetch
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		var retry bool
		retry, err = c.fetchOnce(ctx, d)
		if after := d.snapshot(); err != nil && after.written > highWater {
			// The attempt got further than any before it: a flaky link
			// that keeps delivering is not a failing download. (Only new
			// ground counts, so a hub that keeps sending the same short or
			// bad prefix still runs out of attempts.)
			highWater = after.written
			attempt, backoff = 1, c.cfg.RetryBackoff
		}
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
func (c *Cache) fetchOnce(ctx context.Context, d *download) (retry bool, err error) {
	it := d.it
	if st, _ := c.state(it); st == Cached {
		d.update(func() { d.written, d.verified = it.Size, true })
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
	d.resumeAt(off)
	resumed := off > 0
	if need := it.Size - off; need > 0 {
		if err := c.makeRoom(it, need); err != nil {
			return false, err
		}
	}
	if off < it.Size {
		if retry, err := c.fetchRange(ctx, f, d, off); err != nil {
			return retry, err
		}
	} else {
		d.update(func() { d.live = true })
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
		d.truncated(0)
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
	if err := media.PlaceBlob(part, c.blobs, it.SHA256); err != nil {
		return false, fmt.Errorf("store blob: %w", err)
	}
	d.update(func() { d.verified = true })
	return false, nil
}

// fetchRange appends bytes [off, size) of d.it from the hub to f.
func (c *Cache) fetchRange(ctx context.Context, f *os.File, d *download, off int64) (retry bool, err error) {
	it := d.it
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.Hub+"/api/v1/content/"+it.ID, nil)
	if err != nil {
		return false, err
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		req.Header.Set("If-Range", media.ETag(it.SHA256))
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return true, fmt.Errorf("hub unreachable: %w", err)
	}
	defer resp.Body.Close()
	restart := func() error {
		if err := f.Truncate(0); err != nil {
			return err
		}
		d.truncated(0)
		return nil
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		want := fmt.Sprintf("bytes %d-%d/%d", off, it.Size-1, it.Size)
		if got := resp.Header.Get("Content-Range"); got != want {
			// Never trust a range we did not ask for: start over.
			_ = restart()
			return true, fmt.Errorf("hub answered Content-Range %q, want %q; restarting from zero", got, want)
		}
		if resp.ContentLength != it.Size-off {
			_ = restart()
			return true, fmt.Errorf("hub answered Content-Length %d for a range of %d bytes; restarting from zero", resp.ContentLength, it.Size-off)
		}
	case resp.StatusCode == http.StatusOK:
		if off > 0 { // the hub ignored the range (or the content changed)
			if err := restart(); err != nil {
				return false, err
			}
			off = 0
		}
		if resp.ContentLength >= 0 && resp.ContentLength != it.Size {
			_ = restart()
			return false, fmt.Errorf("%w: %s: hub sends %d bytes, catalogue says %d", ErrCorrupt, it.ID, resp.ContentLength, it.Size)
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		_ = restart()
		return true, fmt.Errorf("hub refused range from %d (416); restarting from zero", off)
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		transient := resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
		return transient, fmt.Errorf("hub answered %s for %s: %s", resp.Status, it.ID, b)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return false, err
	}
	d.update(func() { d.live = true })
	t := time.AfterFunc(stallTimeout, cancel)
	defer t.Stop()
	// Read one byte more than expected so an overlong body is caught.
	body := io.LimitReader(resp.Body, it.Size-off+1)
	buf := make([]byte, 32<<10)
	pos := off
	lastLog, logged := time.Now(), off
	for {
		if time.Since(lastLog) >= progressLogEvery {
			rate := float64(pos-logged) * 8 / time.Since(lastLog).Seconds()
			c.log.Info("downloading resource", "id", it.ID, "bytes", pos, "of", it.Size, "percent", pos*100/max(it.Size, 1), "rate_bps", int64(rate))
			lastLog, logged = time.Now(), pos
		}
		n, rerr := body.Read(buf)
		if n > 0 {
			t.Reset(stallTimeout)
			c.metrics.upstreamBytes.Add(float64(n))
			if pos+int64(n) > it.Size {
				_ = restart()
				return false, fmt.Errorf("%w: %s: hub sent more than the catalogue's %d bytes", ErrCorrupt, it.ID, it.Size)
			}
			if _, err := f.Write(buf[:n]); err != nil {
				return false, fmt.Errorf("write partial file: %w", err)
			}
			pos += int64(n)
			d.update(func() { d.written = pos })
			// The bandwidth schedule paces the WAN by pacing our reads.
			if err := c.shaper.wait(ctx, n); err != nil {
				_ = f.Sync()
				return true, fmt.Errorf("download stopped at byte %d of %d: %w", pos, it.Size, err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			_ = f.Sync() // keep what arrived for the next attempt
			return true, fmt.Errorf("download cut at byte %d of %d: %w", pos, it.Size, rerr)
		}
	}
	if pos < it.Size {
		_ = f.Sync()
		return true, fmt.Errorf("download ended at byte %d of %d", pos, it.Size)
	}
	return false, nil
}
