package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/sync/outbox"
	"github.com/campusedge/campusedge/sync/schooldata"
	"github.com/campusedge/campusedge/sync/wire"
)

// Register adds the edge's sync endpoints and metrics:
//
//	GET  /api/v1/sync                         backlog, oldest record age, last success, link (admin)
//	POST /api/v1/sync/enrol                   {"token"}: enrol with the -cloud hub (admin)
//	POST /api/v1/sync/records                 {"kind","payload"}: append to the outbox (admin)
//	GET  /api/v1/sync/roster[?format=csv]     what arrived by downlink (admin)
//	GET  /api/v1/sync/timetable[?format=csv]
func (u *Uplink) Register(s *api.Server) {
	gauge := func(name, help string, f func(Status) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			st, err := u.Status()
			if err != nil {
				return -1
			}
			return f(st)
		})
	}
	s.Registry().MustRegister(
		gauge("campusedge_sync_backlog_records", "Outbox records not yet acknowledged by the hub.", func(s Status) float64 { return float64(s.Backlog) }),
		gauge("campusedge_sync_oldest_record_age_seconds", "Age (edge clock) of the oldest unacknowledged record.", func(s Status) float64 { return s.OldestAgeSecs }),
		gauge("campusedge_sync_last_success_timestamp_seconds", "Unix time of the last successful sync with the hub (0: never).", func(s Status) float64 {
			if s.LastSuccess.IsZero() {
				return 0
			}
			return float64(s.LastSuccess.Unix())
		}),
		gauge("campusedge_sync_link_up", "1 when the last sync with the hub succeeded.", func(s Status) float64 {
			if s.Link == "up" {
				return 1
			}
			return 0
		}),
		gauge("campusedge_sync_sent_bytes", "Compressed batch bytes sent since start.", func(s Status) float64 { return float64(s.SentBytes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "campusedge_outbox_commits_total", Help: "Group commits (fsyncs) of the outbox writer."},
			func() float64 { return float64(u.cfg.Outbox.Commits()) }),
	)
	s.HandleFunc("GET /api/v1/sync", s.Admin(u.getStatus))
	s.HandleFunc("POST /api/v1/sync/enrol", s.Admin(u.postEnrol))
	s.HandleFunc("POST /api/v1/sync/records", s.Admin(u.postRecord))
	s.HandleFunc("GET /api/v1/sync/roster", s.Admin(u.getDoc(schooldata.KindRoster)))
	s.HandleFunc("GET /api/v1/sync/timetable", s.Admin(u.getDoc(schooldata.KindTimetable)))
}

func (u *Uplink) getStatus(w http.ResponseWriter, r *http.Request) {
	st, err := u.Status()
	if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "store_error", "could not read the outbox: "+err.Error())
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, st)
}

func (u *Uplink) postEnrol(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Token string `json:"token"`
	}
	if !httpapi.DecodeJSON(w, r, 4<<10, &req) {
		return
	}
	if u.cfg.Hub == "" {
		httpapi.WriteError(w, http.StatusConflict, "no_cloud", "edged runs without -cloud; restart it with -cloud URL of the city hub, then enrol")
		return
	}
	if req.Token == "" || len(req.Token) > 256 {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_token", "token must be the one-time enrolment token from the city (cityhub enrol-token)")
		return
	}
	e, err := Enrol(r.Context(), u.cfg.DB, u.cfg.Client, u.cfg.Hub, req.Token, u.cfg.Identity, u.cfg.CloudCA)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadGateway, "enrol_failed", err.Error())
		return
	}
	// Connections made under a previous enrolment's trust are not reused.
	u.cfg.Client.CloseIdleConnections()
	u.log.Info("enrolled with the city", "hub", e.Hub, "school", e.School, "hub_trust", e.HubTrust, "hub_pin", e.HubPin)
	u.Wake()
	httpapi.WriteJSON(w, http.StatusOK, e)
}

func (u *Uplink) postRecord(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Kind    string          `json:"kind"`
		Payload json.RawMessage `json:"payload"`
	}
	if !httpapi.DecodeJSON(w, r, wire.MaxPayloadBytes+1024, &req) {
		return
	}
	rec, err := u.cfg.Outbox.Append(r.Context(), req.Kind, req.Payload)
	switch {
	case errors.Is(err, outbox.ErrInvalid):
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_record", err.Error())
		return
	case err != nil:
		// The store's failure, not the record's: a full disk above all.
		noSpace := fsutil.IsNoSpace(err)
		if noSpace && u.cfg.OnNoSpace != nil {
			u.cfg.OnNoSpace()
		}
		u.log.Error("record not saved", "kind", req.Kind, "err", err)
		httpapi.WriteNotSaved(w, noSpace, 5, "the record", err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"seq": rec.Seq, "id": rec.ID, "at": time.UnixMilli(rec.At).UTC()})
}

func (u *Uplink) getDoc(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		raw, err := Doc(u.cfg.DB, kind)
		if err != nil {
			httpapi.WriteError(w, http.StatusInternalServerError, "store_error", err.Error())
			return
		}
		if raw == nil {
			httpapi.WriteError(w, http.StatusNotFound, "not_synced", "no "+kind+" has arrived from the city yet; GET /api/v1/sync shows the link")
			return
		}
		if r.URL.Query().Get("format") != "csv" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(raw)
			return
		}
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		// A BOM first: Chinese Excel and WPS read a CSV without one as GBK.
		_, _ = io.WriteString(w, "\ufeff")
		switch kind {
		case schooldata.KindRoster:
			var ro schooldata.Roster
			if err := json.Unmarshal(raw, &ro); err == nil {
				_ = schooldata.WriteRosterCSV(w, &ro)
			}
		case schooldata.KindTimetable:
			var tt schooldata.Timetable
			if err := json.Unmarshal(raw, &tt); err == nil {
				_ = schooldata.WriteTimetableCSV(w, &tt)
			}
		}
	}
}

// Check is the edge's /healthz check for sync: degraded when the hub
// refuses this edge, or when records have waited more than a day.
func (u *Uplink) Check(context.Context) error {
	st, err := u.Status()
	if err != nil {
		return err
	}
	if st.Link == "refused" {
		return fmt.Errorf("the hub refuses this edge: %s", st.LastError)
	}
	if st.OldestAgeSecs > 24*3600 {
		return fmt.Errorf("%d records have waited %.0f h for the city (link %s)", st.Backlog, st.OldestAgeSecs/3600, st.Link)
	}
	return nil
}
