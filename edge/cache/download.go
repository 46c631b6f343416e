package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/campusedge/campusedge/edge/media"
	"github.com/prometheus/client_golang/prometheus"
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

	// Who wants the bytes (under mu): LAN readers streaming it now, and
	// whether the school's policy or a caller of Ensure keeps it. A fill
	// that only LAN readers wanted stops abandonGrace after the last one
	// left (abandoned), so a client that opens and drops /media requests
	// cannot make the edge pull the catalogue over the WAN.
	readers   int
	keep      bool
	abandoned bool
	idle      *time.Timer
	cancel    context.CancelFunc
}

// abandonGrace is how long a fill started by LAN readers continues after
// the last one left: a player that seeks drops one request and opens
// another at once.
const abandonGrace = 5 * time.Second

// errAbandoned ends a fill nobody wanted any more; it is not a failure.
var errAbandoned = errors.New("download stopped: no reader wanted the bytes any more (it resumes from the partial file when one does)")

// hold marks d as kept to the end (Ensure: prefetch of pinned and
// timetabled items, the recorder).
func (d *download) hold() {
	d.mu.Lock()
	d.keep = true
	if d.idle != nil {
		d.idle.Stop()
	}
	d.mu.Unlock()
}

// join adds a LAN reader; the returned func is its leaving. When the last
// reader has left and nothing keeps d, d stops after abandonGrace unless
// keep (the policy, asked then) says the item is wanted anyway.
func (d *download) join(keep func() bool) (leave func()) {
	d.mu.Lock()
	d.readers++
	if d.idle != nil {
		d.idle.Stop()
	}
	d.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.readers--; d.readers > 0 || d.keep {
				return
			}
			d.idle = time.AfterFunc(abandonGrace, func() {
				if keep != nil && keep() {
					d.hold()
					return
				}
				d.mu.Lock()
				stop := d.readers == 0 && !d.keep && d.cancel != nil
				if stop {
					d.abandoned = true
				}
				cancel := d.cancel
				d.mu.Unlock()
				if stop {
					cancel()
				}
			})
		})
	}
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

// downloader runs the hub downloads: at most one per item (every request
// for it joins that one), at most MaxDownloads at once, each resumed from
// its partial file, and remembers the last failure of each item.
type downloader struct {
	layout
	hub     string
	client  *http.Client
	log     *slog.Logger
	space   *space
	shaper  *shaper
	backoff time.Duration // first wait between attempts
	// upstream counts resource bytes received from the hub.
	upstream prometheus.Counter
	// abandoned counts fills stopped because their readers left.
	abandoned prometheus.Counter

	ctx    context.Context // lifetime of downloads: not any one request's
	cancel context.CancelFunc
	wg     *sync.WaitGroup

	slot chan struct{} // one per hub download running

	mu       sync.Mutex
	inflight map[string]*download
	failures map[string]failure
}

// stop cancels every download; the caller waits on wg.
func (c *downloader) stop() {
	c.mu.Lock() // orders with begin's wg.Add
	c.cancel()
	c.mu.Unlock()
}

// running is id's download in flight, or nil.
func (c *downloader) running(id string) *download {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inflight[id]
}

// lastFailure is the message of id's last failed download, if any.
func (c *downloader) lastFailure(id string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.failures[id]
	return f.msg, ok
}

// busyOrFailed lists the ids downloading now or whose last download failed.
func (c *downloader) busyOrFailed() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for id := range c.inflight {
		ids = append(ids, id)
	}
	for id := range c.failures {
		ids = append(ids, id)
	}
	return ids
}

// catalogueChanged forgets failures of items that have a new version: it
// deserves a new try.
func (c *downloader) catalogueChanged(items []media.Item) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, it := range items {
		if f, ok := c.failures[it.ID]; ok && f.sha256 != it.SHA256 {
			delete(c.failures, it.ID)
		}
	}
}

// begin returns the download of it in flight, starting one if none is.
// It never starts a second fetch of the same id while one runs: there is
// no time-out after which a waiting reader goes to the hub on its own.
func (c *downloader) begin(it media.Item) *download {
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
	dctx, cancel := context.WithCancel(c.ctx)
	d.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer cancel()
		select { // readers that joined wait with it; none starts its own
		case c.slot <- struct{}{}:
			d.err = c.fetch(dctx, d)
			<-c.slot
		case <-dctx.Done():
			d.err = errClosed
		}
		d.mu.Lock()
		abandoned := d.abandoned
		d.mu.Unlock()
		if abandoned && c.ctx.Err() == nil {
			d.err = errAbandoned
			c.abandoned.Inc()
			c.log.Info("download stopped: its readers left", "id", it.ID)
		}
		c.space.release(it.ID)
		c.mu.Lock()
		delete(c.inflight, it.ID)
		if d.err != nil && !errors.Is(d.err, errAbandoned) {
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

// ensure makes sure it is cached, joining or starting its download; see
// Cache.Ensure.
func (c *downloader) ensure(ctx context.Context, it media.Item) error {
	if st, _ := c.state(it); st == Cached {
		return nil
	}
	if c.hub == "" {
		return errOffline
	}
	d := c.begin(it)
	d.hold()
	select {
	case <-d.done:
		return d.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reconcile runs at start-up, before anything is served: it removes partial
// files that no catalogue item owns (bad names, unknown ids, or longer than
// their item) so they can neither be resumed wrongly nor fill the disk.
// Verified blobs need no check: they only ever appear by rename.
func (c *downloader) reconcile(item func(id string) (media.Item, bool, error)) error {
	dir := filepath.Join(c.blobs, "partial")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".part")
		keep := ok && e.Type().IsRegular() && media.ValidID(id)
		if keep {
			it, found, err := item(id)
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
