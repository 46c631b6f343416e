package classroom_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/edge/netnstest"
)

// The edged-vs-Janus benchmark is opt-in (root, Debian's janus package):
//
//	go test -run TestBenchJanus -v -timeout 30m ./classroom/ -janus.bench -janus.subs 10,40,80,160
//
// The same lesson (sendLesson) and the same N pion viewers against edged
// (WHIP/WHEP) and against Janus 1.1's VideoRoom plugin (its HTTP REST
// API, driven by the code below), each server's CPU read alone from
// /proc, in one run, the order per N edged, janus, janus, edged. Janus
// skips loopback-flagged interfaces when it gathers candidates, so the
// whole run happens in a network namespace of its own where an ifb
// device carries 127.0.0.1/32 too, and every address stays 127.0.0.1.
var (
	janusBench = flag.Bool("janus.bench", false, "run the edged-vs-Janus benchmark (TestBenchJanus)")
	janusSubs  = flag.String("janus.subs", "10,40,80,160", "-janus.bench: comma-separated viewer counts")
	janusSecs  = flag.Int("janus.seconds", 5, "-janus.bench: measured seconds per trial")
	// Both servers forward only by default: Janus's VideoRoom records
	// nothing unless asked, and edged's recording (on by default) is a
	// second copy of the lesson written to disk that Janus would not be
	// doing. -janus.record makes both record.
	janusRecord = flag.Bool("janus.record", false, "-janus.bench: both servers record the lesson (edged's default; Janus VideoRoom's record option)")
	// The viewers run in the benchmark's own process, 240 of them on the
	// same two cores as the servers; with the system's default receive
	// buffer (~200 kB, 0.7 s of the lesson) a viewer that is not scheduled
	// for that long loses packets at its own socket, which then counts as
	// the server's loss. -janus.rcvbuf gives them the buffer a viewer on a
	// machine of its own would not need; both servers' viewers get it.
	janusRcvbuf = flag.Int("janus.rcvbuf", 0, "-janus.bench: the viewers' UDP receive buffer in `bytes` (0: the system's default)")
	// -janus.procs moves the viewers of both servers' trials into
	// processes of their own (bench_fanout_procs_test.go), so a loaded
	// benchmark process no longer loses packets at its viewers' sockets
	// that then count as the server's loss. 0 keeps them in this process,
	// as the numbers measured before it.
	janusProcs = flag.Int("janus.procs", 0, "-janus.bench: `processes` the viewers of both servers' trials run in (0: the benchmark's own process)")
)

const envJanusInside = "CAMPUSEDGE_JANUS_BENCH_INSIDE"

