package classroom_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/packetio"
	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/sfu"
)

// The join-burst benchmark is opt-in:
//
//	go test -run TestBenchJoinBurst -v -timeout 20m ./classroom/ -join.bench -join.subs 40,120
//
// A class starts with every classroom joining in the same second. It runs
// against a real edged process: a WHIP publisher sends the benchmark
// lesson (benchPublisher, sendLesson: VP8-shaped, a keyframe every 2 s),
// two steady WHEP viewers watch from before, then N WHEP viewers join,
// spread evenly over -join.spread, while the lesson runs (mid-GOP, so every
// joiner is primed from the edge's keyframe cache). Each joiner is watched
// for -join.seconds after the last join. Reported per N: video and audio
// loss over every joiner (gaps in the sequence numbers from its first
// packet to its last), joiners with any loss, video pauses the edge
// decided (campusedge_live_video_pauses_total), time to first frame (WHEP
// POST → the last packet of the first keyframe), the longest gap between
// two video packets at any joiner after its first frame, and, as the
// reference measured in the same run, the steady viewers' loss during the
// burst. Where the loss happened: packets the edge dropped from its
// per-subscriber queues, packets the kernel dropped at the viewers'
// sockets (receive buffer full; -join.rcvbuf sets its size), and the
// joiners' video loss split into the primed pictures and the live
// packets after them.
//
// The joiners are pion viewers that decrypt every packet: 120 of them take
// more CPU than the edge they measure. They run in -join.procs processes of
// their own (this test binary again, TestBenchJoinViewers), so their CPU
// and the edge's are read apart and the scheduler runs them as separate
// programs, and they count what was lost on their side: the kernel's drops
// at their sockets (/proc/PID/net/udp) and what pion's SRTP buffers
// dropped. "edge loss" is what the edge itself dropped (its queues); the
// claim is about that. "harness drop" is the viewers' own.
var (
	joinBench   = flag.Bool("join.bench", false, "run the join-burst benchmark (TestBenchJoinBurst)")
	joinSubs    = flag.String("join.subs", "40,120", "comma-separated joiner counts for -join.bench")
	joinSpread  = flag.Duration("join.spread", time.Second, "-join.bench: joins are spread evenly over this")
	joinSeconds = flag.Int("join.seconds", 6, "-join.bench: seconds each joiner is watched after the last join")
	joinRcvbuf  = flag.Int("join.rcvbuf", 4<<20, "-join.bench: the viewers' UDP receive buffer in `bytes` (0: the system's default, net.core.rmem_default); the kernel caps it at net.core.rmem_max and doubles it")
	joinProcs   = flag.Int("join.procs", 2, "-join.bench: `processes` the joiners are spread over (0: the test's own process); each is this test binary, so the viewers' CPU is theirs and the kernel drops at their sockets are told apart from the edge's")
	joinBefore  = flag.String("join.before", "", "-join.bench: also measure edged built from the module at this `dir` (e.g. a git worktree of an older commit), alternating the order")
)

