// Package recorder records live lessons: the master's tracks of each live
// session are written, as they are forwarded, to a WebM file
// (classroom/record: no transcoding) and, when the session ends, imported
// into the resource cache as a micro-lesson that any classroom replays and
// seeks at /media/{id}.
//
// The forwarding path is never slowed: the SFU hands each packet to a
// part's bounded queue with a non-blocking send, and a full queue drops
// the packet for the recording only (counted as queue_drops). One part is
// one master publisher's connection: a teacher who reconnects, or an edge
// restart (the session is restored from classroom/livestate), starts the
// next part. The parts stay on disk until the session ends; then they are
// joined into one lesson (record.Join: each part follows the last frame of
// the one before; the time nothing was recorded is not in the file) and
// that one file is imported.
//
// A crash or power cut does not lose the part being written: the muxer
// writes each frame as it comes, in Clusters of unknown size, and the file
// is fsynced every syncEvery. At the next start the part is recovered:
// its frames up to where it was torn are written again as a finished part
// (record.Join of the one file: cues, duration). Lost at most: after
// SIGKILL, the frames still queued or in the reorder window (well under a
// second); after a power cut, what was written since the last fsync
// (syncEvery) as well.
//
// On disk, under DATA/recordings:
//
//	<session>-<part>.json          the part's catalogue fields, session,
//	                               and when it began (written first)
//	<session>-<part>.webm.partial  being written; recovered at start-up
//	                               into <session>-<part>.webm
//	<session>-<part>.webm          a finished or recovered part, kept until
//	                               the session ends
//	<session>-lesson.joining       the parts being joined (removed at
//	                               start-up: the join is done again)
//	<session>-lesson.webm / .json  the joined lesson (the parts are then
//	                               removed); imported into the cache, then
//	                               removed. One left by a crash or a failed
//	                               import is imported at the next start-up.
//
// At start-up (Start, after the live sessions are restored) the parts of a
// session that is not live any more are joined and imported; those of a
// restored session wait for its end.
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
	// recShutdownWait bounds how long edge shutdown waits for parts to be
	// saved and joins and imports under way; what is not done by then is
	// done at the next start-up.
	recShutdownWait = 20 * time.Second

	// syncEvery is how often the part being written is fsynced: a power
	// cut loses at most this much of it.
	syncEvery = time.Second

	partialSuffix = ".webm.partial"
)

// Recording states, per part and per session.
const (
	StateOff         = "off"          // the session opted out ("record": false)
	StateUnavailable = "unavailable"  // this edge has no lesson store
	StateWaiting     = "waiting"      // live, but the master has not published yet
	StateRecording   = "recording"    // frames are being written
	StateFinalising  = "finalising"   // the file is being closed and imported
	StateSaved       = "saved"        // finished and on disk: joined into the lesson when the session ends
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
	// MediaID is the micro-lesson: the parts joined.
	MediaID string `json:"media_id,omitempty"`
	// Parts are the parts recorded since this edge started (a part from
	// before a restart is in Lesson).
	Parts []PartStatus `json:"parts,omitempty"`
	// Lesson is the recorded lesson once its parts are joined and imported.
	Lesson *Lesson `json:"lesson,omitempty"`
}

// Lesson is a session's recording in the catalogue: its parts, one after
// the other in one micro-lesson, and the gaps between them.
type Lesson struct {
	MediaID         string       `json:"media_id"`
	Title           string       `json:"title"`
	DurationSeconds float64      `json:"duration_seconds"`
	Parts           []LessonPart `json:"parts"`
	// Gaps are where a part ends and the next begins: a restart of the
	// edge or a teacher's reconnect. Nothing of the gap is in the file.
	Gaps []Gap `json:"gaps,omitempty"`
	// Separate is true when the parts could not be one file (the teacher
	// came back with another video codec): each part is its own
	// micro-lesson ("… (part 2)"), MediaID the first.
	Separate bool `json:"separate,omitempty"`
}

