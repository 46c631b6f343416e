// Package diskwatch makes the data disk's free space a first-class state of
// the edge: ok, low (the cache can no longer grow and the store is eating
// into its reserve) or full (writes fail or are about to). The state is in
// /healthz (a "disk" check that names the disk and the bytes free and says
// what to do), in /metrics, in the log at every change, and it drives the
// cache's eviction to keep the store's reserve.
//
// The watcher reads statfs every few seconds and at once when a writer saw
// ENOSPC (NoteFull), so a full disk is reported within a write, not a poll.
package diskwatch

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/edge/fsutil"
)

// States.
const (
	StateOK   = "ok"
	StateLow  = "low"
	StateFull = "full"
)

// Config sets up a Watcher.
type Config struct {
	// Dir is on the disk watched (the data dir).
	Dir string
	// Every is the poll interval (default 5 s).
	Every time.Duration
	// OnLow runs (on the watcher's goroutine) when free space falls below
	// the store's reserve: the cache evicts to get it back. It returns the
	// bytes it freed.
	OnLow  func() (int64, error)
	Logger *slog.Logger
	// Space reads the file system (default fsutil.Space); tests of the
	// thresholds set it, the real disk tests leave it.
	Space func(dir string) (free, size int64, err error)
}

// Status is what the watcher last read.
type Status struct {
	State   string    `json:"state"`
	Path    string    `json:"path"`
	Free    int64     `json:"free_bytes"`
	Size    int64     `json:"size_bytes"`
	Reserve int64     `json:"reserve_bytes"` // kept for the store
	Low     int64     `json:"low_bytes"`     // below this: low
	Full    int64     `json:"full_bytes"`    // below this: full
	At      time.Time `json:"at"`
	// NoSpaceErrors counts writes refused by the file system (ENOSPC).
	NoSpaceErrors uint64 `json:"no_space_errors"`
}

// Watcher watches one disk.
type Watcher struct {
	cfg  Config
	log  *slog.Logger
	poke chan struct{}

	mu sync.Mutex
	st Status
	// sawNoSpace: after an ENOSPC the disk counts as full until a reading
	// shows the full threshold's room again (statfs may lag a failing write).
	sawNoSpace bool
}

// New makes a Watcher and takes a first reading; Run keeps it current.
func New(cfg Config) *Watcher {
	if cfg.Every <= 0 {
		cfg.Every = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Space == nil {
		cfg.Space = fsutil.Space
	}
	w := &Watcher{cfg: cfg, log: cfg.Logger, poke: make(chan struct{}, 1)}
	w.st = Status{State: StateOK, Path: cfg.Dir}
	w.read()
	return w
}

// Thresholds for a disk of size bytes: the store's reserve, low below
// twice it, full below a quarter of it (at least 1 MiB).
func Thresholds(size int64) (reserve, low, full int64) {
	reserve = fsutil.StoreReserve(size)
	return reserve, 2 * reserve, max(1<<20, reserve/4)
}

// read takes a reading and logs a change of state.
func (w *Watcher) read() Status {
	free, size, err := w.cfg.Space(w.cfg.Dir)
	w.mu.Lock()
	old := w.st
	if err != nil {
		w.mu.Unlock()
		w.log.Warn("cannot read the data disk's free space", "path", w.cfg.Dir, "err", err)
		return old
	}
	st := old
	st.Free, st.Size, st.At = free, size, time.Now().UTC()
	st.Reserve, st.Low, st.Full = Thresholds(size)
	if w.sawNoSpace && free >= st.Full {
		w.sawNoSpace = false
	}
	switch {
	case free < st.Full || w.sawNoSpace:
		st.State = StateFull
	case free < st.Low:
		st.State = StateLow
	default:
		st.State = StateOK
	}
	w.st = st
	w.mu.Unlock()
	if st.State != old.State {
		w.logChange(old.State, st)
	}
	return st
}

func (w *Watcher) logChange(from string, st Status) {
	args := []any{"path", st.Path, "free_bytes", st.Free, "size_bytes", st.Size, "reserve_bytes", st.Reserve, "was", from,
		"read_at", st.At.Format(time.RFC3339), "no_space_errors", st.NoSpaceErrors}
	switch st.State {
	case StateFull:
		w.log.Error("data disk full: live-class records and sync records are refused (clients retry) until space is freed; "+
			"free space on this disk (old recordings, files not from CampusEdge) or unpin cached resources", args...)
	case StateLow:
		w.log.Warn("data disk low: the cache no longer grows and evicts to keep the store's reserve; free space on this disk", args...)
	default:
		w.log.Info("data disk has room again", args...)
	}
}

// NoteFull tells the watcher that a write failed for lack of space: the
// disk counts as full at once, and a reading follows.
func (w *Watcher) NoteFull() {
	w.mu.Lock()
	w.sawNoSpace = true
	w.st.NoSpaceErrors++
	was := w.st.State
	w.st.State = StateFull
	st := w.st
	w.mu.Unlock()
	if was != StateFull {
		w.logChange(was, st)
	}
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// Status returns the last reading.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st
}

// Run keeps the reading current until ctx ends; below the reserve it asks
// OnLow (the cache) to make room.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Every)
	defer t.Stop()
	for {
		st := w.read()
		if st.Free < st.Reserve && w.cfg.OnLow != nil {
			if freed, err := w.cfg.OnLow(); err != nil {
				w.log.Warn("cache could not make room for the store's reserve", "err", err)
			} else if freed > 0 {
				w.read()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.poke:
		}
	}
}

// Check is the /healthz check: nil while the disk has room, else what is
// wrong and what to do.
func (w *Watcher) Check(context.Context) error {
	st := w.Status()
	switch st.State {
	case StateFull:
		return fmt.Errorf("data disk %s is full: %d bytes free of %d; records are refused and retried until space is freed: delete old recordings or other files on it, or unpin cached resources",
			st.Path, st.Free, st.Size)
	case StateLow:
		return fmt.Errorf("data disk %s is low on space: %d bytes free of %d (the store keeps %d); the cache stops growing: free space on it",
			st.Path, st.Free, st.Size, st.Reserve)
	}
	return nil
}

// Collectors are the disk's gauges for /metrics.
func (w *Watcher) Collectors() []prometheus.Collector {
	g := func(name, help string, f func(Status) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"path": w.cfg.Dir}},
			func() float64 { return f(w.Status()) })
	}
	return []prometheus.Collector{
		g("campusedge_disk_free_bytes", "Bytes free on the data disk.", func(s Status) float64 { return float64(s.Free) }),
		g("campusedge_disk_size_bytes", "Size of the data disk.", func(s Status) float64 { return float64(s.Size) }),
		g("campusedge_disk_reserve_bytes", "Free space kept for the store; the cache never fills it.", func(s Status) float64 { return float64(s.Reserve) }),
		g("campusedge_disk_low", "1 while the data disk is low on space (below twice the store's reserve).", func(s Status) float64 { return b2f(s.State != StateOK) }),
		g("campusedge_disk_full", "1 while the data disk is full (writes are refused and retried).", func(s Status) float64 { return b2f(s.State == StateFull) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "campusedge_disk_no_space_errors_total", Help: "Writes refused for lack of disk space (ENOSPC).",
			ConstLabels: prometheus.Labels{"path": w.cfg.Dir}}, func() float64 { return float64(w.Status().NoSpaceErrors) }),
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
