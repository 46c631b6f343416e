// Package record turns a live lesson's forwarded RTP into a micro-lesson
// file that any browser plays and seeks: WebM with VP8 or VP9 video and
// Opus audio, written as the packets pass, with cues for seeking. Nothing
// is transcoded: the recorder reorders packets, reassembles frames and
// muxes them. The edge records the master's tracks of a session so that a
// classroom that missed the class, or a school whose WAN was down, replays
// it from the resource cache.
//
// H264 is not recorded: WebM does not carry it (Matroska does, with the
// SPS/PPS in CodecPrivate) — a lesson from OBS in H264 is live-only for now.
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/at-wat/ebml-go/mkvcore"
	"github.com/at-wat/ebml-go/webm"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"
)

// Track describes one track to record, from the forwarded track's codec.
type Track struct {
	MimeType  string // "video/VP8", "video/VP9", "audio/opus"
	ClockRate uint32
	Channels  uint16 // audio
}

// Stats says what a recording holds.
type Stats struct {
	Frames   []int         // frames written, per track
	Dropped  []int         // frames dropped (before the first keyframe, or out of order)
	Duration time.Duration // last timestamp written
	Started  bool          // false if no keyframe ever arrived: the file is empty
	// Start is when the first frame was captured, by this machine's clock
	// (the media time of the file's 0): a recording cut in parts places
	// them, and the gaps between them, by it.
	Start time.Time
}

// KeyframeEvery is how often the recorder asks for a video keyframe (through
// the needKeyframe callback) so that the recording can be seeked.
const KeyframeEvery = 5 * time.Second

// maxLate is how many packets a frame may wait for a reordered or lost
// packet (samplebuilder's window): at 2.5 Mbps, about 100 ms of video.
const maxLate = 256

// Errors of WriteRTP and Close.
var (
	ErrClosed       = errors.New("recording closed")
	ErrUnsupported  = errors.New("codec cannot be recorded to WebM")
	errNoTrack      = errors.New("no such track")
	errNoVideoDims  = errors.New("keyframe without dimensions")
	errNeedOneTrack = errors.New("a recording needs at least one track")
)

// Recorder writes one WebM file. WriteRTP may be called from each track's
// forwarding goroutine at once.
type Recorder struct {
	mu       sync.Mutex
	out      io.WriteCloser
	tracks   []Track
	state    []*trackState
	video    int // index of the video track, -1 if none
	writers  []webm.BlockWriteCloser
	start    time.Time // media time of the first frame written
	startSet bool
	stats    Stats
	closed   bool
	now      func() time.Time
	// NeedKeyframe is called (at most once a second) while video waits for
	// its first keyframe, so the caller can ask the publisher with a PLI.
	needKeyframe func()
	lastAsk      time.Time
}

type trackState struct {
	sb        *samplebuilder.SampleBuilder
	clockRate uint32
	// The track's media clock is anchored at the arrival of its first
	// packet: tracks have unrelated RTP clocks, and a sample leaves the
	// reorder window later than it arrived, so pop time would skew them.
	anchored bool
	anchorAt time.Time
	anchorTS uint32
	ext      int64  // unwrapped RTP ticks of the last sample since anchorTS
	lastTS   uint32 // RTP timestamp of the last sample
	lastMS   int64
	lastKey  int64 // ms of the last keyframe written (video)
}