func TestBenchJoinBurst(t *testing.T) {
	if !*joinBench {
		t.Skip("opt-in: run with -join.bench (see the comment above)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 18*time.Minute)
	defer cancel()
	type build struct {
		name string
		e    *edge
		pid  int
	}
	builds := []build{{name: "this"}}
	builds[0].e, builds[0].pid = startEdgedProcess(t, ctx, "")
	if *joinBefore != "" {
		b, pid := startEdgedProcess(t, ctx, *joinBefore)
		builds = append(builds, build{"before", b, pid})
	}
	fmt.Printf("join-burst benchmark: joins spread over %v, watched %ds after the last, viewers in %d processes (0: this one), viewer rcvbuf %d, %d CPUs, load %s\n", *joinSpread, *joinSeconds, *joinProcs, *joinRcvbuf, numCPU(), loadAvg())
	fmt.Printf("%-7s %5s %9s %9s %8s %7s %9s %9s %9s %10s %12s %10s %12s %10s %10s %12s %16s %9s %9s\n", "edged", "N", "vloss%", "aloss%", "lossy", "pauses", "ttff p50", "ttff p95", "ttff max", "max gap", "steady loss%", "edge drop", "edge rx drop", "sock drop", "buf drop", "backlog drop", "lost primed/live", "edge cpu", "view cpu")
	for i, n := range parseCounts(t, "-join.subs", *joinSubs) {
		order := builds
		if i%2 == 1 { // alternate which build goes first
			order = slices.Clone(builds)
			slices.Reverse(order)
		}
		for _, b := range order {
			r := runJoinBurst(t, ctx, b.e, b.pid, n)
			fmt.Printf("%-7s %5d %9.3f %9.3f %8d %7.0f %9s %9s %9s %10s %12.3f %10.0f %12d %10.0f %10d %12d %16s %9.2f %9.2f\n", b.name, n, r.videoLoss, r.audioLoss, r.lossy, r.pauses,
				r.ttff[0].Round(time.Millisecond), r.ttff[1].Round(time.Millisecond), r.ttff[2].Round(time.Millisecond), r.maxGap.Round(time.Millisecond), r.steadyLoss,
				r.edgeDrops, r.edgeRxDrops, r.sockDrops, r.bufDrops, r.backlogDrops, fmt.Sprintf("%d/%d", r.primedLost, r.liveLost), r.edgeCPU, r.viewerCPU)
		}
	}
}

type joinResult struct {
	videoLoss, audioLoss, steadyLoss float64 // percent
	lossy                            int
	pauses                           float64
	ttff                             [3]time.Duration // p50, p95, max
	maxGap                           time.Duration
	// Where lost packets went: dropped from the edge's per-subscriber
	// queues (campusedge_live_dropped_packets_total), and dropped by the
	// kernel at the viewers' own UDP sockets, their receive buffers full
	// (this process's sockets in /proc/self/net/udp).
	edgeDrops, sockDrops float64
	// edgeRxDrops: packets the kernel dropped at the edge's own sockets
	// (the publisher's media, the viewers' RTCP), the edge not reading
	// them in time: lost for every viewer at once.
	edgeRxDrops int64
	// backlogDrops: packets the kernel dropped host-wide because a CPU's
	// input backlog was full (/proc/net/softnet_stat; other processes'
	// traffic counts too).
	backlogDrops int64
	// Video packets lost in the cached pictures a joiner was primed with
	// (sent by the publisher before the joiner's WHEP POST) and after.
	primedLost, liveLost int
	// bufDrops: packets pion's buffers in the viewers (ICE, mux, SRTP)
	// dropped because the viewer did not read them in time.
	bufDrops int64
	// CPU-seconds per second over the burst and the watch after it: the
	// edge's, and the viewer processes' together (0 with -join.procs 0).
	edgeCPU, viewerCPU float64
}

// seqCount counts one track's packets at a viewer: distinct sequence
// numbers received, and the span from the first to the last.
type seqCount struct {
	seen        map[uint64]int64 // the lesson's send time of each (0: none in it)
	first, last uint64
	cycles      uint64
	prev        uint16
}

func (c *seqCount) add(seq uint16, sent int64) {
	if c.seen == nil {
		c.seen, c.prev = map[uint64]int64{}, seq
	}
	if seq < 0x1000 && c.prev > 0xf000 {
		c.cycles++
	}
	c.prev = seq
	u := c.cycles<<16 | uint64(seq)
	if len(c.seen) == 0 || u < c.first {
		c.first = u
	}
	c.last = max(c.last, u)
	c.seen[u] = sent
}

// lostBefore counts the packets missing between the first and the last
// whose nearest earlier packet was sent before t (unix nanos): for a
// joiner, the loss in the cached pictures it was primed with, as against
// the live packets after them.
func (c *seqCount) lostBefore(t int64) (primed, live int) {
	var prevSent int64
	for u := c.first; u <= c.last && len(c.seen) > 0; u++ {
		if s, ok := c.seen[u]; ok {
			prevSent = s
			continue
		}
		if prevSent != 0 && prevSent < t {
			primed++
		} else {
			live++
		}
	}
	return primed, live
}

// expected and received since the first packet.
func (c *seqCount) counts() (want, got int) {
	if len(c.seen) == 0 {
		return 0, 0
	}
	return int(c.last-c.first) + 1, len(c.seen)
}

// viewer is one WHEP viewer of the join benchmark.
type viewer struct {
	mu           sync.Mutex
	video, audio seqCount
	posted       time.Time
	firstFrame   time.Time // the last packet of the first keyframe arrived
	keyStarted   bool
	lastVideo    time.Time
	maxGap       time.Duration
	pc           *webrtc.PeerConnection
	err          error
}

func (v *viewer) onTrack(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	isVideo := tr.Kind() == webrtc.RTPCodecTypeVideo
	buf := make([]byte, 1500)
	var p rtp.Packet
	for {
		k, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		if p.Unmarshal(buf[:k]) != nil {
			continue
		}
		now := time.Now()
		sent, _ := lessonSendTime(p.Payload)
		v.mu.Lock()
		if !isVideo {
			v.audio.add(p.SequenceNumber, sent)
			v.mu.Unlock()
			continue
		}
		v.video.add(p.SequenceNumber, sent)
		if !v.keyStarted && len(p.Payload) > 1 && p.Payload[0]&0x10 != 0 && p.Payload[1]&1 == 0 {
			v.keyStarted = true
		}
		if v.keyStarted && v.firstFrame.IsZero() && p.Marker {
			v.firstFrame = now
		}
		if !v.firstFrame.IsZero() && !v.lastVideo.IsZero() {
			v.maxGap = max(v.maxGap, now.Sub(v.lastVideo))
		}
		v.lastVideo = now
		v.mu.Unlock()
	}
}

// join WHEPs v into the session; errors are kept for the caller (it runs
// in its own goroutine, where t.Fatal must not be called).
func (v *viewer) join(ctx context.Context, api *webrtc.API, url, session, token string) {
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		v.err = err
		return
	}
	v.pc = pc
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			v.err = err
			return
		}
	}
	pc.OnTrack(v.onTrack)
	v.mu.Lock()
	v.posted = time.Now()
	v.mu.Unlock()
	offer, err := pc.CreateOffer(nil)
	if err == nil {
		err = pc.SetLocalDescription(offer)
	}
	if err != nil {
		v.err = err
		return
	}
	select {
	case <-webrtc.GatheringCompletePromise(pc):
	case <-ctx.Done():
		v.err = ctx.Err()
		return
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/whep/"+session, strings.NewReader(pc.LocalDescription().SDP))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		v.err = err
		return
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != 201 {
		v.err = fmt.Errorf("WHEP: %d %s", resp.StatusCode, body)
		return
	}
	v.err = pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)})
}

