package classroom_test

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/edge/metricstest"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// The school-day soak is opt-in (about 15 minutes for 60 classes):
//
//	go test -run TestBenchSoakDay -v -timeout 60m ./classroom/ -soak.bench
//	go test -run TestBenchSoakDay -v -timeout 60m ./classroom/ -soak.bench -soak.classes 60 -soak.seconds 10
//
// It builds and starts a real edged as its own process and runs a school
// day compressed: one class after another, each with a WHIP publisher of
// a ~2.4 Mbit/s VP8 + Opus lesson (recorded: the default), 20 WHEP viewers
// joining over 5 s (a quarter leave by DELETE mid-class, a quarter vanish
// mid-class without a word, a quarter vanish at the end, a quarter DELETE
// at the end), two classroom terminals and the master on the control
// channel raising and lowering hands and answering a quiz, then the class
// ended through the API. At the idle point after each class (every live
// gauge of /metrics back at zero) it reads edged's live heap after GC
// (GET /api/v1/debug/pprof/heap?gc=1&debug=1, "# HeapAlloc"), goroutines,
// open file descriptors and RSS, and reports the least-squares growth of
// the live heap per class (must be < 0.2 MB), the last idle point against
// the first (within 10 MB), and goroutines and fds against the first.
var (
	soakBench   = flag.Bool("soak.bench", false, "run the school-day soak benchmark (TestBenchSoakDay)")
	soakClasses = flag.Int("soak.classes", 60, "classes in -soak.bench")
	soakSeconds = flag.Int("soak.seconds", 10, "seconds of media per class in -soak.bench")
	soakViewers = flag.Int("soak.viewers", 20, "WHEP viewers per class in -soak.bench")
)

// Limits the soak holds edged to (issue 21).
const (
	soakSlopeLimitMB = 0.2
	soakReturnMB     = 10
)

type soakPoint struct {
	heapMB, rssMB float64
	goroutines    int
	fds           int
}

