package cache

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/media"
)

// maxPolicyBody bounds the JSON bodies of the policy API.
const maxPolicyBody = 64 << 10

func (c *Cache) registerPolicy(s *api.Server) {
	s.HandleFunc("GET /api/v1/cache", s.Admin(c.getStatus))
	s.HandleFunc("PUT /api/v1/cache/pins/{id}", s.Admin(c.putPin))
	s.HandleFunc("DELETE /api/v1/cache/pins/{id}", s.Admin(c.deletePin))
	s.HandleFunc("GET /api/v1/cache/timetable", s.Admin(c.getTimetable))
	s.HandleFunc("PUT /api/v1/cache/timetable/{id}", s.Admin(c.putTimetable))
	s.HandleFunc("DELETE /api/v1/cache/timetable/{id}", s.Admin(c.deleteTimetable))
	s.HandleFunc("PUT /api/v1/cache/bandwidth", s.Admin(c.putBandwidth))
	s.HandleFunc("POST /api/v1/media", s.Admin(c.postMedia))
}

// ItemProgress is one item the policy wants, or one in flight or failed.
type ItemProgress struct {
	ID      string   `json:"id"`
	Title   string   `json:"title"`
	Size    int64    `json:"size"`
	State   State    `json:"state"`
	Bytes   int64    `json:"bytes"`
	Reasons []string `json:"reasons,omitempty"`
	// Need is the earliest timetabled start, if any.
	Need        time.Time `json:"need,omitzero"`
	Downloading bool      `json:"downloading"`
	// RateBps is the download's average rate so far, bits per second.
	RateBps   int64     `json:"rate_bps,omitempty"`
	Error     string    `json:"error,omitempty"`
	NextRetry time.Time `json:"next_retry,omitzero"`
}

// Status is the body of GET /api/v1/cache.
type Status struct {
	Usage     Usage `json:"usage"`
	Bandwidth struct {
		Schedule string `json:"schedule"`
		// NowBps is the cap in force now (0 = none).
		NowBps int64 `json:"now_bps"`
	} `json:"bandwidth"`
	Prefetch struct {
		Wanted      int   `json:"wanted"`
		Cached      int   `json:"cached"`
		BytesWanted int64 `json:"bytes_wanted"`
		BytesDone   int64 `json:"bytes_done"`
		Active      int   `json:"active"`
		Failed      int   `json:"failed"`
		HorizonDays int   `json:"horizon_days"`
	} `json:"prefetch"`
	Items   []ItemProgress `json:"items"`
	Uploads []UploadStatus `json:"uploads"`
	Sync    SyncStatus     `json:"sync"`
}

// UploadStatus is a queued local resource.
type UploadStatus struct {
	UploadEntry
	Size  int64  `json:"size"`
	Error string `json:"error,omitempty"`
}

// Progress computes the cache's status; the console and tests read it.
func (c *Cache) Progress() (Status, error) {
	var st Status
	u, err := c.space.usage()
	if err != nil {
		return st, err
	}
	st.Usage = u
	sc, now := c.shaper.current()
	st.Bandwidth.Schedule, st.Bandwidth.NowBps = sc.String(), now
	st.Prefetch.HorizonDays = int(c.cfg.PrefetchHorizon / (24 * time.Hour))
	want, err := c.policy.wanted(time.Now())
	if err != nil {
		return st, err
	}
	seen := map[string]bool{}
	st.Items = []ItemProgress{}
	for i := range want {
		p := c.itemProgress(want[i].Item, &want[i])
		seen[p.ID] = true
		st.Prefetch.Wanted++
		st.Prefetch.BytesWanted += p.Size
		st.Prefetch.BytesDone += min(p.Bytes, p.Size)
		if p.State == Cached {
			st.Prefetch.Cached++
		}
		if p.Downloading {
			st.Prefetch.Active++
		}
		if p.Error != "" {
			st.Prefetch.Failed++
		}
		st.Items = append(st.Items, p)
	}
	// Read-through downloads and failures the policy did not ask for.
	for _, id := range c.downloads.busyOrFailed() {
		if seen[id] {
			continue
		}
		seen[id] = true
		if it, ok, err := c.index.item(id); err == nil && ok {
			st.Items = append(st.Items, c.itemProgress(it, nil))
		}
	}
	if st.Uploads, err = c.uploadStatus(); err != nil {
		return st, err
	}
	st.Sync = c.index.status()
	return st, nil
}

