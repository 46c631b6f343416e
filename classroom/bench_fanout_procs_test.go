package classroom_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
)

// With -janus.procs N the fan-out benchmark's viewers (TestBenchJanus,
// both servers' trials) run in N processes of their own, this test binary
// again (TestBenchFanoutViewers, started like the join benchmark's), not
// beside the publisher in the benchmark's process. Each viewer process
// does its own signalling (WHEP to edged, the VideoRoom REST API to
// Janus), counts what its viewers receive of the packets sent within the
// window the parent gives it on stdin, and reports its counts; the parent
// adds them to its own, so a trial's figures mean what they mean with the
// viewers in process.

// fanoutPlan tells a viewer process whom to watch: edged's session (URL,
// Session, Token) or a Janus room (URL, Room); it takes viewers i with
// i % Procs == Proc of N.
type fanoutPlan struct {
	Server              string // "edged" or "janus"
	URL, Session, Token string
	Room                int
	N, Procs, Proc      int
	Rcvbuf              int
}

// fanoutBatch is what one viewer process counted over the window.
type fanoutBatch struct {
	Got, SockDrops, BufDrops int64
	DelaysMicros             []int64 // of the video packets in the window
}

const (
	envFanoutViewers  = "CAMPUSEDGE_FANOUT_VIEWERS"
	fanoutBatchPrefix = "FANOUTBATCH "
)

// fanoutAPI is the viewers' (and the publisher's) pion API: with rcvbuf
// > 0 on sockets with that receive buffer, counting pion's buffer drops
// into drops.
func fanoutAPI(t *testing.T, rcvbuf int, drops *atomic.Int64) *webrtc.API {
	if rcvbuf <= 0 {
		return mediatest.LoopbackAPI(t)
	}
	api, err := viewerAPI(rcvbuf, drops)
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// planFor is the part of srv a viewer process needs.
func planFor(t *testing.T, srv fanoutServer) fanoutPlan {
	switch s := srv.(type) {
	case *edgedFanout:
		return fanoutPlan{Server: "edged", URL: s.e.url, Session: s.s.ID, Token: s.s.Tokens.Observer}
	case *janusRoom:
		return fanoutPlan{Server: "janus", URL: s.j.base, Room: s.id}
	}
	t.Fatalf("viewer processes: unknown server %T", srv)
	return fanoutPlan{}
}

// server is the plan's server, as far as a viewer needs it.
func (p fanoutPlan) server() fanoutServer {
	if p.Server == "janus" {
		return &janusRoom{j: &janusServer{base: p.URL, client: &http.Client{Timeout: 40 * time.Second}}, id: p.Room}
	}
	f := &edgedFanout{e: &edge{url: p.URL}}
	f.s.ID, f.s.Tokens.Observer = p.Session, p.Token
	return f
}

// startFanoutViewers starts procs viewer processes for srv's n viewers
// and waits until every viewer has its first packet.
func startFanoutViewers(t *testing.T, ctx context.Context, srv fanoutServer, n, rcvbuf, procs int) []*viewerProc {
	plan := planFor(t, srv)
	plan.N, plan.Procs, plan.Rcvbuf = n, procs, rcvbuf
	var vps []*viewerProc
	for k := range procs {
		plan.Proc = k
		p, err := startViewerProc(ctx, "TestBenchFanoutViewers", envFanoutViewers, plan)
		if err != nil {
			t.Fatal(err)
		}
		vps = append(vps, p)
	}
	for _, p := range vps {
		if err := p.waitReady(ctx, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	return vps
}

// viewersCPU is the CPU this process (the publisher, and the viewers
// without -janus.procs) and the viewer processes have used.
func viewersCPU(t *testing.T, vps []*viewerProc) time.Duration {
	d := procCPU(t, os.Getpid())
	for _, p := range vps {
		d += procCPU(t, p.cmd.Process.Pid)
	}
	return d
}

// TestBenchFanoutViewers is not a test of its own: it is the viewer
// process TestBenchJanus starts (-janus.procs), and runs only with the
// plan in its environment. It prints viewersReady once its viewers have
// their first packet, reads the window (two unix-nano times) from stdin,
// and prints its fanoutBatch as one JSON line 1 s after the window.
func TestBenchFanoutViewers(t *testing.T) {
	raw := os.Getenv(envFanoutViewers)
	if raw == "" {
		t.Skip("the viewer process of TestBenchJanus (-janus.bench -janus.procs); runs only when started by it")
	}
	var plan fanoutPlan
	if err := json.Unmarshal([]byte(raw), &plan); err != nil {
		t.Fatalf("plan: %v", err)
	}
	if plan.Procs < 1 || plan.N < 1 || plan.N > 500 {
		t.Fatalf("plan: bad counts %+v", plan)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var bufDrops atomic.Int64
	api := fanoutAPI(t, plan.Rcvbuf, &bufDrops)
	srv := plan.server()
	var c fanoutCount
	var subs []*webrtc.PeerConnection
	for i := plan.Proc; i < plan.N; i += plan.Procs {
		subs = append(subs, srv.subscribe(t, ctx, api, c.onTrack()))
	}
	waitFor(t, 60*time.Second, "every subscriber's first packet", func() bool { return c.ready.Load() == int64(len(subs)) })
	fmt.Println(viewersReady)
	var start, end int64
	if _, err := fmt.Fscan(os.Stdin, &start, &end); err != nil || end <= start {
		t.Fatalf("window from stdin: %v (%d, %d)", err, start, end)
	}
	c.winStart.Store(start)
	c.winEnd.Store(end)
	time.Sleep(time.Until(time.Unix(0, start)))
	sock0, err := socketDrops(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	buf0 := bufDrops.Load()
	time.Sleep(time.Until(time.Unix(0, end).Add(time.Second))) // packets in flight
	sock1, err := socketDrops(os.Getpid())                     // before the sockets close
	if err != nil {
		t.Fatal(err)
	}
	out := fanoutBatch{SockDrops: sock1 - sock0, BufDrops: bufDrops.Load() - buf0}
	for _, pc := range subs {
		_ = pc.Close()
	}
	if r, ok := srv.(*janusRoom); ok {
		for _, h := range r.handles {
			h.destroy(ctx)
		}
	}
	time.Sleep(200 * time.Millisecond) // OnTrack goroutines flush their delays
	out.Got = c.got.Load()
	for _, d := range c.takeDelays() {
		out.DelaysMicros = append(out.DelaysMicros, d.Microseconds())
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s%s\n", fanoutBatchPrefix, b)
}
