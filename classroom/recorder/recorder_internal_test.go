package recorder

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/campusedge/campusedge/edge/media"
)

// memLessons keeps imported lessons in memory.
type memLessons struct {
	mu    sync.Mutex
	items []media.Item
}

func (m *memLessons) AddLocal(_ context.Context, r io.Reader, _ int64, meta media.Item) (media.Item, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return media.Item{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	meta.ID = "l" + string(rune('a'+len(m.items)))
	meta.Size = int64(len(b))
	m.items = append(m.items, meta)
	return meta, nil
}

// negotiateWith connects an offerer to the SFU through f (Publish or Subscribe).
func negotiateWith(t *testing.T, ctx context.Context, pc *webrtc.PeerConnection, f func(string) (string, error)) {
	t.Helper()
	answer, err := f(string(mediatest.Offer(t, ctx, pc)))
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
}

// TestBlockedRecorderDoesNotSlowForwarding: the recorder stalls (a disk
// that stopped taking writes) while a lesson is live; a subscriber still
// receives every packet the publisher sends, the recorder's own queue
// overflows and counts its drops, and once the disk is back the lesson is
// still finalised and imported.
func TestBlockedRecorderDoesNotSlowForwarding(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	sessions := session.NewManager(nil)
	s, _, err := sessions.Create(session.CreateRequest{Title: "Blocked disk"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sessions.Start(s.ID); err != nil {
		t.Fatal(err)
	}
	loop := []net.IP{net.IPv4(127, 0, 0, 1)}
	sf, err := sfu.New(sfu.Config{Logger: log, ICEAddrs: loop})
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	store := &memLessons{}
	rec := New(store, t.TempDir(), sessions, log)
	rec.queueLen = 256
	hold := make(chan struct{})
	var blocked atomic.Int64
	rec.beforeWrite = func() {
		select {
		case <-hold:
		default:
			blocked.Add(1)
			<-hold
		}
	}
	sf.SetTap(rec.Tap)
	defer rec.Close()

	api, err := sfu.NewAPI(loop)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	video, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "teacher")
	audio, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "teacher")
	for _, tr := range []webrtc.TrackLocal{video, audio} {
		if _, err := pub.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			t.Fatal(err)
		}
	}
	negotiateWith(t, ctx, pub, func(o string) (string, error) {
		_, a, err := sf.Publish(ctx, s.ID, o)
		return a, err
	})
	var sent atomic.Int64
	sendCtx, stopSend := context.WithCancel(ctx)
	defer stopSend()
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		tick := time.NewTicker(2 * time.Millisecond) // 500 video packets/s
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-sendCtx.Done():
				return
			case <-tick.C:
			}
			f := []byte{0x10, 0x01, 0x00, 0x00, byte(n), byte(n >> 8)}
			if n == 0 || n%250 == 0 {
				f = []byte{0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, byte(n)}
			}
			if video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, Marker: true, SequenceNumber: uint16(n), Timestamp: uint32(n * 180)}, Payload: f}) == nil {
				sent.Add(1)
			}
			if n%10 == 0 {
				_ = audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(n / 10), Timestamp: uint32(n / 10 * 960)}, Payload: []byte{0xfc, byte(n)}})
			}
		}
	}()

	sub, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := sub.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	var got atomic.Int64
	sub.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			if tr.Kind() == webrtc.RTPCodecTypeVideo {
				got.Add(1)
			}
		}
	})
	negotiateWith(t, ctx, sub, func(o string) (string, error) {
		_, a, err := sf.Subscribe(ctx, s.ID, o)
		return a, err
	})
	deadline := time.Now().Add(10 * time.Second)
	for got.Load() < 50 {
		if time.Now().After(deadline) {
			t.Fatal("the subscriber receives nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Measure while the recorder is blocked and its queue overflows.
	s0, g0 := sent.Load(), got.Load()
	time.Sleep(2 * time.Second)
	s1, g1 := sent.Load(), got.Load()
	st := rec.Status(s.ID).(Status)
	if blocked.Load() == 0 || st.QueueDrops == 0 {
		t.Fatalf("the recorder was not blocked (blocked %d, queue drops %d): the test proves nothing", blocked.Load(), st.QueueDrops)
	}
	// In-flight packets make the window edges fuzzy by a few.
	if fwd, want := g1-g0, s1-s0; fwd < want*98/100 {
		t.Errorf("with the recorder blocked the subscriber got %d of %d packets sent", fwd, want)
	}
	t.Logf("recorder blocked: subscriber got %d of %d video packets; recorder queue dropped %d", g1-g0, s1-s0, st.QueueDrops)

	// The disk comes back; the session ends; the lesson is imported.
	close(hold)
	time.Sleep(600 * time.Millisecond) // new keyframe every 250 packets
	stopSend()
	<-sendDone
	if _, err := sessions.End(s.ID); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		st = rec.Status(s.ID).(Status)
		if st.State == StateDone || st.State == StateFailed || st.State == StateNotRecorded || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.State != StateDone || st.MediaID == "" || st.QueueDrops == 0 {
		t.Fatalf("after the stall the recording is %+v", st)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.items) != 1 || store.items[0].MIME != "video/webm" || store.items[0].Size != st.Bytes {
		t.Errorf("imported %+v, status %+v", store.items, st)
	}
}
