package classroom_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
	"golang.org/x/sys/unix"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/edge/logtest"
)

// The live-class benchmark is opt-in (it takes about two minutes and all
// of the machine):
//
//	go test -run TestBenchLiveClass -v -timeout 20m ./classroom/ -live.bench
//	go test -run TestBenchLiveClass -v -timeout 20m ./classroom/ -live.bench -live.subs 1,10,25,50
//
// It builds and starts a real edged as its own process, publishes a lesson
// by WHIP (~2.5 Mbit/s of video in 1100-byte packets, 30 frames/s, plus
// Opus at 50 packets/s) and, for each N, watches it with N pion WHEP
// subscribers in this process. Per N it prints: loss %, packets/s
// delivered to all subscribers, edged's CPU-seconds per second read from
// /proc/<pid>/stat (the SFU process alone), and the p99 of the forwarding
// delay (publisher write → subscriber read, both in this process, so it
// includes their SRTP work). In the same run it measures the physical
// limit: a loop that SRTP-encrypts the same packets once per subscriber
// and sends them by UDP, with nobody reading, and reports the SFU's
// packets per CPU-second as a fraction of that loop's.
var (
	liveBench     = flag.Bool("live.bench", false, "run the live-class benchmark (TestBenchLiveClass)")
	liveBenchSubs = flag.String("live.subs", "1,5,10,20,40", "comma-separated subscriber counts for -live.bench")
	liveBenchSecs = flag.Int("live.seconds", 5, "measured seconds per subscriber count")
	// The estimator's cost, in the same run:
	//
	//	go test -run TestBenchLiveClass -v -timeout 30m ./classroom/ -live.bench -live.subs 10,40 -live.layers [-live.before DIR] [-live.rounds 3]
	liveLayers = flag.Bool("live.layers", false, "-live.bench: measure edged -simulcast-layers=false (no estimator) and the default (estimator behind its gate) per N, interleaved; with -live.before also that tree's edged with -simulcast-layers")
	liveBefore = flag.String("live.before", "", "-live.layers: source tree of an earlier edged (e.g. a git archive of main) run with -simulcast-layers, the estimator on every subscriber")
	liveRounds = flag.Int("live.rounds", 1, "-live.bench: how many times the whole list of N is run")
	// benchProfile: every edged trial of runFanout (TestBenchLiveClass,
	// TestBenchJanus) also writes edged's CPU profile over its measured
	// window to DIR/edged-N<n>-<k>.pprof. The profiler's own cost is in
	// that trial's CPU figure, so profile in a run of its own.
	benchProfile = flag.String("bench.cpuprofile", "", "directory: write edged's CPU profile of each measured edged trial there (go tool pprof -top FILE)")
)

// liveVariant is one edged build and its flags, measured side by side.
type liveVariant struct {
	name string
	src  string
	args []string
}

const (
	benchVideoPayload = 1100
	benchFPS          = 30
	benchPktsPerFrame = 9 // 9 × 1100 B × 30/s × 8 ≈ 2.4 Mbit/s of payload
	benchAudioPayload = 120
	benchKeyEvery     = 2 * benchFPS // a keyframe every 2 s, like OBS's default keyint
)

// sendLesson publishes the benchmark lesson until ctx ends: VP8-shaped
// video (a payload descriptor and frame header the edge's keyframe cache
// recognises, a keyframe every benchKeyEvery frames) and Opus-sized audio.
// Every payload carries its send time (lessonSendTime); sent is called
// with it for every packet.
func sendLesson(ctx context.Context, video, audio *webrtc.TrackLocalStaticRTP, sent func(now int64)) {
	vp := make([]byte, benchVideoPayload)
	ap := make([]byte, benchAudioPayload)
	start := time.Now()
	var seq, aseq uint16
	for frame := 0; ctx.Err() == nil; frame++ {
		if d := time.Until(start.Add(time.Duration(frame) * time.Second / benchFPS)); d > 0 {
			time.Sleep(d)
		}
		for i := range benchPktsPerFrame {
			vp[0], vp[1] = 0x00, 0x01 // continuation of a frame
			if i == 0 {
				vp[0] = 0x10 // S bit: start of partition 0
				if frame%benchKeyEvery == 0 {
					vp[1] = 0x00 // P bit clear: a keyframe
				}
			}
			now := time.Now().UnixNano()
			binary.BigEndian.PutUint64(vp[2:], uint64(now))
			_ = video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(frame * 3000), Marker: i == benchPktsPerFrame-1}, Payload: vp})
			seq++
			sent(now)
		}
		if frame%3 == 0 { // ~one Opus packet per 20 ms
			for range 2 {
				now := time.Now().UnixNano()
				binary.BigEndian.PutUint64(ap[2:], uint64(now))
				_ = audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: aseq, Timestamp: uint32(aseq) * 960}, Payload: ap})
				aseq++
				sent(now)
			}
		}
	}
}