func TestBenchSoakDay(t *testing.T) {
	if !*soakBench {
		t.Skip("opt-in: run with -soak.bench (see the comment above)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 55*time.Minute)
	defer cancel()
	e, pid := startEdgedProcess(t, ctx, "")
	first := e.createClass(t, ctx, "soak rooms", 2) // makes the two classrooms
	rooms := first.Classrooms
	if resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions/"+first.ID+"/end", e.admin, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("end: %d %s", resp.StatusCode, b)
	}
	fmt.Printf("school-day soak: %d classes of %d s, %d WHEP viewers each, ~%.1f Mbit/s VP8 + Opus by WHIP, recording on, %d CPUs\n",
		*soakClasses, *soakSeconds, *soakViewers, float64(benchVideoPayload*benchPktsPerFrame*benchFPS*8)/1e6, numCPU())
	waitIdle(t, ctx, e)
	start := soakMeasure(t, ctx, e, pid)
	fmt.Printf("%6s %10s %9s %11s %5s %8s\n", "class", "heap MB", "RSS MB", "goroutines", "fds", "secs")
	fmt.Printf("%6s %10.2f %9.1f %11d %5d\n", "start", start.heapMB, start.rssMB, start.goroutines, start.fds)
	var pts []soakPoint
	began := time.Now()
	for i := range *soakClasses {
		t0 := time.Now()
		soakClass(t, ctx, e, rooms, i)
		waitIdle(t, ctx, e)
		p := soakMeasure(t, ctx, e, pid)
		pts = append(pts, p)
		fmt.Printf("%6d %10.2f %9.1f %11d %5d %8.1f\n", i+1, p.heapMB, p.rssMB, p.goroutines, p.fds, time.Since(t0).Seconds())
	}
	time.Sleep(5 * time.Second) // the day is over: what is left after a pause
	end := soakMeasure(t, ctx, e, pid)
	fmt.Printf("%6s %10.2f %9.1f %11d %5d\n", "end", end.heapMB, end.rssMB, end.goroutines, end.fds)

	heaps := make([]float64, len(pts))
	for i, p := range pts {
		heaps[i] = p.heapMB
	}
	slope := lsqSlope(heaps)
	f := pts[0]
	fmt.Printf("live heap after GC at the idle points: slope %+.4f MB/class (limit %.1f), first %.2f MB, last %.2f MB, after the day %.2f MB (%+.2f MB)\n",
		slope, soakSlopeLimitMB, f.heapMB, pts[len(pts)-1].heapMB, end.heapMB, end.heapMB-f.heapMB)
	fmt.Printf("goroutines %d → %d, fds %d → %d, RSS %.1f → %.1f MB; %d classes in %v\n",
		f.goroutines, end.goroutines, f.fds, end.fds, f.rssMB, end.rssMB, len(pts), time.Since(began).Round(time.Second))
	if slope >= soakSlopeLimitMB {
		t.Errorf("the live heap grows %.3f MB per class (limit %.1f)", slope, soakSlopeLimitMB)
	}
	if d := end.heapMB - f.heapMB; d > soakReturnMB {
		t.Errorf("after the day the live heap is %.1f MB above the first idle point (limit %d)", d, soakReturnMB)
	}
	if end.goroutines > f.goroutines+3 || end.fds > f.fds+3 {
		t.Errorf("goroutines %d → %d, fds %d → %d: not back to their idle counts", f.goroutines, end.goroutines, f.fds, end.fds)
	}
}

var heapAllocRE = regexp.MustCompile(`(?m)^# HeapAlloc = (\d+)$`)

// soakMeasure reads edged's live heap after GC (twice collected: objects
// with finalizers go on the second), goroutines, fds and RSS.
func soakMeasure(t *testing.T, ctx context.Context, e *edge, pid int) soakPoint {
	t.Helper()
	var heap float64
	for range 2 {
		resp, b := e.Do(t, ctx, "GET", "/api/v1/debug/pprof/heap?gc=1&debug=1", e.admin, "", nil)
		m := heapAllocRE.FindSubmatch(b)
		if resp.StatusCode != http.StatusOK || m == nil {
			t.Fatalf("heap profile: %d %.300s", resp.StatusCode, b)
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		heap = v / (1 << 20)
	}
	_, b := e.Do(t, ctx, "GET", "/metrics", "", "", nil)
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return soakPoint{heapMB: heap, rssMB: metricstest.Value(b, "process_resident_memory_bytes") / (1 << 20),
		goroutines: int(metricstest.Value(b, "go_goroutines")), fds: len(ents)}
}

// soakViewer is one WHEP viewer on its own socket, so it can vanish.
type soakViewer struct {
	pc       *webrtc.PeerConnection
	conn     net.PacketConn
	location string
}

func soakWatch(t *testing.T, ctx context.Context, e *edge, sessionID, token string) *soakViewer {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := mediatest.VanishingAPI(t, conn).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	return &soakViewer{pc: pc, conn: conn, location: mediatest.Watch(t, ctx, e, pc, sessionID, token)}
}

// soakPublish WHIPs the lesson: 30 frames/s of 9 × 1100-byte VP8 packets
// (a keyframe with its dimensions every 2 s and when asked) and Opus every
// 20 ms, until ctx ends. It returns the peer connection and a channel
// closed when the sender stops.
func soakPublish(t *testing.T, ctx context.Context, e *edge, sessionID, token string) (*webrtc.PeerConnection, <-chan struct{}) {
	t.Helper()
	pc, err := mediatest.LoopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	video, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "soak")
	audio, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "soak")
	vtr, err := pc.AddTransceiverFromTrack(video, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(audio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	needKey := true
	go func() {
		for {
			pkts, _, err := vtr.Sender().ReadRTCP()
			if err != nil {
				return
			}
			for _, pk := range pkts {
				if _, ok := pk.(*rtcp.PictureLossIndication); ok {
					mu.Lock()
					needKey = true
					mu.Unlock()
				}
			}
		}
	}()
	resp, body := e.Do(t, ctx, "POST", "/whip/"+sessionID, token, "application/sdp", mediatest.Offer(t, ctx, pc))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHIP: %d %s", resp.StatusCode, body)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		key := make([]byte, benchVideoPayload)
		copy(key, []byte{0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01}) // VP8 keyframe, 640x480
		delta := make([]byte, benchVideoPayload)
		copy(delta, []byte{0x10, 0x01, 0x00, 0x00})
		cont := make([]byte, benchVideoPayload) // later packets of a frame: no S bit
		ap := make([]byte, benchAudioPayload)
		ap[0] = 0xfc
		start := time.Now()
		var seq, aseq uint16
		for frame := 0; ctx.Err() == nil; frame++ {
			if d := time.Until(start.Add(time.Duration(frame) * time.Second / benchFPS)); d > 0 {
				time.Sleep(d)
			}
			mu.Lock()
			k := needKey || frame%(2*benchFPS) == 0
			needKey = false
			mu.Unlock()
			for i := range benchPktsPerFrame {
				pl := cont
				if i == 0 {
					pl = delta
					if k {
						pl = key
					}
				}
				_ = video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(frame * 3000), Marker: i == benchPktsPerFrame-1}, Payload: pl})
				seq++
			}
			if frame%3 == 0 {
				for range 2 { // 50 packets/s on average
					_ = audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: aseq, Timestamp: uint32(aseq) * 960}, Payload: ap})
					aseq++
				}
			}
		}
	}()
	return pc, done
}

