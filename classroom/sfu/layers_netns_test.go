//go:build linux

package sfu_test

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/edge/netnstest"
)

// lanPeer is a pion peer on one host of the test LAN.
func lanPeer(t *testing.T, h *netnstest.Netns) *webrtc.PeerConnection {
	t.Helper()
	n, err := mediatest.NetIn(h)
	if err != nil {
		t.Fatal(err)
	}
	api, err := sfu.NewAPINet([]net.IP{net.IP(h.Addr.AsSlice())}, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc
}

// publishSimulcast connects a three-layer publisher on host h to room.
func publishSimulcast(t *testing.T, ctx context.Context, s *sfu.SFU, h *netnstest.Netns, room string) *mediatest.SimulcastPublisher {
	t.Helper()
	pc := lanPeer(t, h)
	p := mediatest.SimulcastTracks(t, pc, testLayers)
	_, answer, err := s.Publish(ctx, room, string(mediatest.Offer(t, ctx, pc)))
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	go p.Run(ctx)
	return p
}

// watch connects a frame-counting WHEP subscriber on host h to room.
func watch(t *testing.T, ctx context.Context, s *sfu.SFU, h *netnstest.Netns, room string) *mediatest.FrameCounter {
	t.Helper()
	pc := lanPeer(t, h)
	c := mediatest.NewFrameCounter()
	c.Watch(t, pc)
	_, answer, err := s.Subscribe(ctx, room, string(mediatest.Offer(t, ctx, pc)))
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	return c
}

// link is one subscriber's shaped link in the test.
type link struct {
	name   string
	host   *netnstest.Netns
	rate   string
	capBPS float64 // the shaped rate, bits/s
	loss   int
	want   int // the layer it should settle on
	widen  string
	wantUp int // the layer after widening
	c      *mediatest.FrameCounter
}

var (
	shaped = flag.Bool("layers.shaped", false, "TestLayersFollowShapedLinks and TestCascadeTakesTheLayerItsWANCarries check the issue's bounds (settled within 5 s, ≥ 15 frames/s, back up within 10 s), which measure the machine as well as the chooser")
	bench  = flag.Bool("layers.bench", false, "run BenchmarkLayersShaped's scenario: the shaped links with layer selection on and off in one run, longer, reporting goodput ÷ capacity, frozen time per minute and switch delay (docs/BENCHMARKS.md)")
)

// bounds are what runShaped checks: the normal suite checks behaviour
// (each link settles on its layer, keeps decoding, comes back up after
// widening, the wide link keeps the top); -layers.shaped the issue's
// numbers, which on a loaded 2-core machine measure the machine too.
type bounds struct {
	// climb: the links must climb (the wide link to the top, a widened
	// link above the layer it had). Off under -race: a race-detector
	// build on a loaded 2-core machine stalls for hundreds of
	// milliseconds at a time, which gcc reads as queueing on every link,
	// and probes can fail for half a minute; the checks that no link
	// takes more than it carries and that each keeps decoding stay.
	climb   bool
	settle  time.Duration // from joining to the layer the link carries
	share   float64       // of the frames after settling on that layer
	fps     float64       // decodable frames/s after settling, at least
	up      time.Duration // from widening to the higher layer, at most
	topKeep float64       // share of the wide link's frames on the top layer
	window  time.Duration // frames counted after settling for this long
	check   bool          // false: only log (layer selection off)
}

var (
	// behaviour: room for a machine at load 20 and more under -race,
	// where CPU starvation reads as loss and delay and stops probes for
	// many seconds, but not for a link on a layer it cannot carry. With
	// share and topKeep 0 it checks that no link takes more than it
	// carries (a tenth of its frames at most), that the 4 Mbit/s link
	// reaches the top layer, and that a widened link moves up.
	// Its window is 8 s: one failed probe on the 300 kbit/s link can
	// cost 3 s of frames (a queue overflow, then a keyframe).
	behaviour = bounds{settle: 10 * time.Second, fps: 5, up: 20 * time.Second, window: 8 * time.Second, check: true, climb: !bintest.RaceEnabled()}
	// issueBounds: settled within 5 s (and a second's margin for the
	// time a frame takes to be judged and a loaded machine), 80 % of the
	// frames on that layer, 15 frames/s, back up within 10 s.
	issueBounds = bounds{climb: true, settle: 6 * time.Second, share: 0.8, fps: 15, up: 10 * time.Second, topKeep: 0.95, window: 6 * time.Second, check: true}
)

// Three subscribers behind 4 Mbit/s, 1 Mbit/s and 300 kbit/s links with
// 1-3 % random loss, shaped in network namespaces (tbf on the bridge port
// towards each, nftables dropping at random on arrival): each settles on
// the layer its link carries and keeps decoding frames; after the two
// thin links widen, each comes back to the higher layer; the 4 Mbit/s
// subscriber keeps the top layer throughout. The normal suite checks
// that behaviour with room for a loaded machine (behaviour); with
// -layers.shaped it checks the issue's numbers (issueBounds: settled
// within 5 s, 15 frames/s, back up within 10 s), which on this shared
// 2-core machine also measure its load (docs/BENCHMARKS.md, "Simulcast
// layers on shaped links").
//
//	go test -run TestLayersFollowShapedLinks -v ./classroom/sfu/ [-layers.shaped]
func TestLayersFollowShapedLinks(t *testing.T) {
	netnstest.RequireRoot(t)
	b := behaviour
	if *shaped {
		b = issueBounds
	}
	runShaped(t, false, b)
}

// TestLayersShapedBench is the benchmark docs/BENCHMARKS.md reports: the
// same links with layer selection on and then off (every subscriber the
// top layer, as -simulcast-layers=false), in one run, each phase with a
// minute of settled lesson, logging per subscriber goodput ÷ capacity,
// frozen time per minute and switch delay.
//
//	go test -run TestLayersShapedBench -v ./classroom/sfu/ -layers.bench
func TestLayersShapedBench(t *testing.T) {
	if !*bench {
		t.Skip("run with -layers.bench (root; shaped links in network namespaces, about 3 minutes)")
	}
	netnstest.RequireRoot(t)
	b := issueBounds
	b.window, b.check = time.Minute, false
	runShaped(t, false, b)
	b.up = 30 * time.Second
	runShaped(t, true, b)
}

// runShaped runs the shaped-links scenario once, with layer selection on
// or off, checking b (when b.check) and logging the figures
// docs/BENCHMARKS.md reports.
func runShaped(t *testing.T, noLayers bool, b bounds) {
	hosts := netnstest.NewLAN(t, netip.MustParsePrefix("10.77.16.0/24"), 5)
	ctx, cancel := context.WithTimeout(context.Background(), b.settle+b.window+b.up+time.Minute)
	defer cancel()
	edgeNet, err := mediatest.NetIn(hosts[0])
	if err != nil {
		t.Fatal(err)
	}
	logLevel := slog.LevelInfo
	if testing.Verbose() {
		logLevel = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))
	s, err := sfu.New(sfu.Config{ICEAddrs: []net.IP{net.IP(hosts[0].Addr.AsSlice())}, Net: edgeNet, Logger: log, NoLayers: noLayers})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	errorf := t.Errorf
	if !b.check {
		errorf = t.Logf
	}
	mode := "layers on"
	if noLayers {
		mode = "layers off"
	}
	links := []*link{
		{name: "4mbit", host: hosts[2], rate: "4mbit", capBPS: 4e6, loss: 1, want: 2, widen: "4mbit", wantUp: 2},
		{name: "1mbit", host: hosts[3], rate: "1mbit", capBPS: 1e6, loss: 2, want: 1, widen: "4mbit", wantUp: 2},
		{name: "300kbit", host: hosts[4], rate: "300kbit", capBPS: 3e5, loss: 3, want: 0, widen: "1mbit", wantUp: 1},
	}
	if noLayers {
		// Every subscriber takes the top layer whatever its link.
		for _, l := range links {
			l.want, l.wantUp = 2, 2
		}
	}
	for _, l := range links {
		if err := l.host.Shape(l.rate); err != nil {
			t.Fatal(err)
		}
		if err := l.host.Loss(l.loss); err != nil {
			t.Fatal(err)
		}
	}
	publishSimulcast(t, ctx, s, hosts[1], "class")
	time.Sleep(time.Second) // every layer flowing and measured
	start := time.Now()
	for _, l := range links {
		l.c = watch(t, ctx, s, l.host, "class")
	}

	// Settled: from then on, most decodable frames are of the layer the
	// link carries, and frames keep coming.
	settled := start.Add(b.settle)
	time.Sleep(time.Until(settled.Add(b.window)))
	end := time.Now().Add(-500 * time.Millisecond) // frames still being judged
	for _, l := range links {
		total, per := l.c.Between(settled, end)
		secs := end.Sub(settled).Seconds()
		good := 0.0
		for layer, n := range per {
			good += float64(n) * float64(testLayers[layer].Bitrate) / 30
		}
		frozen := l.c.Frozen(settled, end, 300*time.Millisecond)
		t.Logf("%s, %s link (%d%% loss) over %v: %.1f decodable frames/s, per layer %v, goodput/capacity %.2f, frozen %.1f s/min, jumps %d, padding %d, audio %d",
			mode, l.name, l.loss, end.Sub(settled).Round(time.Second), float64(total)/secs, per, good/secs/l.capBPS, frozen.Seconds()*60/secs, l.c.Jumps.Load(), l.c.Padding.Load(), l.c.Audio.Load())
		if float64(per[l.want]) < b.share*float64(total) {
			errorf("%s link: %d of %d frames on layer %d %v after joining (%v)", l.name, per[l.want], total, l.want, b.settle, per)
		}
		above := 0
		for k, n := range per {
			if k > l.want {
				above += n
			}
		}
		if above > total/10 {
			errorf("%s link: %d of %d frames of a layer above %d, which it does not carry (%v)", l.name, above, total, l.want, per)
		}
		if float64(total)/secs < b.fps {
			errorf("%s link: %.1f decodable frames/s after settling, want at least %.0f", l.name, float64(total)/secs, b.fps)
		}
		if l.c.Jumps.Load() != 0 {
			errorf("%s link: %d sequence/timestamp jumps: the layer switches were not rewritten into one stream", l.name, l.c.Jumps.Load())
		}
		if l.c.Audio.Load() == 0 {
			t.Errorf("%s link: no audio", l.name)
		}
	}
	if b.check && b.share > 0 {
		layers := map[int]bool{}
		for _, k := range s.Links("class") {
			layers[k.Layer] = true
			t.Logf("link: layer %d budget %d gcc %d loss %.3f", k.Layer, k.Budget, k.Target, k.Loss)
		}
		if len(layers) != 3 {
			t.Errorf("sfu.Links reports layers %v, want one subscriber on each of 0, 1, 2", layers)
		}
	}

	// The thin links widen; wait until each is on its higher layer (or
	// b.up has passed).
	widened := time.Now()
	before := map[*link]int{} // the highest layer each decoded in the last second
	for _, l := range links {
		_, per := l.c.Between(widened.Add(-1500*time.Millisecond), widened.Add(-500*time.Millisecond))
		before[l] = -1
		for k := range per {
			before[l] = max(before[l], k)
		}
	}
	for _, l := range links {
		if err := l.host.Shape(l.widen); err != nil {
			t.Fatal(err)
		}
	}
	for time.Since(widened) < b.up+time.Second {
		time.Sleep(250 * time.Millisecond)
		all := true
		for _, l := range links {
			all = all && !l.c.FirstOf(l.wantUp, widened).IsZero()
		}
		if all {
			time.Sleep(time.Second) // frames after the switch
			break
		}
	}
	for _, l := range links {
		up := l.c.FirstOf(l.wantUp, widened)
		if l.wantUp != l.want && b.share == 0 && b.climb && before[l] < l.wantUp {
			// Behaviour: a layer above the one it had, within b.up.
			var first time.Time
			for k := before[l] + 1; k <= l.wantUp; k++ {
				if at := l.c.FirstOf(k, widened); !at.IsZero() && (first.IsZero() || at.Before(first)) {
					first = at
				}
			}
			if first.IsZero() || first.Sub(widened) > b.up {
				errorf("%s, %s link widened to %s: no layer above %d within %v", mode, l.name, l.widen, before[l], b.up)
			}
		}
		if l.wantUp != l.want {
			if up.IsZero() || up.Sub(widened) > b.up {
				if b.share > 0 {
					errorf("%s, %s link widened to %s: not on layer %d within %v", mode, l.name, l.widen, l.wantUp, b.up)
				} else {
					t.Logf("%s, %s link widened to %s: not on layer %d within %v", mode, l.name, l.widen, l.wantUp, b.up)
				}
			} else {
				t.Logf("%s, %s link widened to %s: layer %d after %v (switch delay)", mode, l.name, l.widen, l.wantUp, up.Sub(widened).Round(10*time.Millisecond))
			}
		} else if noLayers && l.name != "4mbit" {
			if up.IsZero() {
				t.Logf("%s, %s link widened to %s: no decodable frame after", mode, l.name, l.widen)
			} else {
				t.Logf("%s, %s link widened to %s: first decodable frame %v after", mode, l.name, l.widen, up.Sub(widened).Round(10*time.Millisecond))
			}
		}
		total, per := l.c.Between(widened, time.Now().Add(-500*time.Millisecond))
		t.Logf("%s, %s link after widening: %d frames %v", mode, l.name, total, per)
	}
	// The wide link never left the top layer while the others moved.
	total, per := links[0].c.Between(settled, time.Now().Add(-500*time.Millisecond))
	if (b.climb && per[2] == 0) || float64(per[2]) < b.topKeep*float64(total) {
		errorf("4 Mbit/s subscriber: %d of %d frames on the top layer while the others moved (%v)", per[2], total, per)
	}
	tot := s.Totals()
	t.Logf("%s: layer ups %d downs %d probes %d video pauses %d", mode, tot.LayerUps, tot.LayerDowns, tot.Probes, tot.VideoPauses)
}