func TestBenchJanus(t *testing.T) {
	if !*janusBench {
		t.Skip("opt-in: run with -janus.bench (see the comment above)")
	}
	if os.Getenv(envJanusInside) == "" {
		a, _ := netnstest.NewPair(t)
		for _, args := range [][]string{{"-n", a.Name, "link", "add", "ceifb0", "type", "ifb"}, {"-n", a.Name, "addr", "add", "127.0.0.1/32", "dev", "ceifb0"}, {"-n", a.Name, "link", "set", "ceifb0", "up"}} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v %s", args, err, out)
			}
		}
		p := a.ExecTest(t, []string{envJanusInside + "=1"}, "TestBenchJanus", "-janus.bench", "-janus.subs", *janusSubs, "-janus.seconds", strconv.Itoa(*janusSecs), "-janus.record="+strconv.FormatBool(*janusRecord), "-janus.rcvbuf", strconv.Itoa(*janusRcvbuf), "-janus.procs", strconv.Itoa(*janusProcs), "-bench.cpuprofile", *benchProfile, "-test.timeout", "28m")
		deadline := time.Now().Add(28 * time.Minute)
		for {
			if done, err := p.Exited(); done {
				fmt.Print(p.Output())
				if err != nil {
					t.Fatalf("the benchmark in its namespace failed: %v", err)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the benchmark in its namespace did not finish")
			}
			time.Sleep(time.Second)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 27*time.Minute)
	defer cancel()
	e, epid := startEdgedProcess(t, ctx, "")
	j := startJanus(t, ctx)
	secs := time.Duration(*janusSecs) * time.Second
	fmt.Printf("edged vs Janus %s: 1 publisher (%.1f Mbit/s VP8-shaped + Opus), pion viewers (rcvbuf %d, 0: the system's; in %d processes, 0: this one), %v per trial, recording %v, %d CPUs, load %s\n",
		j.version, float64(benchVideoPayload*benchPktsPerFrame*benchFPS*8)/1e6, *janusRcvbuf, *janusProcs, secs, *janusRecord, numCPU(), loadAvg())
	fmt.Printf("%5s %-6s %8s %12s %10s %12s %10s %10s %10s %10s %9s\n", "N", "server", "loss%", "fwd pkt/s", "cpu-s/s", "pkt/cpu-s", "p99 ms", "sock drop", "buf drop", "edge drop", "view cpu")
	for _, n := range parseCounts(t, "-janus.subs", *janusSubs) {
		var perCPU [2][]float64 // edged, janus
		for trial, who := range []int{0, 1, 1, 0} {
			var srv fanoutServer = &edgedFanout{e: e, proc: epid, record: *janusRecord}
			if who == 1 {
				srv = j.room(t, ctx, 1000*n+trial)
			}
			r := runFanoutWith(t, ctx, srv, n, secs, *janusRcvbuf, *janusProcs)
			pc := r.pktsPerSec / max(r.cpuPerSec, 1e-9)
			perCPU[who] = append(perCPU[who], pc)
			edgeDrops := "-"
			if r.edgeDrops >= 0 {
				edgeDrops = strconv.FormatInt(r.edgeDrops, 10)
			}
			fmt.Printf("%5d %-6s %8.3f %12.0f %10.3f %12.0f %10.2f %10d %10d %10s %9.2f\n", n, srv.name(), r.lossPct, r.pktsPerSec, r.cpuPerSec, pc, r.p99.Seconds()*1000, r.sockDrops, r.bufDrops, edgeDrops, r.viewerCPU)
		}
		fmt.Printf("%5d edged ÷ janus, packets per CPU-second: %.2f (mean of two trials each)\n", n, (perCPU[0][0]+perCPU[0][1])/(perCPU[1][0]+perCPU[1][1]))
	}
}

// janusServer is a Janus process with its HTTP API on 127.0.0.1.
type janusServer struct {
	recDir  string // where its rooms record (-janus.record)
	base    string
	proc    int
	version string
	client  *http.Client
}