// New starts a recording to out (closed by Close) of the given tracks. The
// file starts at the first video keyframe; audio before it is dropped, so
// the recording never opens on frames a player cannot decode.
// needKeyframe, if not nil, is called while video waits for a keyframe.
func New(out io.WriteCloser, tracks []Track, needKeyframe func()) (*Recorder, error) {
	if len(tracks) == 0 {
		return nil, errNeedOneTrack
	}
	r := &Recorder{out: out, tracks: tracks, video: -1, now: time.Now, needKeyframe: needKeyframe}
	r.stats.Frames = make([]int, len(tracks))
	r.stats.Dropped = make([]int, len(tracks))
	for i, t := range tracks {
		var dep rtp.Depacketizer
		switch strings.ToLower(t.MimeType) {
		case "video/vp8":
			dep = &codecs.VP8Packet{}
		case "video/vp9":
			dep = &codecs.VP9Packet{}
		case "audio/opus":
			dep = &codecs.OpusPacket{}
		default:
			return nil, fmt.Errorf("%w: %s (WebM carries VP8, VP9 and Opus)", ErrUnsupported, t.MimeType)
		}
		if t.ClockRate == 0 {
			return nil, fmt.Errorf("track %d (%s): clock rate 0", i, t.MimeType)
		}
		if strings.HasPrefix(strings.ToLower(t.MimeType), "video/") {
			if r.video >= 0 {
				return nil, fmt.Errorf("track %d: a recording holds one video track", i)
			}
			r.video = i
		}
		r.state = append(r.state, &trackState{sb: samplebuilder.New(maxLate, dep, t.ClockRate), clockRate: t.ClockRate})
	}
	if r.video < 0 { // audio only: starts at once
		if err := r.open(0, 0); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// WriteRTP adds one packet of track i. Errors are for the caller to log:
// a bad packet loses that frame, not the recording.
func (r *Recorder) WriteRTP(i int, p *rtp.Packet) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if i < 0 || i >= len(r.state) {
		return errNoTrack
	}
	ts := r.state[i]
	if !ts.anchored {
		ts.anchored, ts.anchorAt, ts.anchorTS, ts.lastTS = true, r.now(), p.Timestamp, p.Timestamp
	}
	ts.sb.Push(p.Clone())
	for s := ts.sb.Pop(); s != nil; s = ts.sb.Pop() {
		if err := r.writeSample(i, s.Data, s.PacketTimestamp); err != nil {
			return err
		}
	}
	return nil
}

func (r *Recorder) writeSample(i int, data []byte, rtpTS uint32) error {
	if len(data) == 0 {
		return nil
	}
	key := true
	if i == r.video {
		key = isKeyframe(r.tracks[i].MimeType, data)
	}
	if r.writers == nil {
		if i != r.video || !key {
			r.stats.Dropped[i]++
			r.askKeyframe()
			return nil
		}
		w, h, err := dims(r.tracks[i].MimeType, data)
		if err != nil {
			r.stats.Dropped[i]++
			return err
		}
		if err := r.open(w, h); err != nil {
			return err
		}
	}
	at := r.mediaTime(i, rtpTS)
	if !r.startSet {
		r.start, r.startSet = at, true
		r.stats.Start = at
	}
	ms := at.Sub(r.start).Milliseconds()
	ts := r.state[i]
	// Before the start (audio from before the first keyframe that left
	// its window late), or older than what was written: WebM wants order.
	if ms < 0 || ts.lastMS > ms {
		r.stats.Dropped[i]++
		return nil
	}
	ts.lastMS = ms
	if i == r.video {
		if key {
			ts.lastKey = ms
		} else if ms-ts.lastKey >= KeyframeEvery.Milliseconds() {
			// WebRTC senders make keyframes only when asked; a lesson
			// with one keyframe cannot be seeked. Ask now and then.
			r.askKeyframe()
		}
	}
	if _, err := r.writers[i].Write(key, ms, data); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	r.stats.Frames[i]++
	if d := time.Duration(ms) * time.Millisecond; d > r.stats.Duration {
		r.stats.Duration = d
	}
	return nil
}

// mediaTime maps track i's RTP timestamp to wall time: the track's anchor
// plus its RTP clock since then (wrap-around handled), so pacing within a
// track is the publisher's, not the network's.
func (r *Recorder) mediaTime(i int, rtpTS uint32) time.Time {
	ts := r.state[i]
	ts.ext += int64(int32(rtpTS - ts.lastTS)) // signed: a timestamp may step back
	ts.lastTS = rtpTS
	return ts.anchorAt.Add(time.Duration(ts.ext) * time.Second / time.Duration(ts.clockRate))
}

func (r *Recorder) askKeyframe() {
	if r.needKeyframe == nil || r.now().Sub(r.lastAsk) < time.Second {
		return
	}
	r.lastAsk = r.now()
	r.needKeyframe()
}

// open writes the WebM header; width and height are the video's.
func (r *Recorder) open(width, height int) error {
	ws, err := newWriters(r.out, r.tracks, r.video, width, height)
	if err != nil {
		return err
	}
	r.writers, r.stats.Started = ws, true
	return nil
}

// newWriters writes the WebM header of tracks to out (video is the index
// of the video track, -1 if none) and returns a block writer per track.
func newWriters(out io.WriteCloser, tracks []Track, video, width, height int) ([]webm.BlockWriteCloser, error) {
	entries := make([]webm.TrackEntry, len(tracks))
	for i, t := range tracks {
		e := webm.TrackEntry{TrackNumber: uint64(i + 1), TrackUID: uint64(i + 1)}
		switch strings.ToLower(t.MimeType) {
		case "video/vp8", "video/vp9":
			e.Name, e.TrackType = "Video", 1
			e.CodecID = "V_VP8"
			if strings.EqualFold(t.MimeType, "video/vp9") {
				e.CodecID = "V_VP9"
			}
			e.Video = &webm.Video{PixelWidth: uint64(width), PixelHeight: uint64(height)}
		default: // opus
			ch := t.Channels
			if ch == 0 {
				ch = 2
			}
			e.Name, e.TrackType, e.CodecID = "Audio", 2, "A_OPUS"
			e.CodecPrivate = opusHead(ch, t.ClockRate)
			e.Audio = &webm.Audio{SamplingFrequency: float64(t.ClockRate), Channels: uint64(ch)}
		}
		entries[i] = e
	}
	opts := []mkvcore.BlockWriterOption{
		mkvcore.WithSeekHead(true),
		// Cues make the file seekable in a browser's <video>: one per
		// cluster, ~20 bytes each; a 90-minute lesson with a keyframe every
		// 5 s needs about 22 KiB.
		mkvcore.WithCues(64 << 10),
	}
	if video >= 0 {
		// A new cluster (and cue) at each video keyframe at least 1 s after
		// the last, so that a seek lands on a decodable frame.
		opts = append(opts, mkvcore.WithMinMaxClusterDuration(uint64(video+1), 1000, 0x7FFF))
	}
	ws, err := webm.NewSimpleBlockWriter(out, entries, opts...)
	if err != nil {
		return nil, fmt.Errorf("start WebM: %w", err)
	}
	return ws, nil
}

// Stats returns what the recording holds so far.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.stats
	st.Frames, st.Dropped = append([]int(nil), r.stats.Frames...), append([]int(nil), r.stats.Dropped...)
	return st
}

