package classroom_test

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/pion/rtp"
	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/webrtc/v4"
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
var (
	joinBench   = flag.Bool("join.bench", false, "run the join-burst benchmark (TestBenchJoinBurst)")
	joinSubs    = flag.String("join.subs", "40,120", "comma-separated joiner counts for -join.bench")
	joinSpread  = flag.Duration("join.spread", time.Second, "-join.bench: joins are spread evenly over this")
	joinSeconds = flag.Int("join.seconds", 6, "-join.bench: seconds each joiner is watched after the last join")
	joinRcvbuf  = flag.Int("join.rcvbuf", 0, "-join.bench: the viewers' UDP receive buffer in `bytes` (0: the system's default, net.core.rmem_default); the kernel doubles it and caps it at net.core.rmem_max")
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
	}
	builds := []build{{name: "this"}}
	builds[0].e, _ = startEdgedProcess(t, ctx, "")
	if *joinBefore != "" {
		b, _ := startEdgedProcess(t, ctx, *joinBefore)
		builds = append(builds, build{"before", b})
	}
	fmt.Printf("join-burst benchmark: joins spread over %v, watched %ds after the last, %d CPUs, load %s\n", *joinSpread, *joinSeconds, numCPU(), loadAvg())
	fmt.Printf("%-7s %5s %9s %9s %8s %7s %9s %9s %9s %10s %12s %10s %10s %12s %16s\n", "edged", "N", "vloss%", "aloss%", "lossy", "pauses", "ttff p50", "ttff p95", "ttff max", "max gap", "steady loss%", "edge drop", "sock drop", "backlog drop", "lost primed/live")
	for i, n := range parseCounts(t, "-join.subs", *joinSubs) {
		order := builds
		if i%2 == 1 { // alternate which build goes first
			order = slices.Clone(builds)
			slices.Reverse(order)
		}
		for _, b := range order {
			r := runJoinBurst(t, ctx, b.e, n)
			fmt.Printf("%-7s %5d %9.3f %9.3f %8d %7.0f %9s %9s %9s %10s %12.3f %10.0f %10.0f %12d %16s\n", b.name, n, r.videoLoss, r.audioLoss, r.lossy, r.pauses,
				r.ttff[0].Round(time.Millisecond), r.ttff[1].Round(time.Millisecond), r.ttff[2].Round(time.Millisecond), r.maxGap.Round(time.Millisecond), r.steadyLoss,
				r.edgeDrops, r.sockDrops, r.backlogDrops, fmt.Sprintf("%d/%d", r.primedLost, r.liveLost))
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
	// backlogDrops: packets the kernel dropped host-wide because a CPU's
	// input backlog was full (/proc/net/softnet_stat; other processes'
	// traffic counts too).
	backlogDrops int64
	// Video packets lost in the cached pictures a joiner was primed with
	// (sent by the publisher before the joiner's WHEP POST) and after.
	primedLost, liveLost int
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
func (v *viewer) join(ctx context.Context, api *webrtc.API, e *edge, session, token string) {
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
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/whep/"+session, strings.NewReader(pc.LocalDescription().SDP))
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

func runJoinBurst(t *testing.T, ctx context.Context, e *edge, n int) joinResult {
	s := e.createSession(t, ctx, fmt.Sprintf("join burst %d", n))
	api := mediatest.LoopbackAPI(t)
	if *joinRcvbuf > 0 {
		std, err := stdnet.NewNet()
		if err != nil {
			t.Fatal(err)
		}
		if api, err = sfu.NewAPINet([]net.IP{net.IPv4(127, 0, 0, 1)}, rcvbufNet{std, *joinRcvbuf}, nil); err != nil {
			t.Fatal(err)
		}
	}
	pc, video, audio := benchPublisher(t, ctx, e, api, s)
	defer pc.Close()
	sendCtx, stopSend := context.WithCancel(ctx)
	defer stopSend()
	go sendLesson(sendCtx, video, audio, func(int64) {})

	steady := make([]*viewer, 2)
	for i := range steady {
		steady[i] = &viewer{}
		steady[i].join(ctx, api, e, s.ID, s.Tokens.Observer)
		if steady[i].err != nil {
			t.Fatalf("steady viewer: %v", steady[i].err)
		}
	}
	time.Sleep(2500 * time.Millisecond) // mid-GOP: the cache holds ~75 frames
	steadyBefore := make([][2]int, len(steady))
	for i, v := range steady {
		v.mu.Lock()
		w, g := v.video.counts()
		steadyBefore[i] = [2]int{w, g}
		v.mu.Unlock()
	}
	pauses0 := liveMetric(t, ctx, e, "campusedge_live_video_pauses_total")
	drops0 := liveMetric(t, ctx, e, "campusedge_live_dropped_packets_total")
	sock0 := udpSocketDrops(t, os.Getpid())
	backlog0 := softnetDrops()

	var r joinResult
	joiners := make([]*viewer, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range joiners {
		joiners[i] = &viewer{}
		wg.Add(1)
		go func(v *viewer, at time.Time) {
			defer wg.Done()
			time.Sleep(time.Until(at))
			v.join(ctx, api, e, s.ID, s.Tokens.Observer)
		}(joiners[i], start.Add(*joinSpread*time.Duration(i)/time.Duration(n)))
	}
	wg.Wait()
	time.Sleep(time.Duration(*joinSeconds) * time.Second)
	pauses1 := liveMetric(t, ctx, e, "campusedge_live_video_pauses_total")
	stopSend()
	time.Sleep(300 * time.Millisecond) // packets in flight
	r.edgeDrops = liveMetric(t, ctx, e, "campusedge_live_dropped_packets_total") - drops0
	r.sockDrops = float64(udpSocketDrops(t, os.Getpid()) - sock0)
	r.backlogDrops = softnetDrops() - backlog0

	r.pauses = pauses1 - pauses0
	var vw, vg, aw, ag int
	var ttffs []time.Duration
	for i, v := range joiners {
		if v.err != nil {
			t.Fatalf("joiner %d: %v", i, v.err)
		}
		v.mu.Lock()
		w, g := v.video.counts()
		a, b := v.audio.counts()
		vw, vg, aw, ag = vw+w, vg+g, aw+a, ag+b
		if w != g || a != b {
			r.lossy++
		}
		pl, ll := v.video.lostBefore(v.posted.UnixNano())
		r.primedLost, r.liveLost = r.primedLost+pl, r.liveLost+ll
		if v.firstFrame.IsZero() {
			ttffs = append(ttffs, time.Hour) // never saw a frame: sorts last, shows as 1h
		} else {
			ttffs = append(ttffs, v.firstFrame.Sub(v.posted))
		}
		r.maxGap = max(r.maxGap, v.maxGap)
		v.mu.Unlock()
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
	for _, v := range append(joiners, steady...) {
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

// udpSocketDrops sums the kernel's receive-buffer drops (the last field
// of /proc/PID/net/udp and udp6) over the UDP sockets process pid has
// open; a socket's count goes when it closes.
func udpSocketDrops(t *testing.T, pid int) int64 {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("socket drops: %v", err)
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
	return sum
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
