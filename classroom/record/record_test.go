package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/at-wat/ebml-go"
	"github.com/at-wat/ebml-go/mkvcore"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
)

// vp8Frame makes a VP8 frame whose header is real (RFC 6386 9.1) and whose
// body is random: the recorder reads only the header.
func vp8Frame(rng *rand.Rand, key bool, size int) []byte {
	f := make([]byte, size)
	for i := range f {
		f[i] = byte(rng.Uint32())
	}
	if key {
		f[0] &^= 0x01
		f[3], f[4], f[5] = 0x9d, 0x01, 0x2a
		binary.LittleEndian.PutUint16(f[6:], 640)
		binary.LittleEndian.PutUint16(f[8:], 360)
	} else {
		f[0] |= 0x01
	}
	return f
}

type sent struct {
	track int
	data  []byte
	key   bool
	at    time.Duration
}

// TestRecordsWhatWasSent packetizes known VP8 and Opus frames as a
// publisher would (with some reordering), records them, and reads the
// WebM back: every frame from the first keyframe on is there, byte for
// byte, in order, with its keyframe flag and a timestamp that follows the
// publisher's clock; the file has cues for seeking.
func TestRecordsWhatWasSent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	path := filepath.Join(t.TempDir(), "lesson.webm")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1_700_000_000, 0)
	asked := 0
	rec, err := New(f, []Track{{MimeType: "video/VP8", ClockRate: 90000}, {MimeType: "audio/opus", ClockRate: 48000, Channels: 2}}, func() { asked++ })
	if err != nil {
		t.Fatal(err)
	}
	var now time.Duration
	rec.now = func() time.Time { return clock.Add(now) }

	vp := rtp.NewPacketizer(1200, 96, 1111, &codecs.VP8Payloader{}, rtp.NewRandomSequencer(), 90000)
	ap := rtp.NewPacketizer(1200, 111, 2222, &codecs.OpusPayloader{}, rtp.NewRandomSequencer(), 48000)

	// 3 s: video at 30 fps (keyframe at frame 5, then every 30), audio in
	// 20 ms frames. The first 5 video frames are delta frames: a recording
	// must not open on them.
	var all []sent
	for i := range 90 {
		all = append(all, sent{0, vp8Frame(rng, i == 5 || (i > 5 && (i-5)%30 == 0), 200+rng.IntN(3000)), i == 5 || (i > 5 && (i-5)%30 == 0), time.Duration(i) * time.Second / 30})
	}
	for i := range 150 {
		b := make([]byte, 60+rng.IntN(60))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		all = append(all, sent{1, b, true, time.Duration(i) * 20 * time.Millisecond})
	}
	// Send in time order, as packets.
	order := make([]int, len(all))
	for i := range order {
		order[i] = i
	}
	sortByTime(order, all)
	firstKeyAt := 5 * time.Second / 30
	for _, i := range order {
		s := all[i]
		now = s.at
		var pkts []*rtp.Packet
		if s.track == 0 {
			pkts = vp.Packetize(s.data, 3000)
		} else {
			pkts = ap.Packetize(s.data, 960)
		}
		// Swap two packets of a frame now and then: the network reorders.
		if len(pkts) > 2 && rng.IntN(3) == 0 {
			pkts[0], pkts[1] = pkts[1], pkts[0]
		}
		for _, p := range pkts {
			if err := rec.WriteRTP(s.track, p); err != nil {
				t.Fatalf("WriteRTP: %v", err)
			}
		}
	}
	st, err := rec.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !st.Started || asked == 0 {
		t.Errorf("stats %+v, keyframe asked %d times: the recorder should have asked for a keyframe while waiting", st, asked)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readers, err := mkvcore.NewSimpleBlockReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("reading the WebM back: %v", err)
	}
	if len(readers) != 2 {
		t.Fatalf("%d tracks in the file, want 2", len(readers))
	}
	// The reader demuxes in one goroutine into a channel per track: read
	// the tracks concurrently, or it blocks.
	type block struct {
		b   []byte
		key bool
		ts  int64
	}
	got := make([][]block, len(readers))
	var wg sync.WaitGroup
	for track, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				b, key, ts, err := r.Read()
				if err != nil {
					return
				}
				got[track] = append(got[track], block{b, key, ts})
			}
		}()
	}
	wg.Wait()
	for track := range readers {
		var want []sent
		for _, i := range order {
			if all[i].track == track && all[i].at >= firstKeyAt {
				want = append(want, all[i])
			}
		}
		if len(got[track]) > len(want) {
			t.Fatalf("track %d: %d frames read back, more than the %d sent", track, len(got[track]), len(want))
		}
		for n, g := range got[track] {
			w := want[n]
			if !bytes.Equal(g.b, w.data) {
				t.Fatalf("track %d frame %d: %d bytes differ from the %d sent", track, n, len(g.b), len(w.data))
			}
			if track == 0 && g.key != w.key {
				t.Errorf("track %d frame %d: keyframe flag %v, sent %v", track, n, g.key, w.key)
			}
			// The publisher's clock, relative to the first keyframe, to
			// the millisecond.
			wantMS := (w.at - firstKeyAt).Milliseconds()
			if d := g.ts - wantMS; d < -1 || d > 1 {
				t.Errorf("track %d frame %d: timestamp %d ms, want %d", track, n, g.ts, wantMS)
			}
		}
		// Only the last frame of a track may be missing: it can still sit
		// in the reorder window when the recording stops.
		if len(got[track]) < len(want)-1 {
			t.Errorf("track %d: %d frames read back, sent %d from the first keyframe", track, len(got[track]), len(want))
		}
		if len(got[track]) != st.Frames[track] {
			t.Errorf("track %d: stats say %d frames, file has %d", track, st.Frames[track], len(got[track]))
		}
	}

	var doc struct {
		Segment struct {
			Cues struct {
				CuePoint []struct {
					CueTime uint64 `ebml:"CueTime"`
				} `ebml:"CuePoint"`
			} `ebml:"Cues"`
		} `ebml:"Segment"`
	}
	if err := ebml.Unmarshal(bytes.NewReader(data), &doc); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if len(doc.Segment.Cues.CuePoint) < 3 {
		t.Errorf("%d cue points for 3 keyframes: the file cannot be seeked", len(doc.Segment.Cues.CuePoint))
	}
}