// LessonPart is one part in the joined lesson.
type LessonPart struct {
	Part int `json:"part"`
	// OffsetSeconds is where the part begins in the lesson's file.
	OffsetSeconds   float64 `json:"offset_seconds"`
	DurationSeconds float64 `json:"duration_seconds"`
	// Recovered says the part was cut off by a crash or power cut and
	// recovered at the next start: it ends up to syncEvery early.
	Recovered bool `json:"recovered,omitempty"`
	// MediaID is the part's own micro-lesson when Separate.
	MediaID string `json:"media_id,omitempty"`
}

// Gap is a break between two parts.
type Gap struct {
	// AtSeconds is where, in the lesson's file, the next part begins.
	AtSeconds float64 `json:"at_seconds"`
	// MissingSeconds is the time between the two parts that was not
	// recorded (0 when unknown: a part cut off before its start was kept).
	MissingSeconds float64 `json:"missing_seconds"`
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
	lessons   map[string]*Lesson // joined and imported, for Status; goes with the session
	closed    bool

	// lessonMu serialises work on the files of the recordings directory
	// that outlives a part: recovery at start-up and joining parts into
	// a lesson.
	lessonMu sync.Mutex

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
	// last is the highest part number used: parts from before a restart
	// are on disk, so a restored session goes on with the next number.
	last int
}

func New(store LessonStore, dir string, sessions *session.Manager, log *slog.Logger, opts ...Option) *Manager {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Manager{log: log, dir: dir, store: store, sessions: sessions, ctx: ctx, cancel: cancel, bySession: map[string]*sessionRec{}, lessons: map[string]*Lesson{}, queueLen: recQueuePackets,
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
	return r
}

// Start recovers what the last run left in the recordings directory (in
// the background): parts cut off by a crash are repaired, and the parts
// of sessions that are not live are joined and imported. Call it once,
// after the live sessions are restored, so that a restored session's
// parts wait for its end.
func (r *Manager) Start() {
	if !r.enabled() {
		return
	}
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.recover() }()
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
		sr = &sessionRec{last: r.lastPartOnDisk(t.Room)}
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
		sr.last++
		p = &part{r: r, sess: s, n: sr.last, pub: t.Publisher, pubDone: t.PublisherDone, expected: t.Expected,
			q: make(chan item, r.queueLen), changed: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), state: StateWaiting, began: time.Now()}
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
	delete(r.lessons, id)
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
	r.endLesson(id, parts)
}

// endLesson finishes the session's parts and, once they are saved, joins
// every part on disk (also those from before a restart) into the lesson.
func (r *Manager) endLesson(id string, parts []*part) {
	for _, p := range parts {
		p.finish()
	}
	r.mu.Lock()
	if r.closed {
		// Shutting down: the parts stay on disk and the lesson is joined
		// at the next start (the session has ended, so it is not restored).
		r.mu.Unlock()
		return
	}
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		for _, p := range parts {
			<-p.done
		}
		r.joinLesson(id)
	}()
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
	r.endLesson(id, parts)
	r.log.Info("lesson recording stopped by request", "session", id)
}

// Close finalises every part being recorded and keeps it on disk (a
// session restored at the next start goes on with its next part; the
// others are joined and imported at that start), and waits (bounded) for
// joins and imports under way.
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
	if l := r.lessons[id]; l != nil {
		lc := *l
		st.Lesson = &lc
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
	if st.Lesson != nil {
		st.MediaID = st.Lesson.MediaID
	}
	if n := len(st.Parts); n > 0 {
		last := st.Parts[n-1]
		st.State, st.Reason = last.State, last.Reason
		if st.State == StateSaved && (s.State == session.StateEnded || stopped) {
			st.State, st.Reason = StateFinalising, "" // being joined and imported
		}
	} else if st.Lesson != nil {
		st.State = StateDone
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