// startJanus writes a minimal configuration (VideoRoom and the HTTP
// transport only) and starts janus in this namespace.
func startJanus(t *testing.T, ctx context.Context) *janusServer {
	t.Helper()
	bin, err := exec.LookPath("janus")
	if err != nil {
		t.Fatalf("janus not installed (apt-get install janus): %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	lib := "/usr/lib/x86_64-linux-gnu/janus"
	plugins, _ := filepath.Glob(lib + "/plugins/*.so")
	transports, _ := filepath.Glob(lib + "/transports/*.so")
	var noPlugins, noTransports []string
	for _, p := range plugins {
		if !strings.Contains(p, "videoroom") {
			noPlugins = append(noPlugins, filepath.Base(p))
		}
	}
	for _, p := range transports {
		if !strings.Contains(p, "janus_http") {
			noTransports = append(noTransports, filepath.Base(p))
		}
	}
	files := map[string]string{
		"janus.jcfg": fmt.Sprintf(`general: { configs_folder = %q plugins_folder = %q transports_folder = %q debug_level = 2 }
nat: { ice_ignore_list = "vmnet" }
plugins: { disable = %q }
transports: { disable = %q }
events: { broadcast = false }
loggers: { disable = "libjanus_jsonlog.so" }
`, dir, lib+"/plugins", lib+"/transports", strings.Join(noPlugins, ","), strings.Join(noTransports, ",")),
		"janus.transport.http.jcfg": fmt.Sprintf(`general: { json = "compact" base_path = "/janus" http = true port = %d ip = "127.0.0.1" https = false }
admin: { admin_http = false admin_https = false }
`, port),
		"janus.plugin.videoroom.jcfg": "general: { }\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.CommandContext(ctx, bin, "-F", dir, "-C", filepath.Join(dir, "janus.jcfg"), "-o", "-s", "900", "-E", "ceifb0", "-r", "30000-60000")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	j := &janusServer{recDir: t.TempDir(), base: fmt.Sprintf("http://127.0.0.1:%d/janus", port), proc: cmd.Process.Pid, client: &http.Client{Timeout: 40 * time.Second}}
	for deadline := time.Now().Add(20 * time.Second); ; {
		var info struct {
			VersionString string `json:"version_string"`
		}
		resp, err := j.client.Get(j.base + "/info")
		if err == nil {
			err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&info)
			resp.Body.Close()
			if err == nil {
				j.version = info.VersionString
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("janus did not answer on %s: %v\n%s", j.base, err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// janusMsg is a Janus API message or answer.
type janusMsg struct {
	Janus       string         `json:"janus"`
	Transaction string         `json:"transaction,omitempty"`
	Plugin      string         `json:"plugin,omitempty"`
	Body        map[string]any `json:"body,omitempty"`
	Jsep        *janusJsep     `json:"jsep,omitempty"`
	Data        struct {
		ID int64 `json:"id"`
	} `json:"data"`
	Error *struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	} `json:"error,omitempty"`
	PluginData struct {
		Data map[string]any `json:"data"`
	} `json:"plugindata"`
}

type janusJsep struct {
	Type    string `json:"type"`
	SDP     string `json:"sdp"`
	Trickle *bool  `json:"trickle,omitempty"`
}

// janusHandle is one session with the VideoRoom plugin attached: one per
// peer, so the session's events are that peer's.
type janusHandle struct {
	j               *janusServer
	session, handle int64
}

func (j *janusServer) post(ctx context.Context, path string, m janusMsg) (janusMsg, error) {
	m.Transaction = strconv.FormatUint(rand.Uint64(), 36)
	b, _ := json.Marshal(m)
	req, err := http.NewRequestWithContext(ctx, "POST", j.base+path, bytes.NewReader(b))
	if err != nil {
		return janusMsg{}, err
	}
	resp, err := j.client.Do(req)
	if err != nil {
		return janusMsg{}, err
	}
	defer resp.Body.Close()
	var out janusMsg
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return out, fmt.Errorf("janus answer: %w", err)
	}
	if out.Error != nil {
		return out, fmt.Errorf("janus error %d: %s", out.Error.Code, out.Error.Reason)
	}
	return out, nil
}

func (j *janusServer) attach(ctx context.Context) (*janusHandle, error) {
	s, err := j.post(ctx, "", janusMsg{Janus: "create"})
	if err != nil {
		return nil, err
	}
	h, err := j.post(ctx, "/"+strconv.FormatInt(s.Data.ID, 10), janusMsg{Janus: "attach", Plugin: "janus.plugin.videoroom"})
	if err != nil {
		return nil, err
	}
	return &janusHandle{j: j, session: s.Data.ID, handle: h.Data.ID}, nil
}

// message sends a plugin message; an "ack" means the answer comes as an
// event, which it then waits for.
func (h *janusHandle) message(ctx context.Context, body map[string]any, jsep *janusJsep) (janusMsg, error) {
	m, err := h.j.post(ctx, fmt.Sprintf("/%d/%d", h.session, h.handle), janusMsg{Janus: "message", Body: body, Jsep: jsep})
	if err != nil || m.Janus != "ack" {
		return m, err
	}
	return h.event(ctx)
}

// event long-polls the session until a plugin event arrives.
func (h *janusHandle) event(ctx context.Context) (janusMsg, error) {
	for i := 0; i < 20; i++ {
		req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/%d?maxev=1", h.j.base, h.session), nil)
		if err != nil {
			return janusMsg{}, err
		}
		resp, err := h.j.client.Do(req)
		if err != nil {
			return janusMsg{}, err
		}
		var m janusMsg
		err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&m)
		resp.Body.Close()
		if err != nil {
			return m, err
		}
		if m.Janus == "event" {
			if e, ok := m.PluginData.Data["error"]; ok {
				return m, fmt.Errorf("videoroom: %v", e)
			}
			return m, nil
		}
	}
	return janusMsg{}, errors.New("no event from janus after 20 polls")
}

func (h *janusHandle) destroy(ctx context.Context) {
	_, _ = h.j.post(ctx, fmt.Sprintf("/%d", h.session), janusMsg{Janus: "destroy"})
}

// janusRoom is one VideoRoom room as a fanoutServer.
type janusRoom struct {
	j       *janusServer
	id      int
	handles []*janusHandle
}

func (j *janusServer) room(t *testing.T, ctx context.Context, id int) *janusRoom {
	t.Helper()
	h, err := j.attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	create := map[string]any{"request": "create", "room": id, "publishers": 1, "bitrate": 0, "videocodec": "vp8", "audiocodec": "opus", "notify_joining": false}
	if *janusRecord {
		create["record"], create["rec_dir"] = true, j.recDir
	}
	if _, err := h.message(ctx, create, nil); err != nil {
		t.Fatalf("janus create room: %v", err)
	}
	return &janusRoom{j: j, id: id, handles: []*janusHandle{h}}
}

func (r *janusRoom) name() string { return "janus" }
func (r *janusRoom) pid() int     { return r.j.proc }

func (r *janusRoom) publish(t *testing.T, ctx context.Context, api *webrtc.API) (*webrtc.PeerConnection, *webrtc.TrackLocalStaticRTP, *webrtc.TrackLocalStaticRTP) {
	t.Helper()
	h, err := r.j.attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.handles = append(r.handles, h)
	if _, err := h.message(ctx, map[string]any{"request": "join", "ptype": "publisher", "room": r.id, "id": 1}, nil); err != nil {
		t.Fatalf("janus publisher join: %v", err)
	}
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
	no := false
	m, err := h.message(ctx, map[string]any{"request": "publish", "audio": true, "video": true}, &janusJsep{Type: "offer", SDP: string(mediatest.Offer(t, ctx, pc)), Trickle: &no})
	if err != nil || m.Jsep == nil {
		t.Fatalf("janus publish: %v (jsep %v)", err, m.Jsep)
	}
	up := make(chan struct{})
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(up) })
		}
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: m.Jsep.SDP}); err != nil {
		t.Fatal(err)
	}
	// Janus lists a publisher's feed once its connection is up.
	select {
	case <-up:
	case <-time.After(20 * time.Second):
		t.Fatal("janus publisher: no connection in 20 s")
	}
	return pc, video, audio
}

