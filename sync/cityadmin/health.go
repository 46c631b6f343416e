package cityadmin

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/sync/hub"
)

// RecordHealth keeps the city's sync health series (hub.SyncPoint) every
// `every` until ctx ends: the records and errors the sync server counted
// since the last tick go into the current slot, then the edges are
// sampled (online, enrolled, backlog total). Every replica runs it; the
// counts add up and the samples agree, since all of them read one store.
func RecordHealth(ctx context.Context, st hub.Store, counts *hub.SyncCounts, every time.Duration, now func() time.Time, log *slog.Logger) {
	if now == nil {
		now = time.Now
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if err := RecordHealthOnce(ctx, st, counts, now()); err != nil && ctx.Err() == nil {
			log.Warn("sync health not recorded; will retry", "err", err, "retry_in", every)
		}
		select {
		case <-ctx.Done():
			// The last counts, so a stopping replica's work is not lost.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = RecordHealthOnce(sctx, st, counts, now())
			cancel()
			return
		case <-tick.C:
		}
	}
}

// RecordHealthOnce is one tick of RecordHealth.
func RecordHealthOnce(ctx context.Context, st hub.Store, counts *hub.SyncCounts, now time.Time) error {
	if counts != nil {
		if rec, errs := counts.Take(); rec > 0 || errs > 0 {
			if err := st.AddSyncCounts(ctx, now, rec, errs); err != nil {
				counts.Add(rec, errs) // kept for the next tick
				return err
			}
		}
	}
	es, err := st.Edges(ctx, "")
	if err != nil {
		return err
	}
	var online, edges int
	var backlog uint64
	for _, e := range es {
		if e.Revoked {
			continue
		}
		edges++
		if !e.Seen.IsZero() && now.Sub(e.Seen) < OnlineWindow {
			online++
		}
		backlog += e.Backlog
	}
	return st.SampleSync(ctx, now, online, edges, backlog, now.Add(-hub.HealthKeep))
}

// syncHealth answers the series of the last ?hours (default 24, at most a
// week).
func (a *API) syncHealth(w http.ResponseWriter, r *http.Request, _ Principal) {
	hours := 24
	if q := r.URL.Query().Get("hours"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil || n < 1 || n > int(hub.HealthKeep/time.Hour) {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid_hours", "hours must be 1-"+strconv.Itoa(int(hub.HealthKeep/time.Hour)))
			return
		}
		hours = n
	}
	now := a.now().UTC()
	ps, err := a.st.SyncPoints(r.Context(), now.Add(-time.Duration(hours)*time.Hour))
	if err != nil {
		a.storeErr(w, "sync health", err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"points": ps, "slot_seconds": int(hub.HealthSlot / time.Second),
		"from": hub.Slot(now.Add(-time.Duration(hours) * time.Hour)), "to": hub.Slot(now)})
}
