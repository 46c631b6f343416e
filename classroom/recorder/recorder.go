// Package recorder records live lessons: the master's tracks of each live
// session are written, as they are forwarded, to a WebM file
// (classroom/record: no transcoding) and, when the session ends, imported into the resource cache as a new
// micro-lesson that any classroom replays and seeks at /media/{id}.
//
// The forwarding path is never slowed: the SFU hands each packet to a
// part's bounded queue with a non-blocking send, and a full queue drops
// the packet for the recording only (counted as queue_drops). One part is
// one master publisher's connection: if the teacher reconnects, the next
// connection records a new part, imported as "… (part 2)".
//
// On disk, under DATA/recordings:
//
//	<session>-<part>.webm.partial  being written; removed at start-up (a
//	                               crash left it without its end: never
//	                               served as a lesson)
//	<session>-<part>.json          the micro-lesson's catalogue fields,
//	                               written before the rename below
//	<session>-<part>.webm          complete (fsynced, renamed); imported
//	                               into the cache, then both files removed.
//	                               One left by a crash or a failed import
//	                               is imported at the next start-up.
package recorder

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/media"
)

// LessonStore keeps recorded lessons: the resource cache's AddLocal
// (hash, store content-addressed, catalogue as a local item).
type LessonStore interface {
	AddLocal(ctx context.Context, r io.Reader, declared int64, meta media.Item) (media.Item, error)
}

const (
	// recQueuePackets bounds a part's queue: about 6 s of 2.5 Mbit/s video
	// with its audio, enough to ride out a disk hiccup.
	recQueuePackets = 4096
	// recTrackWait is how long a part waits for every announced track
	// (video and audio start a few ms apart) before it records what came.
	recTrackWait = 3 * time.Second
	// recShutdownWait bounds how long edge shutdown waits for imports; a
	// file not imported by then is imported at the next start-up.
	recShutdownWait = 20 * time.Second

	partialSuffix = ".webm.partial"
)

// Recording states, per part and per session.
const (
	StateOff         = "off"          // the session opted out ("record": false)
	StateUnavailable = "unavailable"  // this edge has no lesson store
	StateWaiting     = "waiting"      // live, but the master has not published yet
	StateRecording   = "recording"    // frames are being written
	StateFinalising  = "finalising"   // the file is being closed and imported
	StateDone        = "done"         // imported: media_id is the micro-lesson
	StateNotRecorded = "not_recorded" // the lesson could not be recorded (reason says why)
	StateFailed      = "failed"       // an error lost the recording or its import (reason)
)

// Status is the "recording" field of GET /api/v1/sessions/{id}.
type Status struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Totals over the parts.
	Bytes       int64  `json:"bytes"`
	VideoFrames int    `json:"video_frames"`
	AudioFrames int    `json:"audio_frames"`
	QueueDrops  uint64 `json:"queue_drops"`
	// MediaID is the micro-lesson of the first part that was imported.
	MediaID string       `json:"media_id,omitempty"`
	Parts   []PartStatus `json:"parts,omitempty"`
}