// Close ends the recording and closes the output. A recording that never
// started (no keyframe arrived) closes its output empty.
func (r *Recorder) Close() (Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return r.stats, ErrClosed
	}
	// Frames still waiting in the reorder windows are complete or never
	// will be: write what is whole.
	for i, ts := range r.state {
		ts.sb.Flush()
		for smp := ts.sb.Pop(); smp != nil; smp = ts.sb.Pop() {
			_ = r.writeSample(i, smp.Data, smp.PacketTimestamp) // best effort at the end
		}
	}
	r.closed = true
	st := r.stats
	st.Frames, st.Dropped = append([]int(nil), r.stats.Frames...), append([]int(nil), r.stats.Dropped...)
	if r.writers == nil {
		return st, r.out.Close()
	}
	var errs []error
	// Closing the last writer finalises the file and closes r.out.
	for _, w := range r.writers {
		if err := w.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return st, errors.Join(errs...)
}

// isKeyframe reads the codec's own frame header.
func isKeyframe(mime string, f []byte) bool {
	switch strings.ToLower(mime) {
	case "video/vp8":
		return len(f) >= 10 && f[0]&0x01 == 0 // RFC 6386 9.1: P bit clear
	case "video/vp9":
		// VP9 uncompressed header: frame marker, profile, show_existing,
		// frame_type (0 = key). Profiles 0-2 only; profile 3 shifts a bit.
		if len(f) < 1 || f[0]>>6 != 0b10 {
			return false
		}
		profile := (f[0]>>5)&1 | (f[0]>>3)&2
		if profile == 3 {
			return false
		}
		return f[0]&0x08 == 0 && f[0]&0x04 == 0 // show_existing_frame=0, frame_type=0
	}
	return false
}

// dims reads width and height from a keyframe (VP8: RFC 6386 9.1; VP9:
// vp9Size). A VP9 keyframe whose size cannot be read leaves the WebM Video
// element at 0x0, which Chromium refuses to play (audio only).
func dims(mime string, f []byte) (int, int, error) {
	if strings.EqualFold(mime, "video/vp9") {
		w, h := vp9Size(f)
		return w, h, nil
	}
	if len(f) < 10 || f[3] != 0x9d || f[4] != 0x01 || f[5] != 0x2a {
		return 0, 0, errNoVideoDims
	}
	w := int(binary.LittleEndian.Uint16(f[6:8]) & 0x3fff)
	h := int(binary.LittleEndian.Uint16(f[8:10]) & 0x3fff)
	return w, h, nil
}

// opusHead is the CodecPrivate of an Opus track (RFC 7845 5.1).
func opusHead(channels uint16, rate uint32) []byte {
	b := make([]byte, 19)
	copy(b, "OpusHead")
	b[8] = 1 // version
	b[9] = byte(channels)
	binary.LittleEndian.PutUint16(b[10:], 312) // pre-skip: libopus's usual 6.5 ms
	binary.LittleEndian.PutUint32(b[12:], rate)
	return b
}
