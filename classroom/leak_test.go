package classroom_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/edge/logtest"
	"github.com/campusedge/campusedge/edge/metricstest"
	"github.com/pion/webrtc/v4"
)

// leakClasses is how many classes TestEndedClassesLeaveNothing measures,
// after leakWarmup classes that fill the pools and caches a first class
// fills legitimately (pion's buffer pools, the HTTP client's connections).
const (
	leakClasses = 10
	leakWarmup  = 2
	// leakSlopeLimit is the live-heap growth per ended class the test
	// tolerates: well above the noise of this in-process measurement
	// (~±50 KB) and well below what a class left behind before the fix
	// (its publisher's keyframe cache, peer connection and recorder).
	leakSlopeLimit = 150 << 10
)

// TestEndedClassesLeaveNothing runs short classes in-process, each of the
// shape a school day has (a WHIP publisher, WHEP viewers leaving by
// DELETE, vanishing, or staying to the end, control clients raising hands
// and answering a quiz, recording on, the class ended through the API),
// and fails when the edge's live heap after GC grows from one idle point
// to the next.
func TestEndedClassesLeaveNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	e := startEdgeLog(t, ctx, &logtest.Buffer{Tail: 64 << 10})
	first := e.createClass(t, ctx, "warm-up", 2)
	rooms := first.Classrooms
	_, _ = e.Do(t, ctx, "POST", "/api/v1/sessions/"+first.ID+"/end", e.admin, "", nil)

	var heaps []float64
	var gor []int
	for i := range leakWarmup + leakClasses {
		if !t.Run(fmt.Sprintf("class%02d", i), func(t *testing.T) { runShortClass(t, ctx, e, rooms, i) }) {
			t.FailNow()
		}
		waitIdle(t, ctx, e)
		h := liveHeap()
		heaps = append(heaps, float64(h))
		gor = append(gor, runtime.NumGoroutine())
		t.Logf("idle after class %2d: live heap %6.2f MB, goroutines %d", i, float64(h)/(1<<20), runtime.NumGoroutine())
	}
	// What is kept on purpose: every ended session (with its recording
	// outcome), bounded by session.MaxEndedSessions.
	_, b := e.Do(t, ctx, "GET", "/metrics", "", "", nil)
	if got, want := metricstest.Value(b, `campusedge_sessions_kept{state="ended"}`), float64(1+leakWarmup+leakClasses); got != want {
		t.Errorf("ended sessions kept: %v, want %v", got, want)
	}
	if got, want := metricstest.Value(b, "campusedge_recording_summaries"), float64(leakWarmup+leakClasses); got != want {
		t.Errorf("recording summaries kept: %v, want %v", got, want)
	}
	m := heaps[leakWarmup:]
	slope := lsqSlope(m)
	t.Logf("live heap after each class (from class %d): slope %+.1f KB/class, first %.2f MB, last %.2f MB",
		leakWarmup, slope/1024, m[0]/(1<<20), m[len(m)-1]/(1<<20))
	if slope > leakSlopeLimit {
		t.Errorf("the live heap grows %.0f KB per ended class (limit %d KB): something of each class is kept after it ended", slope/1024, leakSlopeLimit>>10)
	}
	if g0, g1 := gor[leakWarmup], gor[len(gor)-1]; g1 > g0+5 {
		t.Errorf("goroutines at idle grew from %d to %d over %d classes", g0, g1, leakClasses)
	}
}

// runShortClass is one class: publisher, three viewers, two classrooms on
// the control channel, a quiz and a raised hand, about a second of
// recorded media, then the end through the API. Every client it starts is
// closed by its cleanups when the subtest returns.
func runShortClass(t *testing.T, ctx context.Context, e *edge, rooms []string, n int) {
	s := e.createClassIn(t, ctx, fmt.Sprintf("Soak %d", n), rooms)
	master := joined(t, ctx, e, s.Tokens.Master, "master")
	termA := joined(t, ctx, e, s.Tokens.Classrooms[rooms[0]].Terminal, "Room A")
	termB := joined(t, ctx, e, s.Tokens.Classrooms[rooms[1]].Terminal, "Room B")

	publishKnown(t, ctx, e, s.ID, s.Tokens.Master)
	leaver := mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Observer)
	stayer := mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Observer)
	vanish := vanishingViewer(t, ctx, e, s.ID, s.Tokens.Observer)
	waitFor(t, 10*time.Second, "the viewers' media", func() bool {
		return leaver.PC.ConnectionState() == webrtc.PeerConnectionStateConnected &&
			stayer.PC.ConnectionState() == webrtc.PeerConnectionStateConnected
	})

	if r := termA.request(t, map[string]any{"type": "hand", "raised": true}); r.str("type") != "ack" {
		t.Fatalf("hand: %v", r)
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
	waitFor(t, 10*time.Second, "the recording to start", func() bool { return e.recording(t, ctx, s.ID).State == "recording" })
	time.Sleep(500 * time.Millisecond)
	if resp, b := e.Do(t, ctx, "DELETE", leaver.Location, s.Tokens.Observer, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE viewer: %d %s", resp.StatusCode, b)
	}
	_ = vanish.Close() // gone without a word; the class ends before ICE notices
	_ = termB.ws.Close()
	time.Sleep(500 * time.Millisecond)

	if resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions/"+s.ID+"/end", e.admin, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("end: %d %s", resp.StatusCode, b)
	}
	waitFor(t, 20*time.Second, "the recording's import", func() bool { return e.recording(t, ctx, s.ID).State == "done" })
}

// vanishingViewer is a WHEP viewer whose every packet goes through the
// returned socket: closing it makes the viewer vanish without a goodbye.
func vanishingViewer(t *testing.T, ctx context.Context, e *edge, sessionID, token string) net.PacketConn {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	pc, err := mediatest.VanishingAPI(t, conn).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	mediatest.Watch(t, ctx, e, pc, sessionID, token)
	return conn
}

// idleGauges are the /metrics gauges of what a live class holds: each
// must be back at zero once no class is live.
var idleGauges = []string{
	"campusedge_live_sessions", "campusedge_live_rooms", "campusedge_live_peers", "campusedge_live_publishers",
	"campusedge_live_subscribers", "campusedge_live_keyframe_caches", "campusedge_live_control_classes",
	"campusedge_live_interact_states", "campusedge_live_quiz_states", "campusedge_live_recorders", "campusedge_recordings_active",
}

// waitIdle waits for every gauge of idleGauges to read zero and fails
// naming those that do not.
func waitIdle(t *testing.T, ctx context.Context, e *edge) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, b := e.Do(t, ctx, "GET", "/metrics", "", "", nil)
		var busy []string
		for _, name := range idleGauges {
			if v := metricstest.Value(b, name); v != 0 {
				busy = append(busy, fmt.Sprintf("%s=%v", name, v))
			}
		}
		if len(busy) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after the class ended the edge still holds live objects: %v (-1: gauge missing)", busy)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // closed peers' goroutines wind down
}

// liveHeap is this process's live heap after garbage collection. Several
// cycles: finalizers (pion's, os.File's) free more on the next one.
func liveHeap() uint64 {
	for range 3 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// lsqSlope is the least-squares slope of ys over 0, 1, 2, ….
func lsqSlope(ys []float64) float64 {
	n := float64(len(ys))
	var sx, sy, sxx, sxy float64
	for i, y := range ys {
		x := float64(i)
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}
