package recorder

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/record"
	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/media"
)

// item is one queued packet of a part.
type item struct {
	video bool
	pkt   *rtp.Packet
}

// part records one master publisher connection.
type part struct {
	r        *Manager
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
	done     chan struct{} // closed when run returns: the part is saved, or failed
	out      *recFile      // the file being written (record's goroutine only)
	dead     atomic.Bool   // not recording (any more): sinks drop at once
	drops    atomic.Uint64
	bytes    atomic.Int64

	// chosen is the video track whose packets are recorded (its sink's
	// vid; 0: none yet). With simulcast every layer of the camera has a
	// sink until plan picks the top one (layers.go).
	chosen atomic.Int32

	mu           sync.Mutex
	video, audio *sfu.TapTrack    // nil once released
	vcands       []videoCand      // the camera's layers that came (nil once released)
	firstVideoAt time.Time        // when the first of them came
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
	if p.state != StateWaiting && p.state != StateRecording {
		return nil // refused already (H264) or finished
	}
	if p.rec != nil {
		p.log().Info("a master track that started after recording began is not recorded", "codec", t.Codec.MimeType)
		return nil
	}
	switch t.Kind {
	case webrtc.RTPCodecTypeVideo:
		if p.video != nil || (len(p.vcands) > 0 && !sameCamera(p.vcands[0].t, t)) {
			p.log().Info("a second master video track (screen share) is not recorded; the lesson file holds the first", "codec", t.Codec.MimeType)
			return nil
		}
		if mime != "video/vp8" && mime != "video/vp9" {
			p.state = StateNotRecorded
			p.reason = fmt.Sprintf("the lesson's video is %s, which WebM cannot carry: this lesson is NOT recorded. Have the teacher's browser or encoder send VP8 or VP9 to record it.", t.Codec.MimeType)
			p.dead.Store(true)
			p.log().Warn("lesson not recorded: "+p.reason, "codec", t.Codec.MimeType)
			p.r.notRecTotal.Add(1)
			go p.finish()
			return nil
		}
		vid := int32(len(p.vcands) + 1)
		p.vcands = append(p.vcands, videoCand{t: t, vid: vid})
		if vid == 1 {
			p.videoCodec, p.firstVideoAt = t.Codec.MimeType, time.Now()
		}
		if t.RID() == "" { // one layer: recorded from its first packet, as ever
			p.video = &t
			p.chosen.Store(vid)
		}
		select {
		case p.changed <- struct{}{}:
		default:
		}
		return &partSink{p: p, q: p.q, video: true, vid: vid}
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
	vid   int32 // a video layer's number (part.chosen)
}

func (s *partSink) Packet(pkt *rtp.Packet) {
	if c := s.p.chosen.Load(); s.p.dead.Load() || c == 0 || (s.video && c != s.vid) {
		// The recording is over, or this is not the layer recorded, or no
		// video layer is chosen yet: audio queued while the recorder
		// waits for the camera's layers would be seconds old when
		// written, and the recorder places each track by when its first
		// packet is written (record.Recorder), so it would run ahead of
		// the video.
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
	video := len(p.vcands) > 0
	if video {
		n++
	}
	if p.audio != nil {
		n++
	}
	return video && p.audio != nil || (p.expected > 0 && n >= p.expected)
}

func (p *part) setState(state, reason string) {
	p.mu.Lock()
	p.state, p.reason = state, reason
	p.mu.Unlock()
}

// run waits for the tracks, records until the part ends, then finalises
// and imports the file.
func (p *part) run() {
	defer close(p.done)
	defer p.release()
	p.waitTracks()
	tracks, video, ok := p.plan()
	if !ok {
		return
	}
	base := filepath.Join(p.r.dir, fmt.Sprintf("%s-%d", p.sess.ID, p.n))
	rec, ok := p.open(base, tracks, video)
	if !ok {
		return
	}
	p.r.active.Add(1)
	p.record(rec, p.q)
	p.r.active.Add(-1)

	p.setState(StateFinalising, "")
	st, err := rec.Close() // writes cues, closes (fsyncs) the file
	p.mu.Lock()
	p.final = &st
	p.mu.Unlock()
	p.log().Info("recording part finished", "bytes", p.bytes.Load(), "frames", st.Frames, "skipped", st.Dropped, "queue_drops", p.drops.Load(), "duration", st.Duration)
	if err != nil {
		_ = os.Remove(base + partialSuffix)
		_ = os.Remove(base + ".json")
		p.fail("finalising the WebM failed; this part of the recording is lost: "+err.Error(), err)
		return
	}
	if !st.Started {
		_ = os.Remove(base + partialSuffix)
		_ = os.Remove(base + ".json")
		p.setState(StateNotRecorded, "no video keyframe arrived before the end: nothing to replay")
		p.log().Warn("lesson not recorded: no video keyframe arrived")
		p.r.notRecTotal.Add(1)
		return
	}
	p.keep(base, st)
}

// waitTracks waits until every announced track has come, or recTrackWait
// has passed, or the part ends before that.
func (p *part) waitTracks() {
	wait := time.NewTimer(recTrackWait)
	defer wait.Stop()
	for !p.haveAll() {
		select {
		case <-p.changed:
		case <-wait.C:
			return
		case <-p.stop:
			return
		case <-p.pubDone:
			return
		}
	}
	p.waitLayers()
}

// plan decides what the file holds: the video track (required) and the
// audio track if one came. ok is false when nothing is to be recorded.
func (p *part) plan() (tracks []record.Track, video sfu.TapTrack, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != StateWaiting { // refused (H264)
		return nil, video, false
	}
	p.chooseLayer()
	if p.video == nil {
		p.state, p.reason = StateNotRecorded, "the master sent no VP8/VP9 video: a lesson without video is not recorded"
		p.log().Warn("lesson not recorded: " + p.reason)
		p.r.notRecTotal.Add(1)
		return nil, video, false
	}
	p.vIdx, p.aIdx = 0, -1
	tracks = append(tracks, record.Track{MimeType: p.video.Codec.MimeType, ClockRate: p.video.Codec.ClockRate})
	if p.audio != nil {
		p.aIdx = 1
		tracks = append(tracks, record.Track{MimeType: p.audio.Codec.MimeType, ClockRate: p.audio.Codec.ClockRate, Channels: p.audio.Codec.Channels})
	}
	return tracks, *p.video, true
}

// open creates base.webm.partial and the WebM muxer writing to it.
func (p *part) open(base string, tracks []record.Track, video sfu.TapTrack) (*record.Recorder, bool) {
	if err := fsutil.MkdirAllDurable(p.r.dir, 0o700); err != nil {
		p.fail("cannot create the recordings directory: "+err.Error(), err)
		return nil, false
	}
	// The catalogue fields first: a crash from here on leaves a part
	// that the next start recovers with them.
	if err := p.writeMeta(base, record.Stats{}); err != nil {
		p.fail("cannot save the recording's catalogue fields: "+err.Error(), err)
		return nil, false
	}
	f, err := os.OpenFile(base+partialSuffix, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		_ = os.Remove(base + ".json")
		p.fail("cannot create the recording file: "+err.Error(), err)
		return nil, false
	}
	out := &recFile{f: f, n: &p.bytes, total: &p.r.bytesTotal}
	p.out = out
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
		_ = os.Remove(base + ".json")
		p.fail("cannot start the recording: "+err.Error(), err)
		return nil, false
	}
	p.mu.Lock()
	p.rec, p.state = rec, StateRecording
	p.mu.Unlock()
	p.log().Info("recording the lesson", "file", f.Name(), "video", video.Codec.MimeType, "audio", p.aIdx >= 0)
	return rec, true
}

// keep makes the finished part durable under its final name, with its
// catalogue fields beside it; it is joined into the lesson and imported
// when the session ends (Manager.joinLesson).
func (p *part) keep(base string, st record.Stats) {
	err := p.writeMeta(base, st)
	if err == nil {
		err = fsutil.RenameDurable(base+partialSuffix, base+".webm")
	}
	if err != nil {
		p.fail("cannot keep the finished recording: "+err.Error(), err)
		return
	}
	p.setState(StateSaved, "")
	p.log().Info("recording part saved; it joins the lesson when the session ends", "file", base+".webm")
}

// writeMeta writes the part's sidecar (base.json) durably.
func (p *part) writeMeta(base string, st record.Stats) error {
	at := p.began
	if p.sess.StartedAt != nil {
		at = *p.sess.StartedAt
	}
	lesson := Title(p.sess.Title, at.In(p.r.loc), 1, p.r.lang)
	if len(lesson) > media.MaxTitleLen {
		lesson = p.sess.Title
	}
	b, err := json.Marshal(partMeta{Item: p.meta(st), Session: p.sess.ID, Part: p.n, LessonTitle: lesson, Began: p.began, Start: st.Start})
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(base+".json", b, 0o600)
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
	// Every syncEvery the file goes to disk, and once the first frame is
	// in, the sidecar learns when the part's media began (to place the
	// gap after a crash).
	tick := time.NewTicker(syncEvery)
	defer tick.Stop()
	startSaved := false
	base := strings.TrimSuffix(p.out.f.Name(), partialSuffix)
	for {
		if p.r.beforeWrite != nil {
			p.r.beforeWrite()
		}
		select {
		case it := <-q:
			write(it)
		case <-tick.C:
			if err := p.out.Sync(); err != nil {
				p.r.log.Debug("recording: fsync failed", "session", p.sess.ID, "err", err)
			}
			if st := rec.Stats(); !startSaved && st.Started {
				if err := p.writeMeta(base, st); err != nil {
					p.log().Warn("cannot save when the recording began; a gap after a crash will show as unknown", "err", err)
				}
				startSaved = true
			}
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
	p.video, p.audio, p.rec, p.q, p.pubDone, p.vcands = nil, nil, nil, nil, nil, nil
	p.mu.Unlock()
	p.r.parts.Add(-1)
}

func (p *part) fail(reason string, err error) {
	p.setState(StateFailed, reason)
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
	title := Title(p.sess.Title, at.In(p.r.loc), p.n, p.r.lang)
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
//
// A failed write (a full disk) is kept, not returned: the WebM muxer's
// goroutine pipeline stops on a writer error and every later WriteRTP then
// blocks for ever, which wedged the recorder and with it edged's shutdown.
// From the first error on, bytes are dropped and Close reports the error,
// so the part fails ("the recording is lost") and the class is unaffected.
type recFile struct {
	f     *os.File
	n     *atomic.Int64
	total *atomic.Uint64

	mu  sync.Mutex
	err error // the first write error
}

func (r *recFile) failed(err error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil && r.err == nil {
		r.err = err
	}
	return r.err != nil
}

func (r *recFile) Write(b []byte) (int, error) {
	if r.failed(nil) {
		return len(b), nil
	}
	n, err := r.f.Write(b)
	r.n.Add(int64(n))
	r.total.Add(uint64(n))
	r.failed(err)
	return len(b), nil
}

func (r *recFile) WriteAt(b []byte, off int64) (int, error) {
	if r.failed(nil) {
		return len(b), nil
	}
	_, err := r.f.WriteAt(b, off)
	r.failed(err)
	return len(b), nil
}

// Sync puts what was written on disk (a power cut loses only what came
// after).
func (r *recFile) Sync() error {
	if r.failed(nil) {
		return nil
	}
	return r.f.Sync()
}

func (r *recFile) Close() error {
	r.mu.Lock()
	werr := r.err
	r.mu.Unlock()
	if werr != nil {
		werr = fmt.Errorf("writing the recording: %w", werr)
	}
	return errors.Join(werr, r.f.Sync(), r.f.Close())
}

// Title is a recorded lesson's title: the session's title, the date and
// time it began (in the zone of at) and, after the first, the part, in
// lang: "数学 — 2026年12月2日 09:30（第2部分）" for zh-CN, else
// "Maths — 2 Dec 2026 09:30 (part 2)".
func Title(session string, at time.Time, part int, lang string) string {
	if strings.HasPrefix(lang, "zh") {
		t := fmt.Sprintf("%s — %d年%d月%d日 %s", session, at.Year(), int(at.Month()), at.Day(), at.Format("15:04"))
		if part > 1 {
			t += fmt.Sprintf("（第%d部分）", part)
		}
		return t
	}
	t := session + " — " + at.Format("2 Jan 2006 15:04")
	if part > 1 {
		t += fmt.Sprintf(" (part %d)", part)
	}
	return t
}
