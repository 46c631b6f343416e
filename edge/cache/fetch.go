package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/edge/rangefetch"
)

// fetch downloads d.it with retries and backoff, resuming each time from
// what is already in the partial file.
func (c *downloader) fetch(ctx context.Context, d *download) error {
	it := d.it
	start := time.Now()
	backoff := c.backoff
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
			attempt, backoff = 1, c.backoff
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
func (c *downloader) fetchOnce(ctx context.Context, d *download) (retry bool, err error) {
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
	off, err := rangefetch.ResumeOffset(f, it.Size)
	if err != nil {
		return false, err
	}
	d.resumeAt(off)
	resumed := off > 0
	if need := it.Size - off; need > 0 {
		if err := c.space.makeRoom(it, need); err != nil {
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
	n, sum, err := rangefetch.Sum(f)
	if err != nil {
		return true, err
	}
	if n != it.Size || sum != it.SHA256 {
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

// fetchRange appends bytes [off, size) of d.it from the hub to f, with
// the checks of rangefetch; readers follow d as the bytes land.
func (c *downloader) fetchRange(ctx context.Context, f *os.File, d *download, off int64) (retry bool, err error) {
	it := d.it
	lastLog, logged := time.Now(), off
	req := rangefetch.Request{
		Client: c.client, URL: c.hub + "/api/v1/content/" + it.ID, ETag: media.ETag(it.SHA256), Size: it.Size,
		Stall:     stallTimeout,
		Restarted: func() { d.truncated(0) },
		Live:      func() { d.update(func() { d.live = true }) },
		Wrote: func(ctx context.Context, pos int64, n int) error {
			c.upstream.Add(float64(n))
			d.update(func() { d.written = pos })
			if time.Since(lastLog) >= progressLogEvery {
				rate := float64(pos-logged) * 8 / time.Since(lastLog).Seconds()
				c.log.Info("downloading resource", "id", it.ID, "bytes", pos, "of", it.Size, "percent", pos*100/max(it.Size, 1), "rate_bps", int64(rate))
				lastLog, logged = time.Now(), pos
			}
			// The bandwidth schedule paces the WAN by pacing our reads.
			return c.shaper.wait(ctx, n)
		},
	}
	retry, err = req.Append(ctx, f, off)
	if errors.Is(err, rangefetch.ErrMismatch) {
		return retry, fmt.Errorf("%w: %s: %w (catalogue size)", ErrCorrupt, it.ID, err)
	}
	if err != nil {
		return retry, fmt.Errorf("%s from the hub: %w", it.ID, err)
	}
	return false, nil
}