// joinerStats is what one joiner saw.
type joinerStats struct {
	VideoWant, VideoGot, AudioWant, AudioGot int
	PrimedLost, LiveLost                     int
	TTFF, MaxGap                             time.Duration // TTFF < 0: no frame arrived
	Err                                      string
}

func (v *viewer) stats() joinerStats {
	v.mu.Lock()
	defer v.mu.Unlock()
	var st joinerStats
	if v.err != nil {
		st.Err = v.err.Error()
	}
	st.VideoWant, st.VideoGot = v.video.counts()
	st.AudioWant, st.AudioGot = v.audio.counts()
	st.PrimedLost, st.LiveLost = v.video.lostBefore(v.posted.UnixNano())
	st.TTFF, st.MaxGap = -1, v.maxGap
	if !v.firstFrame.IsZero() {
		st.TTFF = v.firstFrame.Sub(v.posted)
	}
	return st
}

// joinPlan tells a set of joiners when to join whom: joiner i of N joins
// at Start + Spread·i/N; a process takes those with i % Procs == Proc.
type joinPlan struct {
	URL, Session, Token string
	N, Procs, Proc      int
	Start               int64 // unix nanos
	Spread, Watch       time.Duration
	Rcvbuf              int
}

// joinBatch is what one process's joiners saw, and what was dropped on
// their side: by the kernel at their sockets, by pion's SRTP buffers.
type joinBatch struct {
	Joiners             []joinerStats
	SockDrops, BufDrops int64
	CPU                 time.Duration // the viewer process's, over the plan (child processes only)
}