func (r *janusRoom) subscribe(t *testing.T, ctx context.Context, api *webrtc.API, onTrack func(*webrtc.TrackRemote, *webrtc.RTPReceiver)) *webrtc.PeerConnection {
	t.Helper()
	h, err := r.j.attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.handles = append(r.handles, h)
	var m janusMsg
	for try := 0; ; try++ { // the feed appears once media flows
		m, err = h.message(ctx, map[string]any{"request": "join", "ptype": "subscriber", "room": r.id, "streams": []map[string]any{{"feed": 1}}}, nil)
		if err == nil || !strings.Contains(err.Error(), "No such feed") || try == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || m.Jsep == nil {
		t.Fatalf("janus subscriber join: %v (jsep %v)", err, m.Jsep)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	pc.OnTrack(onTrack)
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: m.Jsep.SDP}); err != nil {
		t.Fatal(err)
	}
	ans, err := pc.CreateAnswer(nil)
	if err == nil {
		err = pc.SetLocalDescription(ans)
	}
	if err != nil {
		t.Fatal(err)
	}
	<-webrtc.GatheringCompletePromise(pc)
	no := false
	if _, err := h.message(ctx, map[string]any{"request": "start"}, &janusJsep{Type: "answer", SDP: pc.LocalDescription().SDP, Trickle: &no}); err != nil {
		t.Fatalf("janus start: %v", err)
	}
	return pc
}

func (r *janusRoom) finish(t *testing.T, ctx context.Context) {
	if _, err := r.handles[0].message(ctx, map[string]any{"request": "destroy", "room": r.id}, nil); err != nil {
		t.Logf("janus destroy room %d: %v", r.id, err)
	}
	for _, h := range r.handles {
		h.destroy(ctx)
	}
	if *janusRecord { // the comparison is fair only if Janus did record
		if files, _ := filepath.Glob(filepath.Join(r.j.recDir, "*.mjr")); len(files) == 0 {
			t.Errorf("-janus.record: Janus wrote no recording in %s", r.j.recDir)
		}
	}
}
