package sfu_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/classroom/sfu"
)

// vp8Watcher reads a subscriber's VP8 packets: packets per temporal
// layer since reset, every sequence number that arrived, and each
// picture's picture ID and first sequence number (to check that the IDs
// run on without a gap over the pictures the edge dropped).
type vp8Watcher struct {
	mu      sync.Mutex
	perT    [3]int
	counted bool
	started bool
	ext     int64
	seen    map[int64]bool
	pics    map[uint32][2]int64 // timestamp → first extended sequence number, picture ID
}

func (w *vp8Watcher) watch(t *testing.T, pc *webrtc.PeerConnection) {
	w.seen, w.pics = map[int64]bool{}, map[uint32][2]int64{}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		video := tr.Kind() == webrtc.RTPCodecTypeVideo
		go func() {
			for {
				p, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				if video {
					w.packet(p)
				}
			}
		}()
	})
}

func (w *vp8Watcher) packet(p *rtp.Packet) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ext := int64(p.SequenceNumber)
	if w.started {
		ext = w.ext + int64(int16(p.SequenceNumber-uint16(w.ext)))
	}
	if !w.started || ext > w.ext {
		w.ext = ext
	}
	w.started = true
	w.seen[ext] = true
	var d codecs.VP8Packet
	if _, err := d.Unmarshal(p.Payload); len(p.Payload) == 0 || err != nil || d.T == 0 {
		return // probe padding
	}
	if pic, ok := w.pics[p.Timestamp]; !ok || ext < pic[0] {
		w.pics[p.Timestamp] = [2]int64{ext, int64(d.PictureID)}
	}
	if w.counted {
		w.perT[min(int(d.TID), 2)]++
	}
}

func (w *vp8Watcher) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.counted, w.perT = true, [3]int{}
}

// snapshot returns the packets per temporal layer since reset, the holes
// in the sequence numbers and the breaks in the picture IDs, leaving out
// the newest 60 packets (a retransmission may be on its way).
func (w *vp8Watcher) snapshot() (perT [3]int, holes, idBreaks int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	lo, hi := w.ext, w.ext-60
	for s := range w.seen {
		lo = min(lo, s)
	}
	for s := lo; s <= hi; s++ {
		if !w.seen[s] {
			holes++
		}
	}
	var pics [][2]int64
	for _, p := range w.pics {
		if p[0] <= hi {
			pics = append(pics, p)
		}
	}
	slices.SortFunc(pics, func(a, b [2]int64) int { return int(a[0] - b[0]) })
	for i := 1; i < len(pics); i++ {
		if pics[i][1] != (pics[i-1][1]+1)&0x7fff {
			idBreaks++
		}
	}
	return w.perT, holes, idBreaks
}

// A pion publisher sends one VP8 encoding with three temporal layers
// (L1T3: RFC 7741 descriptors with TID, Y, TL0PICIDX and picture ID; the
// frames are not decodable, the descriptors are what the edge reads);
// two pion subscribers: one held at its lowest layer gets the base and
// middle temporal layers only (half the frame rate), the other all
// three. Both see sequence numbers and picture IDs without a gap.
func TestVP8TemporalForwardedByLayer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := sfu.New(sfu.Config{ICEAddrs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	vp8TemporalPublish(t, ctx, s)
	time.Sleep(1200 * time.Millisecond) // the layers measured
	subscribe := func(low bool) *vp8Watcher {
		sub := loopPeer(t)
		w := &vp8Watcher{}
		w.watch(t, sub)
		ss, answer, err := s.Subscribe(ctx, "class", string(mediatest.Offer(t, ctx, sub)))
		if err != nil {
			t.Fatal(err)
		}
		if low {
			ss.SetHoldLow(func(string) bool { return true })
		}
		if err := sub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
			t.Fatal(err)
		}
		return w
	}
	low, full := subscribe(true), subscribe(false)
	// Both settle within a few seconds (allow 20 on a loaded machine).
	var lowT, fullT [3]int
	var lowHoles, fullHoles, lowBreaks, fullBreaks int
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); {
		low.reset()
		full.reset()
		time.Sleep(1500 * time.Millisecond)
		lowT, lowHoles, lowBreaks = low.snapshot()
		fullT, fullHoles, fullBreaks = full.snapshot()
		if lowT[0] > 0 && lowT[1] > 0 && lowT[2] == 0 && fullT[2] > 0 {
			break
		}
	}
	t.Logf("held low: per temporal layer %v, holes %d, picture ID breaks %d; full: %v, holes %d, breaks %d; links %+v",
		lowT, lowHoles, lowBreaks, fullT, fullHoles, fullBreaks, s.Links("class"))
	if lowT[0] == 0 || lowT[1] == 0 || lowT[2] != 0 {
		t.Errorf("held low: per temporal layer %v, want T0 and T1 only", lowT)
	}
	if fullT[0] == 0 || fullT[1] == 0 || fullT[2] == 0 {
		t.Errorf("full: per temporal layer %v, want all three", fullT)
	}
	if lowHoles != 0 || fullHoles != 0 {
		t.Errorf("holes in the sequence numbers: held low %d, full %d", lowHoles, fullHoles)
	}
	if lowBreaks != 0 || fullBreaks != 0 {
		t.Errorf("picture IDs not continuous: held low %d breaks, full %d", lowBreaks, fullBreaks)
	}
	got := s.SVCLayers()
	if got[[2]int{0, 1}] != 1 || got[[2]int{0, 2}] != 1 {
		t.Errorf("SVCLayers %v, want one subscriber at T1 and one at T2", got)
	}
}

// vp8TemporalPublish starts a pion publisher of VP8 L1T3 and Opus in s's
// room "class": 30 pictures a second of two 900-byte packets (~430
// kbit/s, half of it in T2); a keyframe when asked and every 3 s.
func vp8TemporalPublish(t *testing.T, ctx context.Context, s *sfu.SFU) {
	t.Helper()
	vp8 := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
	layeredPublish(t, ctx, s, vp8, 65000, func(i int, key bool, seq uint16) []*rtp.Packet { // the sequence number wraps during the test
		return sfu.VP8Picture(i+32700, key, seq, 2, 900) // the picture ID wraps too
	})
}