// lessonSendTime reads the send time sendLesson put in a payload.
func lessonSendTime(payload []byte) (int64, bool) {
	if len(payload) < 10 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(payload[2:])), true
}

func TestBenchLiveClass(t *testing.T) {
	if !*liveBench {
		t.Skip("opt-in: run with -live.bench (see the comment above)")
	}
	ns := parseCounts(t, "-live.subs", *liveBenchSubs)
	ctx, cancel := context.WithTimeout(t.Context(), 18*time.Minute)
	defer cancel()
	variants := []liveVariant{{name: "edged"}}
	if *liveLayers {
		variants = []liveVariant{{name: "no-estimator", args: []string{"-simulcast-layers=false"}}, {name: "gated", args: []string{"-simulcast-layers=true"}}}
		if *liveBefore != "" {
			variants = append(variants, liveVariant{name: "ungated", src: *liveBefore, args: []string{"-simulcast-layers"}})
		}
	}
	type running struct {
		e   *edge
		pid int
	}
	procs := make([]running, len(variants))
	for i, v := range variants {
		procs[i].e, procs[i].pid = startEdgedProcess(t, ctx, v.src, v.args...)
	}
	secs := time.Duration(*liveBenchSecs) * time.Second

	fmt.Printf("live-class benchmark: 1 publisher (%.1f Mbit/s video payload + Opus), loopback, %v per N, %d CPUs, load %s\n",
		float64(benchVideoPayload*benchPktsPerFrame*benchFPS*8)/1e6, secs, numCPU(), loadAvg())
	fmt.Printf("%-13s %5s %8s %12s %12s %10s %12s %14s %8s\n", "edged", "N", "loss%", "fwd pkt/s", "edged cpu/s", "p99 ms", "pkt/cpu-s", "limit pkt/cpu-s", "ratio")
	best := 0
	for range max(1, *liveRounds) {
		for _, n := range ns {
			for i, v := range variants {
				r := runLiveBench(t, ctx, procs[i].e, procs[i].pid, n, secs)
				limit := srtpLimit(t, n, secs/2)
				ratio := 0.0
				if r.cpuPerSec > 0 {
					ratio = r.pktsPerSec / r.cpuPerSec / limit
				}
				fmt.Printf("%-13s %5d %8.3f %12.0f %12.3f %10.2f %12.0f %14.0f %8.3f\n", v.name, n, r.lossPct, r.pktsPerSec, r.cpuPerSec, r.p99.Seconds()*1000, r.pktsPerSec/max(r.cpuPerSec, 1e-9), limit, ratio)
				if i == 0 && r.lossPct < 0.5 {
					best = n
				}
			}
		}
		fmt.Printf("load %s\n", loadAvg())
	}
	fmt.Printf("largest N with < 0.5%% loss (%s): %d\n", variants[0].name, best)
}

// parseCounts reads a benchmark flag's comma-separated subscriber counts.
func parseCounts(t *testing.T, name, list string) []int {
	var ns []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 500 {
			t.Fatalf("%s: bad count %q", name, f)
		}
		ns = append(ns, n)
	}
	return ns
}

