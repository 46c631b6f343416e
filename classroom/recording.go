package classroom

// Lesson recording: the master's tracks of each live session are written,
// as they are forwarded, to a WebM file (classroom/record: no transcoding)
// and, when the session ends, imported into the resource cache as a new
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

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/classroom/record"
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
	RecOff         = "off"          // the session opted out ("record": false)
	RecUnavailable = "unavailable"  // this edge has no lesson store
	RecWaiting     = "waiting"      // live, but the master has not published yet
	RecRecording   = "recording"    // frames are being written
	RecFinalising  = "finalising"   // the file is being closed and imported
	RecDone        = "done"         // imported: media_id is the micro-lesson
	RecNotRecorded = "not_recorded" // the lesson could not be recorded (reason says why)
	RecFailed      = "failed"       // an error lost the recording or its import (reason)
)

// RecordingStatus is the "recording" field of GET /api/v1/sessions/{id}.
type RecordingStatus struct {
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

// recorders records the lessons of every session.
type recorders struct {
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

func newRecorders(store LessonStore, dir string, sessions *session.Manager, log *slog.Logger) *recorders {
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorders{log: log, dir: dir, store: store, sessions: sessions, ctx: ctx, cancel: cancel, bySession: map[string]*sessionRec{}, queueLen: recQueuePackets}
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

func (r *recorders) enabled() bool { return r.store != nil && r.dir != "" }

// recover cleans up after a crash: partial files are removed (a WebM cut
// off mid-write has no cues and may end mid-frame: it is never served as a
// lesson), complete ones are imported.
func (r *recorders) recover() {
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		r.log.Error("cannot create the recordings directory; lessons will not be recorded", "dir", r.dir, "err", err)
		return
	}
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		r.log.Error("cannot read the recordings directory", "dir", r.dir, "err", err)
		return
	}
	for _, e := range ents {
		name := filepath.Join(r.dir, e.Name())
		switch {
		case strings.HasSuffix(e.Name(), partialSuffix):
			info, _ := e.Info()
			var size int64
			if info != nil {
				size = info.Size()
			}
			r.log.Warn("removing a recording cut off by a crash or power loss (incomplete WebM, not replayable)", "file", name, "bytes", size)
			if err := os.Remove(name); err != nil {
				r.log.Error("cannot remove a partial recording", "file", name, "err", err)
			}
		case strings.HasSuffix(e.Name(), ".json"):
			base := strings.TrimSuffix(name, ".json")
			if _, err := os.Stat(base + ".webm"); errors.Is(err, os.ErrNotExist) {
				_ = os.Remove(name) // metadata of a recording that never completed
				continue
			}
			var meta media.Item
			b, err := os.ReadFile(name)
			if err == nil {
				err = json.Unmarshal(b, &meta)
			}
			if err != nil {
				r.log.Error("unreadable metadata of a finished recording; import it by hand with POST /api/v1/media", "file", base+".webm", "err", err)
				continue
			}
			r.log.Info("importing a finished recording left from the last run", "file", base+".webm", "title", meta.Title)
			if it, err := r.importFile(base, meta); err != nil {
				r.log.Error("importing a finished recording failed; it stays on disk and is retried at the next start", "file", base+".webm", "err", err)
			} else {
				r.log.Info("recorded lesson in the catalogue", "media_id", it.ID, "title", it.Title, "bytes", it.Size)
			}
		}
	}
}

// importFile adds base.webm to the lesson store with meta, then removes
// base.webm and base.json.
func (r *recorders) importFile(base string, meta media.Item) (media.Item, error) {
	f, err := os.Open(base + ".webm")
	if err != nil {
		return media.Item{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return media.Item{}, err
	}
	it, err := r.store.AddLocal(r.ctx, &ctxReader{ctx: r.ctx, r: f}, info.Size(), meta)
	if err != nil {
		return media.Item{}, err
	}
	_ = f.Close()
	if err := errors.Join(os.Remove(base+".webm"), os.Remove(base+".json")); err != nil {
		r.log.Warn("imported recording could not be removed from the recordings directory", "file", base+".webm", "err", err)
	}
	return it, nil
}

// ctxReader stops a long import when the edge gives up waiting at shutdown.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// tap is the SFU's tap: it records the master source's tracks of a
// session that wants recording.
func (r *recorders) tap(t sfu.TapTrack) sfu.TapSink {
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
			q: make(chan item, r.queueLen), changed: make(chan struct{}, 1), stop: make(chan struct{}), state: RecWaiting, began: time.Now()}
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
func (r *recorders) forget(id string) {
	r.mu.Lock()
	delete(r.bySession, id)
	r.mu.Unlock()
}

// summaries is how many sessions' recordings are known (live or ended).
func (r *recorders) summaries() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bySession)
}