// viewerAPI is the viewers' pion API: the tests' own (sfu.NewAPIWith) on
// sockets with rcvbuf bytes of receive buffer, counting into drops what
// its buffers drop: the SRTP buffers (pion's sizes, counted as they
// refuse) and the ICE and mux buffers (counted from pion's log).
func viewerAPI(rcvbuf int, drops *atomic.Int64) (*webrtc.API, error) {
	std, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	var n transport.Net = std
	if rcvbuf > 0 {
		n = rcvbufNet{std, rcvbuf}
	}
	return sfu.NewAPIWith([]net.IP{net.IPv4(127, 0, 0, 1)}, n, nil, func(se *webrtc.SettingEngine) {
		se.LoggerFactory = fullBufferLogs{drops}
		se.BufferFactory = func(kind packetio.BufferPacketType, _ uint32) io.ReadWriteCloser {
			b := packetio.NewBuffer()
			if kind == packetio.RTPBufferPacket {
				b.SetLimitSize(1000 * 1000)
			} else {
				b.SetLimitSize(100 * 1000)
			}
			return countingBuffer{b, drops}
		}
	})
}

// countingBuffer is a pion packet buffer that counts the packets it
// refuses because it is full (pion drops them silently).
type countingBuffer struct {
	b     *packetio.Buffer
	drops *atomic.Int64
}

func (c countingBuffer) Read(p []byte) (int, error) {
	n, _, err := c.b.Read(p, nil)
	return n, err
}

func (c countingBuffer) ReadWithAttributes(p []byte, a packetio.Attributes) (int, packetio.Attributes, error) {
	return c.b.Read(p, a)
}

func (c countingBuffer) Write(p []byte) (int, error) { return c.WriteWithAttributes(p, nil) }

func (c countingBuffer) WriteWithAttributes(p []byte, a packetio.Attributes) (int, error) {
	n, err := c.b.Write(p, a)
	if errors.Is(err, packetio.ErrFull) {
		c.drops.Add(1)
	}
	return n, err
}

func (c countingBuffer) Close() error { return c.b.Close() }

// fullBufferLogs is a pion logger that counts the packets pion's ICE and
// mux buffers dropped because they were full (pion only logs those) and
// discards every other message.
type fullBufferLogs struct{ drops *atomic.Int64 }

func (l fullBufferLogs) NewLogger(string) logging.LeveledLogger { return l }

func (l fullBufferLogs) count(msg string) {
	if strings.Contains(msg, "buffer is full") || strings.Contains(msg, "Buffer is full") {
		l.drops.Add(1)
	}
}

func (fullBufferLogs) Trace(string)                  {}
func (fullBufferLogs) Tracef(string, ...any)         {}
func (fullBufferLogs) Debug(string)                  {}
func (fullBufferLogs) Debugf(string, ...any)         {}
func (l fullBufferLogs) Info(msg string)             { l.count(msg) }
func (l fullBufferLogs) Infof(f string, args ...any) { l.count(fmt.Sprintf(f, args...)) }
func (l fullBufferLogs) Warn(msg string)             { l.count(msg) }
func (l fullBufferLogs) Warnf(f string, args ...any) { l.count(fmt.Sprintf(f, args...)) }
func (l fullBufferLogs) Error(msg string)            { l.count(msg) }
func (l fullBufferLogs) Errorf(f string, a ...any)   { l.count(fmt.Sprintf(f, a...)) }

// runJoiners joins this process's share of the plan's joiners, watches
// them until Start + Spread + Watch and returns what they saw.
func runJoiners(ctx context.Context, plan joinPlan) (joinBatch, error) {
	var bufDrops atomic.Int64
	api, err := viewerAPI(plan.Rcvbuf, &bufDrops)
	if err != nil {
		return joinBatch{}, err
	}
	sock0, err := socketDrops(os.Getpid())
	if err != nil {
		return joinBatch{}, err
	}
	start := time.Unix(0, plan.Start)
	var vs []*viewer
	var wg sync.WaitGroup
	for i := plan.Proc; i < plan.N; i += max(plan.Procs, 1) {
		v := &viewer{}
		vs = append(vs, v)
		wg.Add(1)
		go func(at time.Time) {
			defer wg.Done()
			time.Sleep(time.Until(at))
			v.join(ctx, api, plan.URL, plan.Session, plan.Token)
		}(start.Add(plan.Spread * time.Duration(i) / time.Duration(plan.N)))
	}
	wg.Wait()
	select {
	case <-time.After(time.Until(start.Add(plan.Spread + plan.Watch))):
	case <-ctx.Done():
		return joinBatch{}, ctx.Err()
	}
	var out joinBatch
	sock1, err := socketDrops(os.Getpid()) // before the sockets close and take their counts with them
	if err != nil {
		return joinBatch{}, err
	}
	out.SockDrops, out.BufDrops = sock1-sock0, bufDrops.Load()
	for _, v := range vs {
		out.Joiners = append(out.Joiners, v.stats())
		if v.pc != nil {
			_ = v.pc.Close()
		}
	}
	return out, nil
}