type liveResult struct {
	lossPct, pktsPerSec, cpuPerSec float64
	p99                            time.Duration
	// Where the measured window's loss happened and who spent the CPU:
	// packets the kernel dropped at the viewers' sockets (their receive
	// buffers full: the viewers did not read in time), packets edged
	// dropped from its queues (-1: not edged), and the CPU-seconds per
	// second of this process (the publisher, and the viewers unless they
	// run in processes of their own) and the viewer processes together.
	sockDrops, edgeDrops int64
	viewerCPU            float64
	// bufDrops: packets the viewers' pion buffers refused, full (counted
	// only with a receive buffer set: runFanoutWith).
	bufDrops int64
}

// benchPublisher WHIPs the benchmark's two tracks into session s; the
// caller sends on them (sendLesson) and closes pc.
func benchPublisher(t *testing.T, ctx context.Context, e *edge, api *webrtc.API, s createResp) (*webrtc.PeerConnection, *webrtc.TrackLocalStaticRTP, *webrtc.TrackLocalStaticRTP) {
	t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	video, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "bench")
	audio, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "bench")
	for _, tr := range []*webrtc.TrackLocalStaticRTP{video, audio} {
		if _, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			t.Fatal(err)
		}
	}
	resp, body := e.Do(t, ctx, "POST", "/whip/"+s.ID, s.Tokens.Master, "application/sdp", mediatest.Offer(t, ctx, pc))
	if resp.StatusCode != 201 {
		t.Fatalf("WHIP: %d %s", resp.StatusCode, body)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	return pc, video, audio
}

// fanoutServer is what the live benchmark measures: this edge (WHIP and
// WHEP) or a peer SFU (Janus's VideoRoom, bench_janus_test.go).
type fanoutServer interface {
	name() string
	pid() int
	// publish starts a lesson; the caller sends on the two tracks.
	publish(t *testing.T, ctx context.Context, api *webrtc.API) (*webrtc.PeerConnection, *webrtc.TrackLocalStaticRTP, *webrtc.TrackLocalStaticRTP)
	// subscribe adds one viewer whose tracks go to onTrack.
	subscribe(t *testing.T, ctx context.Context, api *webrtc.API, onTrack func(*webrtc.TrackRemote, *webrtc.RTPReceiver)) *webrtc.PeerConnection
	// finish ends the lesson once every peer is closed.
	finish(t *testing.T, ctx context.Context)
}

// edgedFanout is a session on a real edged process.
type edgedFanout struct {
	e    *edge
	proc int
	s    createResp
	// record: the lesson is recorded (the edge's default); the Janus
	// comparison turns it off unless Janus records too (-janus.record).
	record bool
}

func (f *edgedFanout) name() string { return "edged" }
func (f *edgedFanout) pid() int     { return f.proc }

func (f *edgedFanout) publish(t *testing.T, ctx context.Context, api *webrtc.API) (*webrtc.PeerConnection, *webrtc.TrackLocalStaticRTP, *webrtc.TrackLocalStaticRTP) {
	if f.record {
		f.s = f.e.createSession(t, ctx, "bench")
	} else {
		resp, b := f.e.Do(t, ctx, "POST", "/api/v1/sessions", f.e.admin, "application/json", []byte(`{"title":"bench","record":false}`))
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("create session: %d %s", resp.StatusCode, b)
		}
		if err := json.Unmarshal(b, &f.s); err != nil {
			t.Fatal(err)
		}
	}
	return benchPublisher(t, ctx, f.e, api, f.s)
}

func (f *edgedFanout) subscribe(t *testing.T, ctx context.Context, api *webrtc.API, onTrack func(*webrtc.TrackRemote, *webrtc.RTPReceiver)) *webrtc.PeerConnection {
	spc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := spc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	spc.OnTrack(onTrack)
	resp, body := f.e.Do(t, ctx, "POST", "/whep/"+f.s.ID, f.s.Tokens.Observer, "application/sdp", mediatest.Offer(t, ctx, spc))
	if resp.StatusCode != 201 {
		t.Fatalf("WHEP: %d %s", resp.StatusCode, body)
	}
	if err := spc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	return spc
}