// sessionEnded finalises the session's recording (Manager.OnEnd).
func (r *recorders) sessionEnded(id string) {
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

// stopSession ends recording of a live session (the stop API): what was
// recorded is finalised and imported, and nothing more is recorded.
func (r *recorders) stopSession(id string) {
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
func (r *recorders) Close() {
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

// status reports the recording of session id (session.Handlers.Recording).
func (r *recorders) status(id string) any {
	s, err := r.sessions.Get(id)
	if err != nil {
		return nil
	}
	st := RecordingStatus{State: RecWaiting}
	switch {
	case !r.enabled():
		st.State, st.Reason = RecUnavailable, "this edge has no lesson store configured"
		return st
	case !s.Record:
		st.State, st.Reason = RecOff, `the session was created with "record": false`
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
		st.State, st.Reason = RecNotRecorded, "the master teacher never published while recording was on"
	}
	if stopped && st.State == RecRecording {
		st.State = RecFinalising
	}
	return st
}

// collectors are the recorder's metrics.
func (r *recorders) collectors() []prometheus.Collector {
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

// registerRecording adds POST /api/v1/sessions/{id}/recording/stop.
func (l *Live) registerRecording(srv *api.Server) {
	srv.Registry().MustRegister(l.rec.collectors()...)
	srv.HandleFunc("POST /api/v1/sessions/{id}/recording/stop", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !session.ValidID(id) {
			httpapi.WriteError(w, http.StatusNotFound, "not_found", "no such session (session ids are 24 hex characters)")
			return
		}
		tok, ok := httpapi.BearerToken(r)
		if !ok {
			httpapi.WriteError(w, http.StatusUnauthorized, "unauthorized", "send 'Authorization: Bearer <token>': the admin token or the session's master token")
			return
		}
		if l.isAdmin == nil || !l.isAdmin(tok) {
			g, err := l.Sessions.Authorize(id, tok)
			if err != nil {
				session.WriteAuthError(w, err)
				return
			}
			if g.Role != session.RoleMaster {
				httpapi.WriteError(w, http.StatusForbidden, "forbidden", "only the admin or the master teacher can stop a recording")
				return
			}
		}
		if _, err := l.Sessions.Get(id); err != nil {
			session.WriteError(w, err)
			return
		}
		l.rec.stopSession(id)
		httpapi.WriteJSON(w, http.StatusOK, l.rec.status(id))
	})
}

// item is one queued packet of a part.
type item struct {
	video bool
	pkt   *rtp.Packet
}

// part records one master publisher connection.
type part struct {
	r        *recorders
	sess     session.Session
	n        int
	pub      string
	pubDone  <-chan struct{} // nil once released
	expected int
	began    time.Time

	q        chan item     // nil once released
	changed  chan struct{} // a track arrived
	stop     chan struct{}
	stopOnce sync.Once
	dead     atomic.Bool // not recording (any more): sinks drop at once
	drops    atomic.Uint64
	bytes    atomic.Int64

	mu           sync.Mutex
	video, audio *sfu.TapTrack    // nil once released
	rec          *record.Recorder // nil once released (final holds its stats)
	videoCodec   string
	vIdx, aIdx   int
	state        string
	reason       string
	final        *record.Stats
	mediaID      string
}

func (p *part) log() *slog.Logger {
	return p.r.log.With("session", p.sess.ID, "part", p.n)
}

// addTrack takes a master track for this part, or refuses it (nil).
func (p *part) addTrack(t sfu.TapTrack) sfu.TapSink {
	mime := strings.ToLower(t.Codec.MimeType)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != RecWaiting && p.state != RecRecording {
		return nil // refused already (H264) or finished
	}
	if p.rec != nil {
		p.log().Info("a master track that started after recording began is not recorded", "codec", t.Codec.MimeType)
		return nil
	}
	switch t.Kind {
	case webrtc.RTPCodecTypeVideo:
		if p.video != nil {
			p.log().Info("a second master video track (screen share) is not recorded; the lesson file holds the first", "codec", t.Codec.MimeType)
			return nil
		}
		if mime != "video/vp8" && mime != "video/vp9" {
			p.state = RecNotRecorded
			p.reason = fmt.Sprintf("the lesson's video is %s, which WebM cannot carry: this lesson is NOT recorded. Have the teacher's browser or encoder send VP8 or VP9 to record it.", t.Codec.MimeType)
			p.dead.Store(true)
			p.log().Warn("lesson not recorded: "+p.reason, "codec", t.Codec.MimeType)
			p.r.notRecTotal.Add(1)
			go p.finish()
			return nil
		}
		p.video, p.videoCodec = &t, t.Codec.MimeType
	case webrtc.RTPCodecTypeAudio:
		if p.audio != nil || mime != "audio/opus" {
			return nil
		}
		p.audio = &t
	default:
		return nil
	}
	select {
	case p.changed <- struct{}{}:
	default:
	}
	return &partSink{p: p, q: p.q, video: t.Kind == webrtc.RTPCodecTypeVideo}
}

// partSink is the forwarding path's side: never blocks. It holds the
// queue itself, so the part can drop it when it finishes while the
// forwarder still holds the sink.
type partSink struct {
	p     *part
	q     chan<- item
	video bool
}

func (s *partSink) Packet(pkt *rtp.Packet) {
	if s.p.dead.Load() {
		return
	}
	select {
	case s.q <- item{video: s.video, pkt: pkt}:
	default:
		s.p.drops.Add(1)
		s.p.r.dropsTotal.Add(1)
	}
}

func (s *partSink) End() {}

func (p *part) finish() { p.stopOnce.Do(func() { close(p.stop) }) }

func (p *part) haveAll() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	if p.video != nil {
		n++
	}
	if p.audio != nil {
		n++
	}
	return p.video != nil && p.audio != nil || (p.expected > 0 && n >= p.expected)
}

func (p *part) setState(state, reason string) {
	p.mu.Lock()
	p.state, p.reason = state, reason
	p.mu.Unlock()
}

// run waits for the tracks, records until the part ends, then finalises
// and imports the file.
func (p *part) run() {
	defer p.release()
	wait := time.NewTimer(recTrackWait)
	defer wait.Stop()
waiting:
	for !p.haveAll() {
		select {
		case <-p.changed:
		case <-wait.C:
			break waiting
		case <-p.stop:
			break waiting
		case <-p.pubDone:
			break waiting
		}
	}
	p.mu.Lock()
	if p.state != RecWaiting { // refused (H264)
		p.mu.Unlock()
		return
	}
	if p.video == nil {
		p.state, p.reason = RecNotRecorded, "the master sent no VP8/VP9 video: a lesson without video is not recorded"
		p.mu.Unlock()
		p.log().Warn("lesson not recorded: " + p.reason)
		p.r.notRecTotal.Add(1)
		return
	}
	var tracks []record.Track
	p.vIdx, p.aIdx = 0, -1
	tracks = append(tracks, record.Track{MimeType: p.video.Codec.MimeType, ClockRate: p.video.Codec.ClockRate})
	if p.audio != nil {
		p.aIdx = 1
		tracks = append(tracks, record.Track{MimeType: p.audio.Codec.MimeType, ClockRate: p.audio.Codec.ClockRate, Channels: p.audio.Codec.Channels})
	}
	video := *p.video
	p.mu.Unlock()

	if err := os.MkdirAll(p.r.dir, 0o700); err != nil {
		p.fail("cannot create the recordings directory: "+err.Error(), err)
		return
	}
	base := filepath.Join(p.r.dir, fmt.Sprintf("%s-%d", p.sess.ID, p.n))
	f, err := os.OpenFile(base+partialSuffix, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		p.fail("cannot create the recording file: "+err.Error(), err)
		return
	}
	out := &recFile{f: f, n: &p.bytes, total: &p.r.bytesTotal}
	// Keyframes for seeking: asked of the publisher (rate-limited PLI) —
	// except over a cascade, where the upstream edge's own recorder asks
	// the teacher's encoder and those keyframes reach this edge too; PLIs
	// sent up the WAN would add nothing but WAN traffic.
	askKey := video.RequestKeyframe
	if video.Relay {
		askKey = nil
	}
	rec, err := record.New(out, tracks, askKey)
	if err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		p.fail("cannot start the recording: "+err.Error(), err)
		return
	}
	p.mu.Lock()
	p.rec, p.state = rec, RecRecording
	p.mu.Unlock()
	p.r.active.Add(1)
	p.log().Info("recording the lesson", "file", f.Name(), "video", video.Codec.MimeType, "audio", p.aIdx >= 0)

	p.record(rec, p.q)
	p.r.active.Add(-1)

	p.setState(RecFinalising, "")
	st, err := rec.Close() // writes cues, closes (fsyncs) the file
	p.mu.Lock()
	p.final = &st
	p.mu.Unlock()
	p.log().Info("recording finished", "bytes", p.bytes.Load(), "frames", st.Frames, "skipped", st.Dropped, "queue_drops", p.drops.Load(), "duration", st.Duration)
	if err != nil {
		_ = os.Remove(base + partialSuffix)
		p.fail("finalising the WebM failed; the recording is lost: "+err.Error(), err)
		return
	}
	if !st.Started {
		_ = os.Remove(base + partialSuffix)
		p.setState(RecNotRecorded, "no video keyframe arrived before the end: nothing to replay")
		p.log().Warn("lesson not recorded: no video keyframe arrived")
		p.r.notRecTotal.Add(1)
		return
	}
	meta := p.meta(st)
	mb, err := json.Marshal(meta)
	if err == nil {
		err = writeFileSync(base+".json", mb)
	}
	if err == nil {
		err = os.Rename(base+partialSuffix, base+".webm")
	}
	if err != nil {
		p.fail("cannot keep the finished recording: "+err.Error(), err)
		return
	}
	it, err := p.r.importFile(base, meta)
	if err != nil {
		p.fail("importing the recording into the resource cache failed (the file stays in "+p.r.dir+" and is imported at the next start): "+err.Error(), err)
		return
	}
	p.mu.Lock()
	p.state, p.mediaID = RecDone, it.ID
	p.mu.Unlock()
	p.r.doneTotal.Add(1)
	p.log().Info("recorded lesson in the catalogue", "media_id", it.ID, "title", it.Title, "bytes", it.Size, "duration_seconds", it.DurationSeconds)
}

// record feeds queued packets to rec until the part ends, then takes what
// is already queued.
func (p *part) record(rec *record.Recorder, q <-chan item) {
	write := func(it item) {
		idx := p.vIdx
		if !it.video {
			if p.aIdx < 0 {
				return
			}
			idx = p.aIdx
		}
		if err := rec.WriteRTP(idx, it.pkt); err != nil && !errors.Is(err, record.ErrClosed) {
			p.r.log.Debug("recording: frame lost", "session", p.sess.ID, "err", err)
		}
	}
	for {
		if p.r.beforeWrite != nil {
			p.r.beforeWrite()
		}
		select {
		case it := <-q:
			write(it)
		case <-p.stop:
			for n := len(q); n > 0; n-- {
				write(<-q)
			}
			return
		case <-p.pubDone:
			for n := len(q); n > 0; n-- {
				write(<-q)
			}
			return
		}
	}
}

// release ends the part's hold on the live class once it has finished
// (recorded and imported, failed or refused): its sinks drop at once, and
// it lets go of its tracks (the publisher's forwarder, with its keyframe
// cache and peer connection, through their keyframe requests), its muxer
// and its queue, keeping only what status reports. Without this every
// ended session kept ~3 MB (issue 21).
func (p *part) release() {
	p.dead.Store(true)
	p.mu.Lock()
	p.video, p.audio, p.rec, p.q, p.pubDone = nil, nil, nil, nil, nil
	p.mu.Unlock()
	p.r.parts.Add(-1)
}

func (p *part) fail(reason string, err error) {
	p.setState(RecFailed, reason)
	p.r.failedTotal.Add(1)
	p.log().Error("lesson recording failed", "reason", reason, "err", err)
}

// meta is the micro-lesson's catalogue entry (ID, size and hash are the
// store's to fill).
func (p *part) meta(st record.Stats) media.Item {
	at := p.began
	if p.sess.StartedAt != nil && p.n == 1 {
		at = *p.sess.StartedAt
	}
	title := p.sess.Title + " — " + at.Local().Format("2 Jan 2006 15:04")
	if p.n > 1 {
		title += fmt.Sprintf(" (part %d)", p.n)
	}
	if len(title) > media.MaxTitleLen {
		title = p.sess.Title
	}
	return media.Item{Title: title, Subject: p.sess.Subject, MIME: "video/webm", DurationSeconds: int(math.Round(st.Duration.Seconds()))}
}

func (p *part) status() PartStatus {
	p.mu.Lock()
	ps := PartStatus{Part: p.n, State: p.state, Reason: p.reason, MediaID: p.mediaID}
	ps.VideoCodec = p.videoCodec
	rec, final := p.rec, p.final
	vIdx, aIdx := p.vIdx, p.aIdx
	p.mu.Unlock()
	var st record.Stats
	switch {
	case final != nil:
		st = *final
	case rec != nil:
		st = rec.Stats()
	}
	if st.Frames != nil {
		ps.VideoFrames = st.Frames[vIdx]
		for _, d := range st.Dropped {
			ps.SkippedFrames += d
		}
		if aIdx >= 0 {
			ps.AudioFrames = st.Frames[aIdx]
		}
	}
	ps.DurationSeconds = math.Round(st.Duration.Seconds()*10) / 10
	ps.Bytes = p.bytes.Load()
	ps.QueueDrops = p.drops.Load()
	return ps
}

// recFile is the recording's file: it counts bytes appended and fsyncs on
// Close. WriteAt lets the muxer go back for the cues and sizes.
type recFile struct {
	f     *os.File
	n     *atomic.Int64
	total *atomic.Uint64
}

func (r *recFile) Write(b []byte) (int, error) {
	n, err := r.f.Write(b)
	r.n.Add(int64(n))
	r.total.Add(uint64(n))
	return n, err
}

func (r *recFile) WriteAt(b []byte, off int64) (int, error) { return r.f.WriteAt(b, off) }

func (r *recFile) Close() error {
	return errors.Join(r.f.Sync(), r.f.Close())
}

func writeFileSync(name string, b []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Sync(), f.Close())
}