// envJoinViewers carries a joinPlan (JSON) to a viewer process.
const envJoinViewers = "CAMPUSEDGE_JOIN_VIEWERS"

// TestBenchJoinViewers is not a test of its own: it is the viewer process
// TestBenchJoinBurst starts (-join.procs), and runs only with the plan in
// its environment. It prints its joinBatch as one JSON line.
func TestBenchJoinViewers(t *testing.T) {
	raw := os.Getenv(envJoinViewers)
	if raw == "" {
		t.Skip("the viewer process of TestBenchJoinBurst (-join.bench -join.procs); runs only when started by it")
	}
	var plan joinPlan
	if err := json.Unmarshal([]byte(raw), &plan); err != nil {
		t.Fatalf("plan: %v", err)
	}
	cpu0, err := procCPUOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Until(time.Unix(0, plan.Start))+plan.Spread+plan.Watch+time.Minute)
	defer cancel()
	out, err := runJoiners(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	cpu1, err := procCPUOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	out.CPU = cpu1 - cpu0
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s%s\n", joinBatchPrefix, b)
}

const joinBatchPrefix = "JOINBATCH "

// viewerProc is a running viewer process: this test binary re-executed
// to run one test (TestBenchJoinViewers, TestBenchFanoutViewers) with its
// plan in the environment. Its stdout is read as it comes, so the parent
// can wait for a line (viewersReady) before the process ends.
type viewerProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   bytes.Buffer
	ready chan struct{} // closed when the process prints viewersReady
	done  chan struct{} // closed when its stdout ends
}

// viewersReady is the line a viewer process prints once all its viewers
// have their first packet.
const viewersReady = "VIEWERS READY"

// startViewerProc starts this test binary as a viewer process running
// test, with plan (JSON) in the environment variable env.
func startViewerProc(ctx context.Context, test, env string, plan any) (*viewerProc, error) {
	b, err := json.Marshal(plan)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p := &viewerProc{cmd: exec.CommandContext(ctx, exe, "-test.run", "^"+test+"$", "-test.count", "1", "-test.timeout", "10m"),
		ready: make(chan struct{}), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env+"="+string(b))
	p.cmd.Stderr = &lockedWriter{p}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("viewer process: %w", err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 64<<20) // a result line carries every delay measured
		var once sync.Once
		for sc.Scan() {
			if sc.Text() == viewersReady {
				once.Do(func() { close(p.ready) })
			}
			p.mu.Lock()
			p.out.Write(sc.Bytes())
			p.out.WriteByte('\n')
			p.mu.Unlock()
		}
	}()
	return p, nil
}