// profile writes edged's CPU profile over the next d to the
// -bench.cpuprofile directory.
func (f *edgedFanout) profile(t *testing.T, ctx context.Context, n int, d time.Duration) {
	resp, body := f.e.Do(t, ctx, "GET", "/api/v1/debug/pprof/profile?seconds="+strconv.Itoa(int(d/time.Second)), f.e.admin, "", nil)
	if resp.StatusCode != 200 {
		t.Errorf("CPU profile: %d %s", resp.StatusCode, body)
		return
	}
	for k := 1; ; k++ {
		name := filepath.Join(*benchProfile, fmt.Sprintf("edged-N%d-%d.pprof", n, k))
		if _, err := os.Stat(name); err == nil {
			continue
		}
		if err := os.WriteFile(name, body, 0o644); err != nil {
			t.Errorf("CPU profile: %v", err)
		}
		return
	}
}

func (f *edgedFanout) finish(t *testing.T, ctx context.Context) {
	if resp, b := f.e.Do(t, ctx, "POST", "/api/v1/sessions/"+f.s.ID+"/end", f.e.admin, "", nil); resp.StatusCode != 200 {
		t.Fatalf("end: %d %s", resp.StatusCode, b)
	}
}

// runLiveBench measures one N on a fresh session of e.
func runLiveBench(t *testing.T, ctx context.Context, e *edge, pid int, n int, secs time.Duration) liveResult {
	return runFanout(t, ctx, &edgedFanout{e: e, proc: pid, record: true}, n, secs)
}

// runFanout measures one N: a lesson published to srv, N viewers, their
// loss and delay and srv's CPU over secs.
func runFanout(t *testing.T, ctx context.Context, srv fanoutServer, n int, secs time.Duration) liveResult {
	return runFanoutWith(t, ctx, srv, n, secs, 0, 0)
}

