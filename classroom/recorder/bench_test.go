package recorder

// TestBenchRecording (opt-in: -rec.bench) measures lesson recording against
// live forwarding in the same run:
//
//  1. the recorder alone: record.Recorder.WriteRTP of a lesson's packets
//     (1100-byte VP8 packets, 3 per frame, Opus every 10th) into a WebM
//     file on disk, as fast as it goes: packets/s and MB/s;
//  2. the live path: a real SFU on 127.0.0.1 with a pion publisher, one
//     pion subscriber and the recorder tapped in; the publisher sends
//     unpaced for a few seconds; reported are the forwarding loop's rate
//     (packets it handed to the subscriber's queue, per second), what the
//     subscriber received, what the recorder consumed, and the recorder's
//     queue drops.
//
//	go test -run TestBenchRecording -v ./classroom/recorder/ -rec.bench
import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/record"
	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/classroom/sfu"
)

var recBench = flag.Bool("rec.bench", false, "run the lesson-recording benchmark")

// benchPackets is a lesson's packets: frame f is 3 VP8 packets of 1100
// bytes (a keyframe every 300 frames), then an Opus packet every 10th.
func benchPackets(n int) (video, audio []*rtp.Packet) {
	body := make([]byte, 1100)
	for i := range body {
		body[i] = byte(i)
	}
	for i := 0; len(video) < n; i++ {
		f := i / 3
		pl := append([]byte{0x00}, body...)
		if i%3 == 0 {
			pl[0] = 0x10 // start of partition
			if f%300 == 0 {
				copy(pl[1:], []byte{0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00})
			} else {
				pl[1] = 0x01
			}
		}
		video = append(video, &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(i), Timestamp: uint32(f * 3000), Marker: i%3 == 2}, Payload: pl})
		if i%10 == 0 {
			a := len(audio)
			audio = append(audio, &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(a), Timestamp: uint32(a * 960)}, Payload: append([]byte{0xfc}, body[:120]...)})
		}
	}
	return video, audio
}

func TestBenchRecording(t *testing.T) {
	if !*recBench {
		t.Skip("benchmark: run with -rec.bench")
	}
	// 1. The recorder alone, into a file.
	video, audio := benchPackets(150000)
	f, err := os.Create(filepath.Join(t.TempDir(), "bench.webm"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := record.New(f, []record.Track{{MimeType: "video/VP8", ClockRate: 90000}, {MimeType: "audio/opus", ClockRate: 48000, Channels: 2}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i, p := range video {
		_ = r.WriteRTP(0, p)
		if i%10 == 0 {
			_ = r.WriteRTP(1, audio[i/10])
		}
	}
	st, err := r.Close()
	el := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := os.Stat(f.Name())
	n := len(video) + len(audio)
	t.Logf("recorder alone: %d packets (%d video frames written) in %v: %.0f packets/s, %.1f MB/s into WebM (%d bytes)",
		n, st.Frames[0], el.Round(time.Millisecond), float64(n)/el.Seconds(), float64(info.Size())/el.Seconds()/1e6, info.Size())

	// 2. The live path, forwarding and recording the same packets.
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	sessions := session.NewManager(nil)
	s, _, _ := sessions.Create(session.CreateRequest{Title: "Bench"})
	_, _ = sessions.Start(s.ID)
	loop := []net.IP{net.IPv4(127, 0, 0, 1)}
	sf, err := sfu.New(sfu.Config{Logger: log, ICEAddrs: loop, QueuePackets: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	rec := New(&memLessons{}, t.TempDir(), sessions, log)
	var consumed atomic.Int64
	rec.beforeWrite = func() { consumed.Add(1) } // once per packet taken, plus one
	sf.SetTap(rec.Tap)
	defer rec.Close()
	api, _ := sfu.NewAPI(loop)
	pub, _ := api.NewPeerConnection(webrtc.Configuration{})
	defer pub.Close()
	vt, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "teacher")
	at, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "teacher")
	for _, tr := range []webrtc.TrackLocal{vt, at} {
		if _, err := pub.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			t.Fatal(err)
		}
	}
	negotiateWith(t, ctx, pub, func(o string) (string, error) { _, a, err := sf.Publish(ctx, s.ID, o); return a, err })
	// A trickle first, so the tracks exist and the subscriber can join.
	for i := 0; i < 30; i++ {
		_ = vt.WriteRTP(video[i])
		_ = at.WriteRTP(audio[i])
		time.Sleep(10 * time.Millisecond)
	}
	sub, _ := api.NewPeerConnection(webrtc.Configuration{})
	defer sub.Close()
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		_, _ = sub.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
	}
	var got atomic.Int64
	sub.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			got.Add(1)
		}
	})
	negotiateWith(t, ctx, sub, func(o string) (string, error) { _, a, err := sf.Subscribe(ctx, s.ID, o); return a, err })
	for i := 30; got.Load() == 0; i++ {
		if ctx.Err() != nil {
			t.Fatal("subscriber got nothing")
		}
		_ = vt.WriteRTP(video[i])
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	// Paced stages, each 2 s: a lesson is ~330 packets/s; the stages go
	// to 100 times that.
	next := 1000
	for _, rate := range []int{1000, 5000, 10000, 20000, 40000} {
		fw0, got0, con0, drop0 := sf.Totals().Forwarded, got.Load(), consumed.Load(), rec.Status(s.ID).(Status).QueueDrops
		sent := 0
		start := time.Now()
		for time.Since(start) < 2*time.Second && next < len(video) {
			due := int(time.Since(start).Seconds()*float64(rate)) + 1
			for ; sent < due && next < len(video); next++ {
				if vt.WriteRTP(video[next]) == nil {
					sent++
				}
				if next%10 == 0 && at.WriteRTP(audio[next/10]) == nil {
					sent++
				}
			}
			time.Sleep(time.Millisecond)
		}
		el := time.Since(start)
		time.Sleep(300 * time.Millisecond) // let the queues drain
		fw, rx, con := sf.Totals().Forwarded-fw0, got.Load()-got0, consumed.Load()-con0
		drops := rec.Status(s.ID).(Status).QueueDrops - drop0
		t.Logf("live path at %d pkts/s for %v: publisher sent %.0f pkts/s; forwarding loop queued %.0f pkts/s to the subscriber (received %.0f); recorder consumed %.0f pkts/s, queue drops %d",
			rate, el.Round(time.Millisecond), float64(sent)/el.Seconds(), float64(fw)/el.Seconds(), float64(rx)/el.Seconds(), float64(con)/el.Seconds(), drops)
	}
}
