package hub

import (
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// The city's sync health over time: one SyncPoint per HealthSlot, kept for
// HealthKeep, in the Store so that every replica adds to and reads the
// same series.

// HealthSlot is the width of one point of the series; HealthKeep how far
// back the series goes.
const (
	HealthSlot = 5 * time.Minute
	HealthKeep = 7 * 24 * time.Hour
)

// SyncPoint is the city's sync in one slot. Records and Errors are counted
// by every replica that served sync in the slot; Online, Edges and Backlog
// are the last sample taken in it.
type SyncPoint struct {
	At      time.Time `json:"at"`      // slot start, UTC
	Records uint64    `json:"records"` // new records received
	Errors  uint64    `json:"errors"`  // sync requests answered with an error
	Online  int       `json:"online"`  // edges online
	Edges   int       `json:"edges"`   // edges enrolled and not revoked
	Backlog uint64    `json:"backlog"` // records waiting on the edges, as they report them
	Sampled bool      `json:"sampled"` // false: counts only (the gauges were not sampled in this slot)
}

// Slot is the start of t's slot.
func Slot(t time.Time) time.Time { return t.UTC().Truncate(HealthSlot) }

// SyncCounts counts what the sync server did since the last Take; the
// health recorder moves them into the store.
type SyncCounts struct{ records, errors atomic.Uint64 }

// Take returns the counts and starts again from zero.
func (c *SyncCounts) Take() (records, errors uint64) {
	return c.records.Swap(0), c.errors.Swap(0)
}

// Add puts counts back (a failed write keeps them for the next one).
func (c *SyncCounts) Add(records, errors uint64) {
	c.records.Add(records)
	c.errors.Add(errors)
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countErrors serves r and counts a sync request answered with an error.
func (s *Server) countErrors(w http.ResponseWriter, r *http.Request) {
	if s.counts == nil || !strings.HasPrefix(r.URL.Path, "/api/v1/sync/") {
		s.mux.ServeHTTP(w, r)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	s.mux.ServeHTTP(sw, r)
	if sw.status >= 400 {
		s.counts.errors.Add(1)
	}
}