// itemProgress is what the status says of one item (w is nil for one the
// policy does not want).
func (c *Cache) itemProgress(it media.Item, w *Want) ItemProgress {
	s, n := c.layout.state(it)
	p := ItemProgress{ID: it.ID, Title: it.Title, Size: it.Size, State: s, Bytes: n}
	if w != nil {
		p.Reasons, p.Need = w.Reasons, w.Need
	}
	if d := c.downloads.running(it.ID); d != nil {
		p.Downloading = true
		ds := d.snapshot()
		p.Bytes = max(p.Bytes, ds.written)
		if el := time.Since(d.started).Seconds(); el > 0.5 {
			p.RateBps = int64(float64(ds.written) * 8 / el)
		}
	}
	if msg, ok := c.downloads.lastFailure(it.ID); ok {
		p.Error = msg
	}
	if next, ok := c.prefetch.nextRetry(it.ID); ok {
		p.NextRetry = next
	}
	return p
}

// uploadStatus lists the queued uploads with their sizes and last errors.
func (c *Cache) uploadStatus() ([]UploadStatus, error) {
	q, err := c.uploads.uploadQueue()
	if err != nil {
		return nil, err
	}
	out := []UploadStatus{}
	for _, e := range q {
		us := UploadStatus{UploadEntry: e, Error: c.uploads.lastError(e.ID)}
		if it, ok, _ := c.index.item(e.ID); ok {
			us.Size = it.Size
		}
		out = append(out, us)
	}
	return out, nil
}

func (c *Cache) getStatus(w http.ResponseWriter, r *http.Request) {
	st, err := c.Progress()
	if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", "could not read the cache state: "+err.Error())
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, st)
}

func (c *Cache) putPin(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !media.ValidID(id) {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_id", "not a catalogue id")
		return
	}
	var body struct {
		By string `json:"by"`
	}
	if r.ContentLength != 0 && !httpapi.DecodeJSON(w, r, maxPolicyBody, &body) {
		return
	}
	if len(body.By) > media.MaxFieldLen {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_by", "by is longer than 128 bytes")
		return
	}
	if body.By == "" {
		body.By = "admin"
	}
	p, err := c.SetPin(id, body.By)
	switch {
	case errors.Is(err, ErrUnknownItem):
		httpapi.WriteError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, ErrPinOverQuota):
		httpapi.WriteError(w, http.StatusInsufficientStorage, "pin_over_quota", err.Error())
	case err != nil:
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
	default:
		httpapi.WriteJSON(w, http.StatusOK, p)
	}
}

func (c *Cache) deletePin(w http.ResponseWriter, r *http.Request) {
	found, err := c.Unpin(r.PathValue("id"))
	switch {
	case err != nil:
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
	case !found:
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no pin for "+r.PathValue("id"))
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (c *Cache) getTimetable(w http.ResponseWriter, r *http.Request) {
	tt, err := c.Timetable()
	if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"entries": tt})
}

func (c *Cache) putTimetable(w http.ResponseWriter, r *http.Request) {
	var e TimetableEntry
	if !httpapi.DecodeJSON(w, r, maxPolicyBody, &e) {
		return
	}
	e.ID = r.PathValue("id")
	if err := c.PutTimetable([]TimetableEntry{e}); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_entry", err.Error())
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, e)
}

func (c *Cache) deleteTimetable(w http.ResponseWriter, r *http.Request) {
	found, err := c.DeleteTimetable(r.PathValue("id"))
	switch {
	case err != nil:
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
	case !found:
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no timetable entry "+r.PathValue("id"))
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (c *Cache) putBandwidth(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Schedule string `json:"schedule"`
	}
	if !httpapi.DecodeJSON(w, r, maxPolicyBody, &body) {
		return
	}
	sc, err := ParseSchedule(body.Schedule)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_schedule", err.Error())
		return
	}
	c.shaper.set(sc)
	c.log.Info("bandwidth schedule changed", "schedule", sc.String())
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"schedule": sc.String()})
}

func (c *Cache) postMedia(w http.ResponseWriter, r *http.Request) {
	meta, err := uploadMeta(r)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_upload", err.Error())
		return
	}
	body := http.MaxBytesReader(w, r.Body, c.cfg.UploadMax)
	it, err := c.AddLocal(r.Context(), body, r.ContentLength, meta)
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, errTooLarge) || errors.As(err, &mbe):
		httpapi.WriteError(w, http.StatusRequestEntityTooLarge, "too_large", "the upload is larger than the limit of "+formatBytes(c.cfg.UploadMax)+" (-cache-upload-max)")
	case errors.Is(err, ErrNoSpace) || fsutil.IsNoSpace(err):
		// Nothing was kept: the teacher's page sends the file again once
		// space is freed.
		w.Header().Set("Retry-After", "60")
		httpapi.WriteError(w, http.StatusInsufficientStorage, "disk_full", "the upload was not saved: "+err.Error()+"; free disk space (see GET /healthz) and send it again")
	case errors.Is(err, media.ErrInvalid):
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_upload", err.Error())
	case err != nil:
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", "could not store the upload: "+err.Error())
	default:
		w.Header().Set("Location", "/media/"+it.ID)
		httpapi.WriteJSON(w, http.StatusCreated, it)
	}
}

func formatBytes(n int64) string { return strconv.FormatInt(n, 10) + " bytes" }