// lockedWriter appends a viewer process's stderr to its output.
type lockedWriter struct{ p *viewerProc }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// waitReady waits until the process prints viewersReady.
func (p *viewerProc) waitReady(ctx context.Context, d time.Duration) error {
	select {
	case <-p.ready:
		return nil
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return fmt.Errorf("viewer process %d ended before its viewers were ready:\n%s", p.cmd.Process.Pid, p.out.String())
	case <-time.After(d):
		return fmt.Errorf("viewer process %d: viewers not ready in %v", p.cmd.Process.Pid, d)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wait waits for the process and decodes its result, the line after
// prefix, into out.
func (p *viewerProc) wait(prefix string, out any) error {
	<-p.done
	err := p.cmd.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, line := range strings.Split(p.out.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return json.Unmarshal([]byte(rest), out)
		}
	}
	return fmt.Errorf("viewer process %d: no result (%v):\n%s", p.cmd.Process.Pid, err, p.out.String())
}

func runJoinBurst(t *testing.T, ctx context.Context, e *edge, edgePID, n int) joinResult {
	s := e.createSession(t, ctx, fmt.Sprintf("join burst %d", n))
	var pubDrops atomic.Int64
	api, err := viewerAPI(*joinRcvbuf, &pubDrops)
	if err != nil {
		t.Fatal(err)
	}
	pc, video, audio := benchPublisher(t, ctx, e, api, s)
	defer pc.Close()
	sendCtx, stopSend := context.WithCancel(ctx)
	defer stopSend()
	go sendLesson(sendCtx, video, audio, func(int64) {})

	steady := make([]*viewer, 2)
	for i := range steady {
		steady[i] = &viewer{}
		steady[i].join(ctx, api, e.url, s.ID, s.Tokens.Observer)
		if steady[i].err != nil {
			t.Fatalf("steady viewer: %v", steady[i].err)
		}
	}
	// The joins start 2.5 s from here: mid-GOP, the cache holds ~75
	// frames; the viewer processes have that long to start.
	plan := joinPlan{URL: e.url, Session: s.ID, Token: s.Tokens.Observer, N: n, Procs: max(*joinProcs, 1),
		Start: time.Now().Add(2500 * time.Millisecond).UnixNano(), Spread: *joinSpread, Watch: time.Duration(*joinSeconds) * time.Second, Rcvbuf: *joinRcvbuf}
	var procs []*viewerProc
	for k := range *joinProcs {
		pl := plan
		pl.Proc = k
		p, err := startViewerProc(ctx, "TestBenchJoinViewers", envJoinViewers, pl)
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
	}
	time.Sleep(time.Until(time.Unix(0, plan.Start).Add(-100 * time.Millisecond)))
	steadyBefore := make([][2]int, len(steady))
	for i, v := range steady {
		v.mu.Lock()
		w, g := v.video.counts()
		steadyBefore[i] = [2]int{w, g}
		v.mu.Unlock()
	}
	pauses0 := liveMetric(t, ctx, e, "campusedge_live_video_pauses_total")
	drops0 := liveMetric(t, ctx, e, "campusedge_live_dropped_packets_total")
	backlog0 := softnetDrops()
	edgeRx0, err := socketDrops(edgePID)
	if err != nil {
		t.Fatal(err)
	}
	cpu0 := procCPU(t, edgePID)
	t0 := time.Now()
	profiled := make(chan struct{})
	if *benchProfile != "" { // the edge's CPU over the burst and the 2 s after it
		go func() {
			defer close(profiled)
			f := &edgedFanout{e: e, proc: edgePID}
			f.profile(t, ctx, n, *joinSpread+2*time.Second)
		}()
	} else {
		close(profiled)
	}

	var batches []joinBatch
	if len(procs) == 0 {
		b, err := runJoiners(ctx, plan)
		if err != nil {
			t.Fatal(err)
		}
		batches = append(batches, b)
	} else {
		time.Sleep(time.Until(time.Unix(0, plan.Start).Add(plan.Spread + plan.Watch)))
	}
	<-profiled
	pauses1 := liveMetric(t, ctx, e, "campusedge_live_video_pauses_total")
	edgeRx1, err := socketDrops(edgePID)
	if err != nil {
		t.Fatal(err)
	}
	cpu1 := procCPU(t, edgePID)
	t1 := time.Now()
	var r joinResult
	r.edgeCPU = (cpu1 - cpu0).Seconds() / t1.Sub(t0).Seconds()
	r.edgeRxDrops = edgeRx1 - edgeRx0
	var viewerCPU time.Duration
	for _, p := range procs {
		var b joinBatch
		if err := p.wait(joinBatchPrefix, &b); err != nil {
			t.Fatal(err)
		}
		batches = append(batches, b)
		viewerCPU += b.CPU
	}
	r.viewerCPU = viewerCPU.Seconds() / t1.Sub(t0).Seconds()
	stopSend()
	time.Sleep(300 * time.Millisecond) // packets in flight
	r.edgeDrops = liveMetric(t, ctx, e, "campusedge_live_dropped_packets_total") - drops0
	r.backlogDrops = softnetDrops() - backlog0
	r.pauses = pauses1 - pauses0

	var vw, vg, aw, ag int
	var ttffs []time.Duration
	for _, b := range batches {
		r.sockDrops += float64(b.SockDrops)
		r.bufDrops += b.BufDrops
		for i, st := range b.Joiners {
			if st.Err != "" {
				t.Fatalf("joiner %d: %s", i, st.Err)
			}
			vw, vg, aw, ag = vw+st.VideoWant, vg+st.VideoGot, aw+st.AudioWant, ag+st.AudioGot
			if st.VideoWant != st.VideoGot || st.AudioWant != st.AudioGot {
				r.lossy++
			}
			r.primedLost, r.liveLost = r.primedLost+st.PrimedLost, r.liveLost+st.LiveLost
			if st.TTFF < 0 {
				ttffs = append(ttffs, time.Hour) // never saw a frame: sorts last, shows as 1h
			} else {
				ttffs = append(ttffs, st.TTFF)
			}
			r.maxGap = max(r.maxGap, st.MaxGap)
		}
	}
	if len(ttffs) != n {
		t.Fatalf("%d joiners reported, want %d", len(ttffs), n)
	}
	r.videoLoss, r.audioLoss = lossPct(vw, vg), lossPct(aw, ag)
	slices.Sort(ttffs)
	r.ttff = [3]time.Duration{ttffs[len(ttffs)/2], ttffs[len(ttffs)*95/100], ttffs[len(ttffs)-1]}
	var sw, sg int
	for i, v := range steady {
		v.mu.Lock()
		w, g := v.video.counts()
		v.mu.Unlock()
		sw, sg = sw+w-steadyBefore[i][0], sg+g-steadyBefore[i][1]
	}
	r.steadyLoss = lossPct(sw, sg)
	for _, v := range steady {
		if v.pc != nil {
			_ = v.pc.Close()
		}
	}
	if resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions/"+s.ID+"/end", e.admin, "", nil); resp.StatusCode != 200 {
		t.Fatalf("end: %d %s", resp.StatusCode, b)
	}
	return r
}

