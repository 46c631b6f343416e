package record

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/at-wat/ebml-go"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
)

// lesson records secs seconds of VP8 (keyframe every second) and Opus to
// a file in dir (a keyframe every 0.99 s) and returns the file, open (not finalised: as a crash
// leaves it) or finished. The frames' first bytes count them.
func lesson(t testing.TB, dir string, seed uint64, secs int, finish bool, frameMax ...int) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	frameSize := 900
	if len(frameMax) > 0 {
		frameSize = frameMax[0]
	}
	path := filepath.Join(dir, "part.webm")
	for n := 0; ; n++ {
		path = filepath.Join(dir, "part"+string(rune('a'+n))+".webm")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1_700_000_000, 0)
	rec, err := New(f, []Track{{MimeType: "video/VP8", ClockRate: 90000}, {MimeType: "audio/opus", ClockRate: 48000, Channels: 2}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var now time.Duration
	rec.now = func() time.Time { return clock.Add(now) }
	vp := rtp.NewPacketizer(1200, 96, 1, &codecs.VP8Payloader{}, rtp.NewRandomSequencer(), 90000)
	ap := rtp.NewPacketizer(1200, 111, 2, &codecs.OpusPayloader{}, rtp.NewRandomSequencer(), 48000)
	for ms := 0; ms < secs*1000; ms += 10 {
		now = time.Duration(ms) * time.Millisecond
		if ms%20 == 0 {
			for _, p := range ap.Packetize([]byte{0xfc, byte(ms / 20), byte(ms / 20 >> 8), 1, 2, 3}, 960) {
				if err := rec.WriteRTP(1, p); err != nil {
					t.Fatal(err)
				}
			}
		}
		if ms%30 == 0 {
			fr := vp8Frame(rng, ms%990 == 0, 300+rng.IntN(frameSize))
			for _, p := range vp.Packetize(fr, 2700) {
				if err := rec.WriteRTP(0, p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if finish {
		if _, err := rec.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// The muxer writes from its own goroutine: wait until the file stops
	// growing, then copy it as a crash would leave it.
	var size int64 = -1
	for range 100 {
		time.Sleep(20 * time.Millisecond)
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() == size {
			break
		}
		size = st.Size()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = rec.Close()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type scanned struct {
	frames []Frame
	sc     Scanned
}

func scanBytes(t testing.TB, b []byte) (scanned, error) {
	t.Helper()
	var s scanned
	sc, err := Scan(bytes.NewReader(b), func(_ []TrackInfo, f Frame) error {
		f.Data = append([]byte(nil), f.Data...)
		s.frames = append(s.frames, f)
		return nil
	})
	s.sc = sc
	return s, err
}

// TestScanCutOffRecording: a recording as a crash leaves it (never
// finalised), and a finished one cut at every few bytes, read back: Scan
// never fails once the tracks are in, gives a prefix of the frames (every
// whole frame before the cut) and says the file is torn.
func TestScanCutOffRecording(t *testing.T) {
	dir := t.TempDir()
	open := lesson(t, dir, 1, 3, false)
	finished := lesson(t, dir, 1, 3, true)
	ob, _ := os.ReadFile(open)
	fb, _ := os.ReadFile(finished)
	o, err := scanBytes(t, ob)
	if err != nil {
		t.Fatalf("the unfinished recording: %v", err)
	}
	f, err := scanBytes(t, fb)
	if err != nil || f.sc.Torn {
		t.Fatalf("the finished recording: %v (torn %v)", err, f.sc.Torn)
	}
	if len(f.sc.Tracks) != 2 || f.sc.Tracks[0].MimeType != "video/VP8" || f.sc.Tracks[0].Width != 640 || f.sc.Tracks[1].MimeType != "audio/opus" || f.sc.Tracks[1].Channels != 2 || f.sc.Tracks[1].ClockRate != 48000 {
		t.Errorf("tracks %+v", f.sc.Tracks)
	}
	// 3 s at 30 fps and 50 fps, less what the reorder window held.
	if len(f.frames) < 230 || f.sc.End < 2900*time.Millisecond {
		t.Fatalf("the finished recording holds %d frames to %v", len(f.frames), f.sc.End)
	}
	if len(o.frames) < len(f.frames)-8 || len(o.frames) > len(f.frames) {
		t.Errorf("the unfinished recording holds %d frames, the finished one %d", len(o.frames), len(f.frames))
	}
	same := func(a, b Frame) bool {
		return a.Track == b.Track && a.Key == b.Key && a.At == b.At && bytes.Equal(a.Data, b.Data)
	}
	for i := range o.frames {
		if !same(o.frames[i], f.frames[i]) {
			t.Fatalf("frame %d of the unfinished recording differs", i)
		}
	}
	header := 0
	for cut := 1; cut < len(fb); cut += 37 {
		c, err := scanBytes(t, fb[:cut])
		if err != nil {
			if !errors.Is(err, ErrNotRecording) || len(c.frames) > 0 {
				t.Fatalf("cut at %d: %v", cut, err)
			}
			header = cut
			continue
		}
		if !c.sc.Torn && c.sc.Good != int64(cut) {
			t.Errorf("cut at %d of %d: not reported torn", cut, len(fb))
		}
		if c.sc.Good > int64(cut) {
			t.Fatalf("cut at %d: %d good bytes", cut, c.sc.Good)
		}
		for i := range c.frames {
			if !same(c.frames[i], f.frames[i]) {
				t.Fatalf("cut at %d: frame %d differs", cut, i)
			}
		}
		// At most the frame being written when the cut came is lost.
		if len(c.frames) == 0 && cut > 64<<10+3000 {
			t.Fatalf("cut at %d: no frames", cut)
		}
	}
	if header == 0 || header > 64<<10+400 {
		t.Errorf("cuts inside the header (the last at %d) should be refused", header)
	}
	// Zeros where a power cut left a hole end the good part too.
	holed := append(append([]byte(nil), fb[:len(fb)/2]...), make([]byte, 4096)...)
	h, err := scanBytes(t, holed)
	if err != nil || !h.sc.Torn || len(h.frames) == 0 {
		t.Errorf("a file ending in zeros: %v, torn %v, %d frames", err, h.sc.Torn, len(h.frames))
	}
}

// TestJoinParts: a recording cut off by a crash and the next part, joined:
// the result is one finished WebM (cues, duration) with every frame of the
// first, then every frame of the second JoinGap after the first's last
// frame, and it reads back as such.
func TestJoinParts(t *testing.T) {
	dir := t.TempDir()
	p1 := lesson(t, dir, 1, 3, false)
	p2 := lesson(t, dir, 2, 2, true)
	b1, _ := os.ReadFile(p1)
	b2, _ := os.ReadFile(p2)
	s1, err1 := scanBytes(t, b1)
	s2, err2 := scanBytes(t, b2)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	f1, _ := os.Open(p1)
	f2, _ := os.Open(p2)
	defer f1.Close()
	defer f2.Close()
	outPath := filepath.Join(dir, "joined.webm")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	j, err := Join(out, []io.ReadSeeker{f1, f2})
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Parts) != 2 || j.Parts[0].Frames != len(s1.frames) || j.Parts[1].Frames != len(s2.frames) || j.Parts[1].Offset != s1.sc.End+JoinGap {
		t.Fatalf("joined %+v; parts had %d and %d frames, the first to %v", j, len(s1.frames), len(s2.frames), s1.sc.End)
	}
	jb, _ := os.ReadFile(outPath)
	got, err := scanBytes(t, jb)
	if err != nil || got.sc.Torn {
		t.Fatalf("the joined file: %v (torn %v)", err, got.sc.Torn)
	}
	want := append([]Frame(nil), s1.frames...)
	for _, f := range s2.frames {
		f.At += j.Parts[1].Offset
		want = append(want, f)
	}
	if len(got.frames) != len(want) {
		t.Fatalf("%d frames in the joined file, want %d", len(got.frames), len(want))
	}
	for i, w := range want {
		g := got.frames[i]
		if g.Track != w.Track || g.Key != w.Key || !bytes.Equal(g.Data, w.Data) || g.At.Milliseconds() != w.At.Milliseconds() {
			t.Fatalf("frame %d: track %d key %v at %v (%d bytes), want track %d key %v at %v (%d bytes)", i, g.Track, g.Key, g.At, len(g.Data), w.Track, w.Key, w.At, len(w.Data))
		}
	}
	var doc struct {
		Segment struct {
			Info struct {
				Duration float64 `ebml:"Duration"`
			} `ebml:"Info"`
			Cues struct {
				CuePoint []struct {
					CueTime uint64 `ebml:"CueTime"`
				} `ebml:"CuePoint"`
			} `ebml:"Cues"`
		} `ebml:"Segment"`
	}
	if err := ebml.Unmarshal(bytes.NewReader(jb), &doc); err != nil {
		t.Fatal(err)
	}
	if d := time.Duration(doc.Segment.Info.Duration) * time.Millisecond; d < j.Duration-50*time.Millisecond || d > j.Duration+50*time.Millisecond {
		t.Errorf("the joined file says it lasts %v; its frames run to %v", d, j.Duration)
	}
	if len(doc.Segment.Cues.CuePoint) < 3 {
		t.Errorf("%d cue points for 5 s with a keyframe a second (a cluster at most every second)", len(doc.Segment.Cues.CuePoint))
	}
}

// TestJoinRefusesOtherCodec: a part in VP9 after one in VP8 cannot be in
// one file; a part with nothing in it (cut off before its first frame) is
// left out.
func TestJoinRefusesOtherCodec(t *testing.T) {
	dir := t.TempDir()
	p1 := lesson(t, dir, 1, 1, true)
	vp9 := filepath.Join(dir, "vp9.webm")
	f, err := os.Create(vp9)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := newWriters(f, []Track{{MimeType: "video/VP9", ClockRate: 90000}}, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := ws[0].Write(i == 0, int64(i*33), []byte{0x80, 1, 2, 3}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ws[0].Close(); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.webm")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	join := func(paths ...string) (Joined, error) {
		var rs []io.ReadSeeker
		for _, p := range paths {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			rs = append(rs, f)
		}
		out, err := os.Create(filepath.Join(dir, "j.webm"))
		if err != nil {
			t.Fatal(err)
		}
		return Join(out, rs)
	}
	if _, err := join(p1, vp9); !errors.Is(err, ErrIncompatible) {
		t.Errorf("joining VP8 and VP9: %v, want ErrIncompatible", err)
	}
	j, err := join(p1, empty)
	if err != nil || len(j.Parts) != 2 || !j.Parts[1].Skipped || j.Parts[0].Frames == 0 {
		t.Fatalf("joining a part with nothing in it: %+v %v", j, err)
	}
}

// joinBench makes the two parts BenchmarkJoin and its peer read.
func joinBench(b *testing.B) (dir string, parts []string, size int64) {
	dir = b.TempDir()
	parts = []string{lesson(b, dir, 1, 20, false, 18000), lesson(b, dir, 2, 20, true, 18000)}
	for _, p := range parts {
		st, err := os.Stat(p)
		if err != nil {
			b.Fatal(err)
		}
		size += st.Size()
	}
	return dir, parts, size
}

// BenchmarkJoinPeerCopy is the peer of BenchmarkJoin: the same two files
// copied, byte for byte, into one.
func BenchmarkJoinPeerCopy(b *testing.B) {
	dir, parts, size := joinBench(b)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		out, err := os.Create(filepath.Join(dir, "copy.webm"))
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range parts {
			f, _ := os.Open(p)
			if _, err := io.Copy(out, f); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
		if err := errors.Join(out.Sync(), out.Close()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJoin: how fast a part is recovered or parts are joined (read,
// scanned and written again) — what a start-up after a crash spends per
// megabyte of recording. Two 20 s parts of ~2.2 Mbit/s video (9 KB frames at 30 fps) with audio.
func BenchmarkJoin(b *testing.B) {
	dir, parts, size := joinBench(b)
	p1, p2 := parts[0], parts[1]
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		f1, _ := os.Open(p1)
		f2, _ := os.Open(p2)
		out, err := os.Create(filepath.Join(dir, "joined.webm"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Join(syncCloser{out}, []io.ReadSeeker{f1, f2}); err != nil {
			b.Fatal(err)
		}
		f1.Close()
		f2.Close()
	}
}

// syncCloser fsyncs before closing, as the recorder's join does.
type syncCloser struct{ *os.File }

func (s syncCloser) Close() error { return errors.Join(s.File.Sync(), s.File.Close()) }