// PartStatus is one publisher connection's recording.
type PartStatus struct {
	Part        int    `json:"part"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
	VideoCodec  string `json:"video_codec,omitempty"`
	Bytes       int64  `json:"bytes"`
	VideoFrames int    `json:"video_frames"`
	AudioFrames int    `json:"audio_frames"`
	// QueueDrops are packets the recorder's queue had no room for (the
	// disk was slower than the lesson); forwarding lost none of them.
	QueueDrops uint64 `json:"queue_drops"`
	// SkippedFrames are frames the recorder left out: before the first
	// keyframe, or too late to keep the file in order.
	SkippedFrames   int     `json:"skipped_frames"`
	DurationSeconds float64 `json:"duration_seconds"`
	MediaID         string  `json:"media_id,omitempty"`
}

// Option configures a Manager.
type Option func(*Manager)

// WithTitles dates recorded lessons' titles in the school's time zone and
// language ("zh-CN": 数学 — 2026年12月2日 09:30; else English).
func WithTitles(loc *time.Location, lang string) Option {
	return func(r *Manager) {
		if loc != nil {
			r.loc = loc
		}
		r.lang = lang
	}
}

// Manager records the lessons of every session.
type Manager struct {
	log      *slog.Logger
	dir      string
	store    LessonStore
	sessions *session.Manager
	ctx      context.Context // imports; cancelled when shutdown gives up waiting
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	// bySession is each session's recording, live or ended: an ended
	// session's entry is what GET /api/v1/sessions/{id} reports as its
	// "recording" (states, counts, the micro-lesson's id), so it stays as
	// long as the session manager keeps the session (session.MaxEndedSessions,
	// session.EndedRetention) and goes with it (OnForget). A finished part
	// keeps only that summary: it lets go of its tracks (whose keyframe
	// requests hold the publisher's forwarder, its cached video and its
	// peer connection), its WebM muxer and its queue (release).
	// loc and lang make recording titles: the date in the school's zone
	// and language (WithTitles).
	loc  *time.Location
	lang string

	mu        sync.Mutex
	bySession map[string]*sessionRec
	closed    bool

	// Edge-wide counters for /metrics.
	bytesTotal, dropsTotal              atomic.Uint64
	doneTotal, failedTotal, notRecTotal atomic.Uint64
	active                              atomic.Int64
	// parts counts parts not yet released: a recorder with its queue,
	// tracks and muxer. Zero when nothing is being recorded.
	parts atomic.Int64

	queueLen int // per part; recQueuePackets unless a test shrinks it
	// beforeWrite, if set, runs before the recorder takes each packet off
	// its queue: tests stall it like a slow disk.
	beforeWrite func()
}

type sessionRec struct {
	stopped bool
	parts   []*part
}

func New(store LessonStore, dir string, sessions *session.Manager, log *slog.Logger, opts ...Option) *Manager {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Manager{log: log, dir: dir, store: store, sessions: sessions, ctx: ctx, cancel: cancel, bySession: map[string]*sessionRec{}, queueLen: recQueuePackets,
		loc: time.Local, lang: "en"}
	for _, o := range opts {
		o(r)
	}
	if !r.enabled() {
		log.Warn("lesson recording is off on this edge: no lesson store or recordings directory configured")
		return r
	}
	sessions.OnEnd(r.sessionEnded)
	sessions.OnForget(r.forget)
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.recover() }()
	return r
}

func (r *Manager) enabled() bool { return r.store != nil && r.dir != "" }

// Tap is the SFU's tap: it records the master source's tracks of a
// session that wants recording.
func (r *Manager) Tap(t sfu.TapTrack) sfu.TapSink {
	if t.Source != sfu.SourceMaster || !r.enabled() {
		return nil
	}
	s, err := r.sessions.Get(t.Room)
	if err != nil || !s.Record || s.State == session.StateEnded {
		return nil
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	sr := r.bySession[t.Room]
	if sr == nil {
		sr = &sessionRec{}
		r.bySession[t.Room] = sr
	}
	if sr.stopped {
		r.mu.Unlock()
		return nil
	}
	var p *part
	for _, x := range sr.parts {
		if x.pub == t.Publisher {
			p = x
		}
	}
	if p == nil {
		p = &part{r: r, sess: s, n: len(sr.parts) + 1, pub: t.Publisher, pubDone: t.PublisherDone, expected: t.Expected,
			q: make(chan item, r.queueLen), changed: make(chan struct{}, 1), stop: make(chan struct{}), state: StateWaiting, began: time.Now()}
		sr.parts = append(sr.parts, p)
		r.parts.Add(1)
		r.wg.Add(1)
		go func() { defer r.wg.Done(); p.run() }()
	}
	r.mu.Unlock()
	return p.addTrack(t)
}

// forget drops the recording summary of a session the manager forgot
// (Manager.OnForget). Its parts have finished: the session ended first.
func (r *Manager) forget(id string) {
	r.mu.Lock()
	delete(r.bySession, id)
	r.mu.Unlock()
}

// summaries is how many sessions' recordings are known (live or ended).
func (r *Manager) summaries() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bySession)
}

// sessionEnded finalises the session's recording (Manager.OnEnd).
func (r *Manager) sessionEnded(id string) {
	r.mu.Lock()
	sr := r.bySession[id]
	var parts []*part
	if sr != nil {
		parts = append(parts, sr.parts...)
	}
	r.mu.Unlock()
	for _, p := range parts {
		p.finish()
	}
}

// Stop ends recording of a live session (the stop API): what was
// recorded is finalised and imported, and nothing more is recorded.
func (r *Manager) Stop(id string) {
	r.mu.Lock()
	sr := r.bySession[id]
	if sr == nil {
		if _, err := r.sessions.Get(id); err != nil {
			// Forgotten meanwhile: an entry made now would outlive it.
			r.mu.Unlock()
			return
		}
		sr = &sessionRec{}
		r.bySession[id] = sr
	}
	sr.stopped = true
	parts := append([]*part(nil), sr.parts...)
	r.mu.Unlock()
	for _, p := range parts {
		p.finish()
	}
	r.log.Info("lesson recording stopped by request", "session", id)
}

// Close finalises every recording and waits (bounded) for the imports.
func (r *Manager) Close() {
	r.mu.Lock()
	r.closed = true
	var parts []*part
	for _, sr := range r.bySession {
		parts = append(parts, sr.parts...)
	}
	r.mu.Unlock()
	for _, p := range parts {
		p.finish()
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(recShutdownWait):
		r.log.Warn("shutdown did not wait for every recording's import; finished files are imported at the next start", "dir", r.dir)
		r.cancel()
		<-done
	}
	r.cancel()
}

// Status reports the recording of session id (session.Handlers.Recording).
func (r *Manager) Status(id string) any {
	s, err := r.sessions.Get(id)
	if err != nil {
		return nil
	}
	st := Status{State: StateWaiting}
	switch {
	case !r.enabled():
		st.State, st.Reason = StateUnavailable, "this edge has no lesson store configured"
		return st
	case !s.Record:
		st.State, st.Reason = StateOff, `the session was created with "record": false`
		return st
	}
	r.mu.Lock()
	sr := r.bySession[id]
	var parts []*part
	stopped := false
	if sr != nil {
		parts, stopped = append(parts, sr.parts...), sr.stopped
	}
	r.mu.Unlock()
	for _, p := range parts {
		ps := p.status()
		st.Parts = append(st.Parts, ps)
		st.Bytes += ps.Bytes
		st.VideoFrames += ps.VideoFrames
		st.AudioFrames += ps.AudioFrames
		st.QueueDrops += ps.QueueDrops
		if st.MediaID == "" {
			st.MediaID = ps.MediaID
		}
	}
	if n := len(st.Parts); n > 0 {
		last := st.Parts[n-1]
		st.State, st.Reason = last.State, last.Reason
	} else if s.State == session.StateEnded || stopped {
		st.State, st.Reason = StateNotRecorded, "the master teacher never published while recording was on"
	}
	if stopped && st.State == StateRecording {
		st.State = StateFinalising
	}
	return st
}

// Collectors are the recorder's metrics.
func (r *Manager) Collectors() []prometheus.Collector {
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "campusedge_recordings_active", Help: "Lessons being recorded now."},
			func() float64 { return float64(r.active.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "campusedge_live_recorders",
			Help: "Recording parts holding a recorder (queue, tracks, WebM muxer): waiting, recording or importing. 0 when no class is live."},
			func() float64 { return float64(r.parts.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "campusedge_recording_summaries",
			Help: "Sessions whose recording outcome is kept for the API (live ones, and ended ones while the session is kept)."},
			func() float64 { return float64(r.summaries()) }),
		counter("campusedge_recording_bytes_total", "Bytes written to lesson recordings.", &r.bytesTotal),
		counter("campusedge_recording_queue_drops_total", "Packets a lesson recorder had no queue room for (slow disk); live forwarding lost none.", &r.dropsTotal),
		counter("campusedge_recordings_done_total", "Lessons recorded and imported into the resource cache.", &r.doneTotal),
		counter("campusedge_recordings_failed_total", "Recordings lost or not imported because of an error (see the log).", &r.failedTotal),
		counter("campusedge_recordings_not_recorded_total", "Lessons that could not be recorded (H264 video, no video, no keyframe).", &r.notRecTotal),
	}
}

// Register adds the recorder's metrics and POST
// /api/v1/sessions/{id}/recording/stop, which the admin (isAdmin) or the
// session's master teacher may call.
func (m *Manager) Register(srv *api.Server, isAdmin func(token string) bool) {
	srv.Registry().MustRegister(m.Collectors()...)
	srv.HandleFunc("POST /api/v1/sessions/{id}/recording/stop", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !session.ValidID(id) {
			httpapi.WriteError(w, http.StatusNotFound, "not_found", "no such session (session ids are 24 hex characters)")
			return
		}
		admin, g, ok := session.Caller(w, r, m.sessions, isAdmin, id)
		if !ok {
			return
		}
		if !admin && g.Role != session.RoleMaster {
			httpapi.WriteError(w, http.StatusForbidden, "forbidden", "only the admin or the master teacher can stop a recording")
			return
		}
		if _, err := m.sessions.Get(id); err != nil {
			session.WriteError(w, err)
			return
		}
		m.Stop(id)
		httpapi.WriteJSON(w, http.StatusOK, m.Status(id))
	})
}