// rcvbufNet gives every UDP socket pion opens a receive buffer of its own
// size (-join.rcvbuf).
type rcvbufNet struct {
	transport.Net
	bytes int
}

func (n rcvbufNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	if err := c.SetReadBuffer(n.bytes); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("receive buffer: %w", err)
	}
	return c, nil
}

// socketDrops sums the kernel's receive-buffer drops (the last field of
// /proc/PID/net/udp and udp6) over the UDP sockets process pid has open; a
// socket's count goes when it closes.
func socketDrops(pid int) (int64, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("socket drops: %w", err)
	}
	mine := map[string]bool{}
	for _, de := range ents {
		l, err := os.Readlink(dir + "/" + de.Name())
		if err == nil && strings.HasPrefix(l, "socket:[") {
			mine[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var sum int64
	for _, f := range []string{"udp", "udp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
			if len(fs) < 13 || !mine[fs[9]] {
				continue
			}
			d, err := strconv.ParseInt(fs[len(fs)-1], 10, 64)
			if err == nil {
				sum += d
			}
		}
	}
	return sum, nil
}

// softnetDrops sums the second column of /proc/net/softnet_stat (hex, one
// row per CPU): packets dropped because the CPU's input backlog was full.
func softnetDrops() int64 {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return 0
	}
	var sum int64
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			if d, err := strconv.ParseInt(f[1], 16, 64); err == nil {
				sum += d
			}
		}
	}
	return sum
}

// loadAvg is /proc/loadavg's first three fields.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func lossPct(want, got int) float64 {
	if want == 0 {
		return 100
	}
	return 100 * float64(want-got) / float64(want)
}

// liveMetric reads one unlabelled sample from the edge's /metrics.
func liveMetric(t *testing.T, ctx context.Context, e *edge, name string) float64 {
	t.Helper()
	resp, body := e.Do(t, ctx, "GET", "/metrics", "", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("metrics: %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return v
		}
	}
	t.Fatalf("metric %s not in /metrics", name)
	return 0
}