// runFanoutWith is runFanout with the viewers' (and the publisher's) UDP
// receive buffers at rcvbuf bytes (0: the system's default) and the
// viewers in procs processes of their own (0: this one; startFanoutViewers).
func runFanoutWith(t *testing.T, ctx context.Context, srv fanoutServer, n int, secs time.Duration, rcvbuf, procs int) liveResult {
	var bufDrops atomic.Int64
	api := fanoutAPI(t, rcvbuf, &bufDrops)
	pc, video, audio := srv.publish(t, ctx, api)
	defer pc.Close()
	var sent atomic.Int64
	var c fanoutCount
	sendCtx, stopSend := context.WithCancel(ctx)
	defer stopSend()
	go sendLesson(sendCtx, video, audio, func(now int64) {
		if c.inWindow(now) {
			sent.Add(1)
		}
	})
	var subs []*webrtc.PeerConnection
	var vps []*viewerProc
	if procs > 0 {
		vps = startFanoutViewers(t, ctx, srv, n, rcvbuf, procs)
	} else {
		for range n {
			subs = append(subs, srv.subscribe(t, ctx, api, c.onTrack()))
		}
		waitFor(t, 60*time.Second, "every subscriber's first packet", func() bool { return c.ready.Load() == int64(n) })
	}
	time.Sleep(time.Second) // settle
	if procs > 0 {
		// The viewer processes learn the window ahead: a packet sent at
		// its start must find them knowing it.
		at := time.Now().Add(200 * time.Millisecond)
		for _, p := range vps {
			if _, err := fmt.Fprintf(p.stdin, "%d %d\n", at.UnixNano(), at.Add(secs).UnixNano()); err != nil {
				t.Fatalf("viewer process: %v", err)
			}
		}
		c.winStart.Store(at.UnixNano())
		c.winEnd.Store(at.Add(secs).UnixNano())
		time.Sleep(time.Until(at))
	}

	ef, isEdged := srv.(*edgedFanout)
	var drops0 float64
	if isEdged {
		drops0 = liveMetric(t, ctx, ef.e, "campusedge_live_dropped_packets_total")
	}
	sock0, err := socketDrops(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	buf0 := bufDrops.Load()
	self0 := viewersCPU(t, vps)
	cpu0 := procCPU(t, srv.pid())
	t0 := time.Now()
	c.winStart.CompareAndSwap(0, t0.UnixNano())
	profiled := make(chan struct{})
	if isEdged && *benchProfile != "" {
		go func() {
			defer close(profiled)
			ef.profile(t, ctx, n, secs)
		}()
	} else {
		close(profiled)
	}
	time.Sleep(secs)
	<-profiled
	t1 := time.Now()
	c.winEnd.CompareAndSwap(0, t1.UnixNano())
	cpu1 := procCPU(t, srv.pid())
	self1 := viewersCPU(t, vps)
	time.Sleep(time.Second)                // packets in flight
	sock1, err := socketDrops(os.Getpid()) // before the viewers' sockets close and take their counts with them
	if err != nil {
		t.Fatal(err)
	}
	edgeDrops := int64(-1)
	if isEdged {
		edgeDrops = int64(liveMetric(t, ctx, ef.e, "campusedge_live_dropped_packets_total") - drops0)
	}
	var batches []fanoutBatch
	for _, p := range vps {
		var b fanoutBatch
		if err := p.wait(fanoutBatchPrefix, &b); err != nil {
			t.Fatal(err)
		}
		batches = append(batches, b)
	}
	stopSend()
	for _, spc := range subs {
		_ = spc.Close()
	}
	_ = pc.Close()
	time.Sleep(300 * time.Millisecond)
	srv.finish(t, ctx)

	time.Sleep(200 * time.Millisecond) // OnTrack goroutines flush their delays
	delays := c.takeDelays()
	for _, b := range batches { // the viewer processes' counts join this one's
		c.got.Add(b.Got)
		sock1 += b.SockDrops
		bufDrops.Add(b.BufDrops)
		for _, us := range b.DelaysMicros {
			delays = append(delays, time.Duration(us)*time.Microsecond)
		}
	}
	el := t1.Sub(t0).Seconds()
	win := time.Duration(c.winEnd.Load() - c.winStart.Load()).Seconds()
	want := sent.Load() * int64(n)
	r := liveResult{pktsPerSec: float64(c.got.Load()) / win, cpuPerSec: (cpu1 - cpu0).Seconds() / el,
		sockDrops: sock1 - sock0, edgeDrops: edgeDrops, viewerCPU: (self1 - self0).Seconds() / el, bufDrops: bufDrops.Load() - buf0}
	if want > 0 {
		r.lossPct = 100 * float64(want-c.got.Load()) / float64(want)
	}
	r.p99 = p99(delays)
	return r
}

// p99 is the 99th percentile of delays (sorted in place).
func p99(delays []time.Duration) time.Duration {
	if len(delays) == 0 {
		return 0
	}
	slices.Sort(delays)
	return delays[len(delays)*99/100]
}

// fanoutCount counts what a benchmark's viewers receive of the packets
// the publisher sent within the measured window; in the benchmark's own
// process or in a viewer process (-janus.procs), the same way.
type fanoutCount struct {
	// Window of send times that count, as unix nanos; 0 = not yet.
	winStart, winEnd atomic.Int64
	got, ready       atomic.Int64 // packets in the window; viewers with a video packet
	mu               sync.Mutex
	delays           []time.Duration // of the video packets in the window
}

func (c *fanoutCount) inWindow(now int64) bool {
	ws, we := c.winStart.Load(), c.winEnd.Load()
	return ws != 0 && now >= ws && (we == 0 || now < we)
}

func (c *fanoutCount) takeDelays() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.delays
	c.delays = nil
	return d
}