// soakClass runs one class of the soak.
func soakClass(t *testing.T, ctx context.Context, e *edge, rooms []string, n int) {
	t.Helper()
	media := time.Duration(*soakSeconds) * time.Second
	s := e.createClassIn(t, ctx, fmt.Sprintf("Soak %d", n+1), rooms)
	master := joined(t, ctx, e, s.Tokens.Master, "master")
	termA := joined(t, ctx, e, s.Tokens.Classrooms[rooms[0]].Terminal, "Room A")
	termB := joined(t, ctx, e, s.Tokens.Classrooms[rooms[1]].Terminal, "Room B")

	pubCtx, stopPub := context.WithCancel(ctx)
	pub, sent := soakPublish(t, pubCtx, e, s.ID, s.Tokens.Master)
	classStart := time.Now()
	var viewers []*soakViewer
	gap := 5 * time.Second / time.Duration(max(*soakViewers, 1))
	for i := range *soakViewers {
		viewers = append(viewers, soakWatch(t, ctx, e, s.ID, s.Tokens.Observer))
		if i == 2 {
			if r := termA.request(t, map[string]any{"type": "hand", "raised": true}); r.str("type") != "ack" {
				t.Fatalf("hand: %v", r)
			}
		}
		time.Sleep(gap)
	}
	q := map[string]any{"id": "q1", "kind": "single", "prompt": "2+2?", "options": []string{"3", "4", "5"}, "correct": []int{1}}
	if r := master.request(t, map[string]any{"type": "quiz", "question": q}); r.str("type") != "ack" {
		t.Fatalf("quiz: %v", r)
	}
	for _, c := range []*ctl{termA, termB} {
		c.wait(t, "the quiz", func(m msg) bool { return m.str("type") == "quiz" })
		if r := c.request(t, map[string]any{"type": "quiz_answer", "quiz_id": "q1", "choices": []int{1}}); r.str("type") != "ack" {
			t.Fatalf("answer: %v", r)
		}
	}
	if r := master.request(t, map[string]any{"type": "hand", "raised": false, "classroom_id": rooms[0]}); r.str("type") != "ack" {
		t.Fatalf("lower hand: %v", r)
	}
	// Mid-class: a quarter leave by DELETE, a quarter vanish.
	time.Sleep(time.Until(classStart.Add(media / 2)))
	for i, v := range viewers {
		switch i % 4 {
		case 0:
			if resp, b := e.Do(t, ctx, "DELETE", v.location, s.Tokens.Observer, "", nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("DELETE viewer: %d %s", resp.StatusCode, b)
			}
		case 1:
			_ = v.conn.Close()
		}
	}
	if r := termB.request(t, map[string]any{"type": "hand", "raised": true}); r.str("type") != "ack" {
		t.Fatalf("hand: %v", r)
	}
	time.Sleep(time.Until(classStart.Add(media)))
	// The end: a quarter vanish, a quarter DELETE, the teacher stops, the
	// class is ended through the API.
	for i, v := range viewers {
		switch i % 4 {
		case 2:
			_ = v.conn.Close()
		case 3:
			if resp, b := e.Do(t, ctx, "DELETE", v.location, s.Tokens.Observer, "", nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("DELETE viewer: %d %s", resp.StatusCode, b)
			}
		}
	}
	stopPub()
	<-sent
	if resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions/"+s.ID+"/end", e.admin, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("end: %d %s", resp.StatusCode, b)
	}
	waitFor(t, 60*time.Second, "the recording's import", func() bool {
		st := e.recording(t, ctx, s.ID).State
		if st == "failed" || st == "not_recorded" {
			t.Fatalf("class %d: recording %s", n+1, st)
		}
		return st == "done"
	})
	_ = pub.Close()
	for _, v := range viewers {
		_ = v.pc.Close()
		_ = v.conn.Close()
	}
	for _, c := range []*ctl{master, termA, termB} {
		_ = c.ws.Close()
	}
}