// The cascade over a thin WAN: a rural edge pulls the lesson from the
// urban edge (the same WHEP subscription the classroom package's cascade
// makes) over a 1.2 Mbit/s link with 2 % loss; the urban edge chooses the
// layer for that pull as for any subscriber, so one stream crosses the
// WAN at the layer it carries. The rural classroom keeps a picture and
// the urban classroom takes the top layer.
//
// The normal suite checks that behaviour with room for a loaded machine
// under -race: the rural classroom averages 10 frames/s and is frozen at
// most 40 % of the time (with the pull on the top layer, as before
// layers, it shows nothing), the pull never forwards the top layer the
// WAN cannot carry, and (without -race) the urban classroom reaches the
// top layer: under -race on a loaded machine its probes read the
// detector's stalls as queueing for most of the test. With
// -layers.shaped it checks the issue's numbers: 15 frames/s in every
// second for 30 s, frozen at most 10 %, the urban classroom on the top
// layer for 90 % of its frames after 6 s.
func TestCascadeTakesTheLayerItsWANCarries(t *testing.T) {
	netnstest.RequireRoot(t)
	run, topShare := 20*time.Second, 0.0
	if *shaped {
		run, topShare = 30*time.Second, 0.9
	}
	hosts := netnstest.NewLAN(t, netip.MustParsePrefix("10.77.17.0/24"), 5)
	urbanEdge, teacher, urbanRoom, ruralEdge, ruralRoom := hosts[0], hosts[1], hosts[2], hosts[3], hosts[4]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// -v: the edges' debug log (each probe and gcc's view per tick),
	// from which a failure is read.
	level := slog.LevelInfo
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	edge := func(h *netnstest.Netns, name string) *sfu.SFU {
		n, err := mediatest.NetIn(h)
		if err != nil {
			t.Fatal(err)
		}
		s, err := sfu.New(sfu.Config{ICEAddrs: []net.IP{net.IP(h.Addr.AsSlice())}, Net: n, Logger: log.With("edge", name)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	urban, rural := edge(urbanEdge, "urban"), edge(ruralEdge, "rural")
	if err := ruralEdge.Shape("1200kbit"); err != nil {
		t.Fatal(err)
	}
	if err := ruralEdge.Loss(2); err != nil {
		t.Fatal(err)
	}
	publishSimulcast(t, ctx, urban, teacher, "class")
	time.Sleep(time.Second)

	// The rural edge's pull: a relay publisher on its side, a WHEP
	// subscriber on the urban side.
	pc, err := rural.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := rural.Relay("class", sfu.SourceMaster, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	relay.Expect(2)
	_, answer, err := urban.Subscribe(ctx, "class", string(mediatest.Offer(t, ctx, pc)))
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	city := watch(t, ctx, urban, urbanRoom, "class")
	village := watch(t, ctx, rural, ruralRoom, "class")

	start := time.Now()
	time.Sleep(run)
	end := time.Now().Add(-500 * time.Millisecond)
	// From the first second a classroom can show a picture (connection,
	// first keyframe) to the end, in 1 s windows.
	from := start.Add(2 * time.Second)
	low := 0
	for w := from; w.Add(time.Second).Before(end); w = w.Add(time.Second) {
		if n, per := village.Between(w, w.Add(time.Second)); n < 15 {
			low++
			if *shaped {
				t.Errorf("rural classroom: %d decodable frames in the second from %v (%v)", n, w.Sub(start).Round(time.Second), per)
			} else {
				t.Logf("rural classroom: %d decodable frames in the second from %v (%v)", n, w.Sub(start).Round(time.Second), per)
			}
		}
	}
	total, per := village.Between(from, end)
	fps := float64(total) / end.Sub(from).Seconds()
	frozen := village.Frozen(from, end, 300*time.Millisecond)
	t.Logf("rural classroom over the 1.2 Mbit/s 2%% WAN: %.1f frames/s, per layer %v, frozen %v, %d seconds below 15 frames", fps, per, frozen.Round(10*time.Millisecond), low)
	minFPS, maxFrozen := 10.0, 0.4
	if *shaped {
		minFPS, maxFrozen = 15, 0.1
	}
	if fps < minFPS || frozen.Seconds() > maxFrozen*end.Sub(from).Seconds() {
		t.Errorf("rural classroom: %.1f frames/s, frozen %v of %v: want %.0f frames/s or more and frozen at most %.0f %% of the time", fps, frozen.Round(10*time.Millisecond), end.Sub(from).Round(time.Second), minFPS, 100*maxFrozen)
	}
	if per[2] > total/10 {
		t.Errorf("rural classroom: %d of %d frames of the top layer, which a 1.2 Mbit/s WAN does not carry (%v)", per[2], total, per)
	}
	total, per = city.Between(start.Add(6*time.Second), end)
	t.Logf("urban classroom: %d frames, per layer %v", total, per)
	if (per[2] == 0 && (*shaped || !bintest.RaceEnabled())) || float64(per[2]) < topShare*float64(total) {
		t.Errorf("urban classroom: %d of %d frames on the top layer after 6 s, want %.0f %% (%v)", per[2], total, 100*topShare, per)
	}
	for _, l := range urban.Links("class") {
		t.Logf("urban edge link: layer %d budget %d gcc %d loss %.3f", l.Layer, l.Budget, l.Target, l.Loss)
	}
}