// onTrack is one viewer's OnTrack handler: it reads the track to its end.
func (c *fanoutCount) onTrack() func(*webrtc.TrackRemote, *webrtc.RTPReceiver) {
	var first atomic.Bool
	return func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		video := tr.Kind() == webrtc.RTPCodecTypeVideo
		var local []time.Duration
		defer func() { c.mu.Lock(); c.delays = append(c.delays, local...); c.mu.Unlock() }()
		buf := make([]byte, 1500)
		var p rtp.Packet
		// A packet counts once: a retransmission of one that was
		// only late (the viewer NACKed it) is read twice.
		var seen [1 << 16 / 64]uint64
		for {
			k, _, err := tr.Read(buf)
			if err != nil {
				return
			}
			now := time.Now().UnixNano()
			if p.Unmarshal(buf[:k]) != nil {
				continue
			}
			if w, bit := p.SequenceNumber/64, uint64(1)<<(p.SequenceNumber%64); seen[w]&bit != 0 {
				continue
			} else {
				seen[w] |= bit
			}
			ts, ok := lessonSendTime(p.Payload)
			if !ok {
				continue
			}
			if video && first.CompareAndSwap(false, true) {
				c.ready.Add(1)
			}
			if c.inWindow(ts) {
				c.got.Add(1)
				if video {
					local = append(local, time.Duration(now-ts))
				}
			}
		}
	}
}

// srtpLimit is the physical limit: packets per CPU-second of a loop that
// SRTP-encrypts each packet once per subscriber (own keys) and sends it by
// UDP, paced like the lesson, for d. Nobody reads the sockets (the kernel
// drops), so the CPU is the sender's alone.
func srtpLimit(t *testing.T, n int, d time.Duration) float64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	out, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var dsts []net.Addr
	var ctxs []*srtp.Context
	for i := range n {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		dsts = append(dsts, c.LocalAddr())
		key, salt := make([]byte, 16), make([]byte, 14)
		key[0], salt[0] = byte(i), byte(i>>8)
		sc, err := srtp.CreateContext(key, salt, srtp.ProtectionProfileAes128CmHmacSha1_80)
		if err != nil {
			t.Fatal(err)
		}
		ctxs = append(ctxs, sc)
	}
	vp := make([]byte, benchVideoPayload)
	plain := make([]byte, 1500)
	enc := make([]byte, 0, 1500)
	var pkts int64
	var cpu time.Duration
	start := time.Now()
	var seq uint16
	for frame := 0; time.Since(start) < d; frame++ {
		if w := time.Until(start.Add(time.Duration(frame) * time.Second / benchFPS)); w > 0 {
			time.Sleep(w)
		}
		c0 := threadCPU()
		for range benchPktsPerFrame + 1 { // 9 video + ~1 Opus per frame (sized as video: conservative)
			h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(frame * 3000), SSRC: 1}
			seq++
			for j, dst := range dsts {
				pkt := rtp.Packet{Header: h, Payload: vp}
				m, err := pkt.MarshalTo(plain)
				if err != nil {
					t.Fatal(err)
				}
				if enc, err = ctxs[j].EncryptRTP(enc[:0], plain[:m], nil); err != nil {
					t.Fatal(err)
				}
				_, _ = out.WriteTo(enc, dst)
				pkts++
			}
		}
		cpu += threadCPU() - c0
	}
	if cpu <= 0 {
		return 0
	}
	return float64(pkts) / cpu.Seconds()
}

// threadCPU is the calling OS thread's CPU time (the loop above runs on
// one goroutine; pinned so the reading is its own).
func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// procCPU reads utime+stime of pid from /proc/<pid>/stat.
func procCPU(t *testing.T, pid int) time.Duration {
	d, err := procCPUOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// procCPUOf is procCPU returning its error.
func procCPUOf(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the ")" that ends the command name: state is field 3;
	// utime and stime are fields 14 and 15 (clock ticks, 100/s on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

// startEdgedProcess builds edged from the module at src ("": this tree)
// and starts it on 127.0.0.1 with args added.
func startEdgedProcess(t *testing.T, ctx context.Context, src string, args ...string) (*edge, int) {
	t.Helper()
	dir := t.TempDir()
	bins, err := bintest.Build(ctx, dir, bintest.BuildOptions{Src: src}, bintest.Cmd("edged"))
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	p := bintest.Serve(t, bins[0], append([]string{"-data", data, "-listen", "127.0.0.1:0", "-mdns=false"}, args...)...)
	tok, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	return &edge{url: p.URL(), admin: strings.TrimSpace(string(tok)), log: &logtest.Buffer{}}, p.PID()
}