func sortByTime(order []int, all []sent) {
	// Stable by time, video before audio at the same instant.
	for i := 1; i < len(order); i++ {
		for j := i; j > 0 && all[order[j]].at < all[order[j-1]].at; j-- {
			order[j], order[j-1] = order[j-1], order[j]
		}
	}
}

func TestRefusesWhatWebMCannotHold(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "x.webm"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := New(f, []Track{{MimeType: "video/H264", ClockRate: 90000}}, nil); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("H264: %v, want ErrUnsupported", err)
	}
	if _, err := New(f, nil, nil); err == nil {
		t.Fatal("no tracks accepted")
	}
	if _, err := New(f, []Track{{MimeType: "video/VP8", ClockRate: 90000}, {MimeType: "video/VP8", ClockRate: 90000}}, nil); err == nil {
		t.Fatal("two video tracks accepted")
	}
}

func TestNoKeyframeMeansEmptyNotBroken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.webm")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := New(f, []Track{{MimeType: "video/VP8", ClockRate: 90000}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	vp := rtp.NewPacketizer(1200, 96, 1, &codecs.VP8Payloader{}, rtp.NewRandomSequencer(), 90000)
	for i := range 10 {
		for _, p := range vp.Packetize(vp8Frame(rng, false, 500), 3000) {
			if err := rec.WriteRTP(0, p); err != nil {
				t.Fatal(err)
			}
		}
		_ = i
	}
	st, err := rec.Close()
	if err != nil || st.Started || st.Frames[0] != 0 {
		t.Fatalf("Close = %+v, %v; want not started", st, err)
	}
	if err := rec.WriteRTP(0, &rtp.Packet{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteRTP after Close = %v", err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 0 {
		t.Fatalf("file has %d bytes without a keyframe", fi.Size())
	}
}

// TestAsksForKeyframesToStaySeekable: a WebRTC sender makes keyframes only
// when asked, so after KeyframeEvery without one the recorder asks (rate
// limited to once a second), and stops asking once one arrives.
func TestAsksForKeyframesToStaySeekable(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "x.webm"))
	if err != nil {
		t.Fatal(err)
	}
	var now time.Duration
	asks := []time.Duration{}
	rec, err := New(f, []Track{{MimeType: "video/VP8", ClockRate: 90000}}, func() { asks = append(asks, now) })
	if err != nil {
		t.Fatal(err)
	}
	rec.now = func() time.Time { return time.Unix(0, 0).Add(now) }
	rng := rand.New(rand.NewPCG(5, 6))
	vp := rtp.NewPacketizer(1200, 96, 1, &codecs.VP8Payloader{}, rtp.NewRandomSequencer(), 90000)
	for i := range 30 * 9 { // 9 s at 30 fps; keyframes at 0 s and 7 s
		now = time.Duration(i) * time.Second / 30
		for _, p := range vp.Packetize(vp8Frame(rng, i == 0 || i == 30*7, 400), 3000) {
			if err := rec.WriteRTP(0, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	// Asked at ~5 s and ~6 s; not after the keyframe at 7 s.
	if len(asks) != 2 || asks[0] < KeyframeEvery || asks[1]-asks[0] < time.Second || asks[1] >= 7*time.Second {
		t.Fatalf("keyframe asked at %v; want twice between 5 s and 7 s, a second apart", asks)
	}
}
