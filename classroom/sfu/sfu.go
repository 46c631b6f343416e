// Package sfu is the edge's selective forwarding unit. A room (one live
// session) has publishers, each labelled with a source ("master" for the
// lesson, "classroom:<id>" for a classroom's return video, …), and
// subscribers that each choose by a filter which sources they receive.
// Every packet of every track is forwarded as RTP, never transcoded.
//
// Two kinds of subscriber exist. A WHEP subscriber is negotiated once from
// the client's offer and keeps the tracks it got. A renegotiable subscriber
// (the WebSocket control channel) is offered new tracks by the edge whenever
// a publisher adds or removes one or its filter changes (a classroom goes on
// stage), and answers each offer.
//
// A forwarder writes each packet to its subscribers itself (with many
// subscribers, sharing the work with a helper goroutine per further CPU),
// as long as nothing is waiting for that subscriber. Each subscriber track
// also has its own bounded queue and writer goroutine for what must wait
// (the primed pictures, what its pacer holds back, probe padding); when a
// subscriber cannot keep up its queue fills and packets are dropped for it
// alone, so a slow or dead classroom never slows the others. A new
// subscriber is first given the cached group of pictures (the last VP8/H264
// keyframe and what followed), so it shows the picture at once even when
// the publisher ignores keyframe requests (OBS); without a cache it asks
// the publisher with a PLI, rate-limited per track, and subscribers' own
// PLI/FIR are relayed the same way.
//
// Each of the SFU's connections carries media one way, and runs only the
// interceptors for that way (sfu.go, apiRole): a publisher's has the NACK
// generator, receiver reports and TWCC feedback (the edge's own,
// twccfb.go); a subscriber's has the NACK responder (the edge's own,
// nack.go: answered from its packet cache, by RTX when negotiated), sender
// reports, and transport-wide sequence numbers on what it sends so the
// subscriber reports TWCC feedback to it (counted in metrics, and the
// estimator's input for simulcast subscribers). pion's stats interceptor
// runs on neither.
//
// One file per role: sfu.go the SFU, its configuration and pion API
// (nack.go its NACK responder);
// room.go the rooms and the calls that join or leave them; publisher.go a
// sending peer; forwarder.go the fan-out from one publisher track, with
// keyframe.go its keyframe cache; subscriber.go a receiving peer and
// subtrack.go its per-track queue and writer (batchconn.go the socket that
// sends each video frame in one system call); layers.go simulcast layers
// (a publisher's rid encodings grouped per track, the per-subscriber
// switch at a keyframe and the sequence/timestamp rewrite); svc.go a VP9
// SVC track's spatial/temporal layers, chosen like simulcast layers and
// filtered per subscriber; choose.go
// the layer each subscriber gets, from pion's gcc estimate, TWCC loss and
// padding probes; congestion.go weak-link video pausing (below the lowest
// layer); h264.go H264 profile matching; tap.go the recorder's view.
package sfu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/interceptor/pkg/gcc"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"
)

// Defaults for Config fields left zero.
const (
	DefaultQueuePackets = 1024 // ~3.5 s of 2.5 Mbit/s video: room for a cached GOP plus live packets
	DefaultPLIInterval  = 500 * time.Millisecond
	// A subscriber's video is paced at DefaultPaceBitrate with bursts of
	// DefaultPaceBurst bytes: a fifth of a 100 Mbit/s classroom link, so a
	// joining screen's cached group of pictures (~1 MB) arrives in about
	// half a second without overflowing its socket, while the lesson's own
	// frames (a keyframe is tens of kB) pass unchanged.
	DefaultPaceBitrate = 20_000_000
	DefaultPaceBurst   = 64 << 10
	// DefaultPrimeBitrate bounds all priming together: when a whole
	// school joins at once, the cached pictures for every new screen
	// share this budget instead of starving the lesson's live packets to
	// the screens already watching.
	DefaultPrimeBitrate = 150_000_000
	// DefaultPrimeConcurrent subscriber tracks are primed at a time (see
	// subTrack.admit): at DefaultPaceBitrate each, about the priming
	// budget, so the budget is shared by a few joiners that finish in
	// turn rather than by every joiner finishing together at the end.
	DefaultPrimeConcurrent = 8
	// DefaultJoinConcurrent WHEP subscribers may be between their offer
	// and a connected connection at once (see SFU.takeJoinSlot). A slot
	// is held at most joinSlotMax: a client that never connects (or a
	// hostile one, up to its token's WHEP budget) delays the others by
	// that much at most, and on a machine too busy to finish handshakes
	// that fast the bound loosens rather than stalls the joins.
	DefaultJoinConcurrent = 8
	joinSlotMax           = 2 * time.Second
	DefaultTrackWait      = 2 * time.Second
)

// Errors callers map to API responses.
var (
	ErrBusy        = errors.New("the room already has a publisher")
	ErrNoPublisher = errors.New("nobody is publishing in this room yet")
	ErrBadOffer    = errors.New("the SDP offer is not usable")
	ErrNotFound    = errors.New("no such publisher or subscriber")
	// ErrNotOwner: the resource was made by another client (Remove).
	ErrNotOwner = errors.New("the resource belongs to another client")
	ErrClosed   = errors.New("the SFU is closed")
)

// Config sets up an SFU.
type Config struct {
	Logger *slog.Logger
	// ICEAddrs restricts ICE host candidates to these addresses; empty
	// means every address of every interface. A loopback address here also
	// turns on loopback candidates (tests, single-host setups).
	ICEAddrs []net.IP
	// QueuePackets is each subscriber track's queue length.
	QueuePackets int
	// PLIInterval is the shortest gap between two keyframe requests to the
	// publisher for one track.
	PLIInterval time.Duration
	// PaceBitrate (bits/s) and PaceBurst (bytes) pace each subscriber's
	// video writes.
	PaceBitrate float64
	PaceBurst   int
	// PrimeBitrate (bits/s) is the edge-wide budget for sending cached
	// groups of pictures to joining subscribers.
	PrimeBitrate float64
	// PrimeConcurrent is how many subscriber tracks are primed at a
	// time; the others wait, or start at the publisher's next keyframe
	// (subTrack.admit). Negative: no limit.
	PrimeConcurrent int
	// JoinConcurrent is how many WHEP subscribers may be negotiating and
	// handshaking (ICE, DTLS) at once; the others wait for their answer.
	// Negative: no limit.
	JoinConcurrent int
	// TrackWait is how long a subscriber waits for a publisher's tracks to
	// start flowing before it gets whatever has arrived.
	TrackWait time.Duration
	// Net is the network pion's sockets are made in; nil is the host's.
	// Tests put the edge in a network namespace with it.
	Net transport.Net
	// NoLayers turns off choosing a simulcast layer per subscriber: every
	// subscriber gets the publisher's highest layer (benchmarks compare).
	NoLayers bool
	// NoFrameBatch sends every packet to a subscriber by its own system
	// call, instead of the packets of a video frame in one (batchconn.go;
	// benchmarks compare).
	NoFrameBatch bool
	// NoSVC forwards a VP9 SVC track whole to every subscriber instead of
	// by layer (svc.go), and ForwardsSVC tells pages not to send SVC.
	NoSVC bool
}

// ICEAddrsForListen derives Config.ICEAddrs from an HTTP listen address:
// an edge bound to one IP keeps its media on that IP too; an edge bound to
// all addresses (":8080") gathers on all of them.
func ICEAddrsForListen(listen string) []net.IP {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		return nil
	}
	return []net.IP{ip}
}

// SFU holds the rooms of this edge.
type SFU struct {
	cfg Config
	log *slog.Logger
	api *webrtc.API
	// subAPI makes subscribers' connections: the same settings plus a
	// send-side bandwidth estimate (gcc) from their TWCC feedback, behind
	// a gate that stays shut until the subscriber has a layer to choose
	// (bwegate.go). One gate is made per connection; bweMu hands it to
	// the subscriber whose NewPeerConnection call made it.
	subAPI   *webrtc.API
	bweMu    sync.Mutex
	lastGate *bweGate
	// conns: subscribers' sockets, found by a subscriber once connected
	// to batch each video frame it is sent (batchconn.go).
	conns connRegistry

	mu     sync.Mutex
	rooms  map[string]*room
	muted  map[string]bool // room + "\x00" + source
	closed bool
	tap    Tap // sees every packet of the tracks it chooses (the lesson recorder)

	primeBudget *rate.Limiter    // shared by every joining subscriber's priming
	primeSlots  chan struct{}    // held by the tracks being primed (admit.go); nil: no limit
	joinSlots   chan struct{}    // held by WHEP subscribers until connected (takeJoinSlot); nil: no limit
	lanes       [2]atomic.Uint32 // hand out video and audio subscriber tracks' fan-out lanes in turn

	forwarded, dropped atomic.Uint64 // totals over all subscribers, ever
	nacks, twcc, remb  atomic.Uint64 // feedback received from subscribers
	pauses, resumes    atomic.Uint64 // video paused/resumed for weak links
	iceRestarts        atomic.Uint64 // ICE restarts the edge offered (icerestart.go)
	iceRecovered       atomic.Uint64 // connections back after ICE disconnected or failed
	ups, downs, probes atomic.Uint64 // simulcast layer switches and probes
	estimating         atomic.Uint64 // subscriber links whose estimator gate opened, ever
	// Joining tracks that waited for a priming slot, and those of them
	// that started at a live keyframe instead of the cache (admit.go).
	primeWaits, primeSkips atomic.Uint64

	// Live objects, for the gauges that must return to zero when the
	// school is idle: peers (publishers and subscribers not yet closed)
	// and video forwarders, each with its keyframe cache.
	peers, gops atomic.Int64
}

// Totals are edge-wide counters for metrics.
type Totals struct {
	Rooms, Publishers, Subscribers int
	// Peers are publishers and subscribers not yet closed, registered in
	// a room or still negotiating; KeyframeCaches are the video tracks
	// being forwarded, each holding its last group of pictures.
	Peers, KeyframeCaches int
	Forwarded, Dropped    uint64
	// Feedback from subscribers: NACKs (answered from the packet cache),
	// TWCC and REMB congestion reports.
	NACKs, TWCC, REMB uint64
	// VideoPauses and VideoResumes count subscribers whose link was too
	// weak for video (audio went on) and the probes that brought it back.
	VideoPauses, VideoResumes uint64
	// LayerUps and LayerDowns count subscribers moved to a higher or
	// lower simulcast layer; Probes the padding bursts that tested a link
	// before moving up.
	LayerUps, LayerDowns, Probes uint64
	// Estimated counts subscriber links whose bandwidth estimator was
	// turned on because they received simulcast (bwegate.go).
	Estimated uint64
	// ICERestarts counts ICE restarts the edge offered to control
	// subscribers; ICERecovered the media connections that came back after
	// ICE went disconnected or failed (icerestart.go).
	ICERestarts, ICERecovered uint64
	// PrimeWaits counts joining subscriber tracks that waited for a
	// priming slot (Config.PrimeConcurrent were being primed);
	// PrimeKeyframeStarts those of them that started at the publisher's
	// next keyframe instead of the cached pictures.
	PrimeWaits, PrimeKeyframeStarts uint64
}

// New builds the pion API (default codecs and interceptors) and an empty SFU.
func New(cfg Config) (*SFU, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.QueuePackets <= 0 {
		cfg.QueuePackets = DefaultQueuePackets
	}
	if cfg.PLIInterval <= 0 {
		cfg.PLIInterval = DefaultPLIInterval
	}
	if cfg.PaceBitrate <= 0 {
		cfg.PaceBitrate = DefaultPaceBitrate
	}
	if cfg.PaceBurst <= 0 {
		cfg.PaceBurst = DefaultPaceBurst
	}
	if cfg.PrimeBitrate <= 0 {
		cfg.PrimeBitrate = DefaultPrimeBitrate
	}
	if cfg.TrackWait <= 0 {
		cfg.TrackWait = DefaultTrackWait
	}
	if cfg.PrimeConcurrent == 0 {
		cfg.PrimeConcurrent = DefaultPrimeConcurrent
	}
	if cfg.JoinConcurrent == 0 {
		cfg.JoinConcurrent = DefaultJoinConcurrent
	}
	a, err := newAPI(cfg.ICEAddrs, cfg.Net, nil, roleReceive, nil, nil)
	if err != nil {
		return nil, err
	}
	s := &SFU{cfg: cfg, log: cfg.Logger, api: a, rooms: map[string]*room{}, muted: map[string]bool{},
		primeBudget: rate.NewLimiter(rate.Limit(cfg.PrimeBitrate/8), 4*cfg.PaceBurst)}
	if cfg.PrimeConcurrent > 0 {
		s.primeSlots = make(chan struct{}, cfg.PrimeConcurrent)
	}
	if cfg.JoinConcurrent > 0 {
		s.joinSlots = make(chan struct{}, cfg.JoinConcurrent)
	}
	var reg *connRegistry
	if !cfg.NoFrameBatch && canSegment {
		reg = &s.conns
	}
	if cfg.NoLayers {
		// No layer to choose: no estimator either, not even gated.
		if s.subAPI, err = newAPI(cfg.ICEAddrs, cfg.Net, nil, roleSend, reg, nil); err != nil {
			return nil, err
		}
		return s, nil
	}
	// The estimator's own pacer is off: each subscriber track has its
	// pacer already (its rate follows the estimate), and a second queue
	// would delay audio behind video.
	bwe, err := cc.NewInterceptor(func() (cc.BandwidthEstimator, error) {
		return gcc.NewSendSideBWE(gcc.SendSideBWEPacer(gcc.NewNoOpPacer()),
			gcc.SendSideBWEInitialBitrate(bweInitial), gcc.SendSideBWEMinBitrate(bweMin), gcc.SendSideBWEMaxBitrate(bweMax))
	})
	if err != nil {
		return nil, fmt.Errorf("bandwidth estimator: %w", err)
	}
	gated := newBWEGateFactory(bwe, func(g *bweGate) { s.lastGate = g }) // under bweMu
	if s.subAPI, err = newAPI(cfg.ICEAddrs, cfg.Net, gated, roleSend, reg, nil); err != nil {
		return nil, err
	}
	return s, nil
}

// newSubscriberPC makes a subscriber's connection and returns it with its
// (shut) estimator gate, nil when layers are not chosen.
func (s *SFU) newSubscriberPC(cfg webrtc.Configuration) (*webrtc.PeerConnection, *bweGate, error) {
	s.bweMu.Lock()
	defer s.bweMu.Unlock()
	s.lastGate = nil
	pc, err := s.subAPI.NewPeerConnection(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("new peer connection: %w", err)
	}
	return pc, s.lastGate, nil
}

// NewAPI returns a pion API with default codecs (VP8, VP9, H264, AV1, Opus,
// …), the default interceptors, no mDNS, short ICE timeouts so a vanished
// peer is noticed within seconds, and host candidates restricted to addrs
// when it is not empty. Tests use it for their own peers too.
func NewAPI(addrs []net.IP) (*webrtc.API, error) {
	return NewAPINet(addrs, nil, nil)
}

// NewAPINet is NewAPI with sockets made in n (nil: the host's network) and,
// when bwe is not nil, a bandwidth estimator on every connection.
func NewAPINet(addrs []net.IP, n transport.Net, bwe interceptor.Factory) (*webrtc.API, error) {
	return newAPI(addrs, n, bwe, roleBoth, nil, nil)
}

// NewAPIWith is NewAPINet with set called on the settings last (a
// benchmark's viewers count what pion's buffers drop).
func NewAPIWith(addrs []net.IP, n transport.Net, bwe interceptor.Factory, set func(*webrtc.SettingEngine)) (*webrtc.API, error) {
	return newAPI(addrs, n, bwe, roleBoth, nil, set)
}

// apiRole says which way media flows on the connections an API makes:
// the SFU's own connections carry media one way only, and the
// interceptors for the other way would cost a goroutine, a ticker or a
// channel hand-off per packet for nothing.
type apiRole int

const (
	// roleBoth: pion's defaults but stats, with the edge's TWCC feedback
	// (tests' peers, NewAPINet).
	roleBoth apiRole = iota
	// roleReceive: a publisher's or a cascade pull's connection, media
	// in only. NACK generator, receiver reports and TWCC feedback (the
	// edge's own, twccfb.go: recorded in the reading goroutine, where
	// pion's hands every packet to another goroutine through a channel).
	roleReceive
	// roleSend: a subscriber's connection, media out only. The edge's own
	// NACK responder (nack.go), sender reports, transport-wide sequence
	// numbers and the estimator; no NACK generator (its 10 Hz ticker ran
	// on every subscriber's connection with nothing to ask for), no
	// receiver reports or TWCC feedback.
	roleSend
)

// newAPI is NewAPINet for one role. roleSend puts the edge's own NACK
// responder (nack.go) in place of pion's: it keeps the payloads it is
// given by reference, which only the SFU guarantees are never written
// again.
func newAPI(addrs []net.IP, n transport.Net, bwe interceptor.Factory, role apiRole, reg *connRegistry, set func(*webrtc.SettingEngine)) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("register codecs: %w", err)
	}
	ir := &interceptor.Registry{}
	// NACK a missing packet at most 3 times: unbounded re-NACKs (pion's
	// default) let a lossy WAN leg of a cascade ask for the same packets
	// ten times a second, multiplying the traffic on the very link that is
	// struggling.
	//
	// The rest of pion's defaults (RegisterDefaultInterceptors) but its
	// stats interceptor: nothing reads PeerConnection.GetStats, and it
	// took a lock and a map update for every packet sent to every
	// subscriber and every RTCP packet read (~6 % of edged's CPU at 40
	// viewers, TestBenchJanus with -bench.cpuprofile).
	switch role {
	case roleBoth:
		if err := webrtc.ConfigureNackWithOptions(me, ir, []nack.GeneratorOption{nack.GeneratorMaxNacksPerPacket(3)}); err != nil {
			return nil, fmt.Errorf("register NACK interceptors: %w", err)
		}
		if err := webrtc.ConfigureRTCPReports(ir); err != nil {
			return nil, fmt.Errorf("register RTCP reports: %w", err)
		}
	case roleReceive:
		gen, err := nack.NewGeneratorInterceptor(nack.GeneratorMaxNacksPerPacket(3))
		if err != nil {
			return nil, fmt.Errorf("register NACK generator: %w", err)
		}
		rr, err := report.NewReceiverInterceptor()
		if err != nil {
			return nil, fmt.Errorf("register receiver reports: %w", err)
		}
		ir.Add(gen)
		ir.Add(rr)
	case roleSend:
		sr, err := report.NewSenderInterceptor()
		if err != nil {
			return nil, fmt.Errorf("register sender reports: %w", err)
		}
		ir.Add(nackResponderFactory{})
		ir.Add(sr)
	}
	if role != roleBoth {
		// The SDP offers the same feedback whatever the role
		// (ConfigureNackWithOptions registers it for roleBoth).
		me.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack"}, webrtc.RTPCodecTypeVideo)
		me.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack", Parameter: "pli"}, webrtc.RTPCodecTypeVideo)
	}
	if err := webrtc.ConfigureSimulcastExtensionHeaders(me); err != nil {
		return nil, fmt.Errorf("register simulcast header extensions: %w", err)
	}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		me.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBTransportCC}, k)
		if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: transportCCURI}, k); err != nil {
			return nil, fmt.Errorf("register TWCC header extension: %w", err)
		}
	}
	if role != roleSend {
		ir.Add(twccFeedbackFactory{})
	}
	// The estimator between the two: the TWCC header extension (added
	// after it, so it wraps it) stamps each packet before the estimator
	// records it as sent; and after the NACK responder, which would
	// otherwise cap retransmissions at gcc's target, a figure that on a
	// link probed by padding lags what the link carries (retransmissions
	// then stop and a 1 % loss freezes the picture).
	if bwe != nil {
		ir.Add(bwe)
	}
	// Put transport-wide sequence numbers on what is sent, so receivers
	// report per-packet arrival (TWCC feedback).
	if role != roleReceive {
		hx, err := twcc.NewHeaderExtensionInterceptor()
		if err != nil {
			return nil, fmt.Errorf("register TWCC header extension: %w", err)
		}
		ir.Add(hx)
	}
	var se webrtc.SettingEngine
	if role != roleBoth {
		// The SFU's sockets get a larger receive buffer: with the
		// default (~200 KB, ~90 packets, 0.3 s of the lesson) a publisher's
		// packets were lost for every subscriber at once whenever edged
		// was not scheduled for that long on a busy machine.
		if n == nil {
			std, err := stdnet.NewNet()
			if err != nil {
				return nil, fmt.Errorf("network: %w", err)
			}
			n = std
		}
		n = bufferedNet{Net: n, reg: reg}
	}
	if n != nil {
		se.SetNet(n)
	}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(3*time.Second, 5*time.Second, time.Second)
	if len(addrs) > 0 {
		var v4, v6, loop bool
		for _, ip := range addrs {
			if ip.To4() != nil {
				v4 = true
			} else {
				v6 = true
			}
			loop = loop || ip.IsLoopback()
		}
		var nt []webrtc.NetworkType
		if v4 {
			nt = append(nt, webrtc.NetworkTypeUDP4)
		}
		if v6 {
			nt = append(nt, webrtc.NetworkTypeUDP6)
		}
		se.SetNetworkTypes(nt)
		se.SetIncludeLoopbackCandidate(loop)
		se.SetIPFilter(func(ip net.IP) bool {
			for _, a := range addrs {
				if a.Equal(ip) {
					return true
				}
			}
			return false
		})
	}
	if set != nil {
		set(&se)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

// ChoosesLayers reports whether the SFU chooses a simulcast layer per
// subscriber (Config.NoLayers unset): publishers gain by sending layers.
func (s *SFU) ChoosesLayers() bool { return !s.cfg.NoLayers }

// socketBuffer is the receive buffer the SFU asks for on each UDP socket
// (the kernel doubles it for its bookkeeping: about 3 s of a 2.4 Mbit/s
// lesson). The kernel caps the request at net.core.rmem_max; Debian's
// default (208 KB) still gives twice the default buffer.
const socketBuffer = 1 << 20

// bufferedNet opens UDP sockets with socketBuffer as their receive
// buffer, and with reg (subscriber connections) as batchConns.
type bufferedNet struct {
	transport.Net
	reg *connRegistry
}

func (n bufferedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(socketBuffer) // best effort: capped by the kernel, absent in virtual networks
	if u, ok := c.(*net.UDPConn); ok && n.reg != nil {
		return newBatchConn(u, n.reg), nil
	}
	return c, nil
}

// Totals returns the edge-wide counters.
func (s *SFU) Totals() Totals {
	s.mu.Lock()
	t := Totals{Rooms: len(s.rooms)}
	for _, r := range s.rooms {
		t.Publishers += len(r.pubs)
		t.Subscribers += len(r.subs)
	}
	s.mu.Unlock()
	t.Peers, t.KeyframeCaches = int(s.peers.Load()), int(s.gops.Load())
	t.Forwarded, t.Dropped = s.forwarded.Load(), s.dropped.Load()
	t.NACKs, t.TWCC, t.REMB = s.nacks.Load(), s.twcc.Load(), s.remb.Load()
	t.VideoPauses, t.VideoResumes = s.pauses.Load(), s.resumes.Load()
	t.ICERestarts, t.ICERecovered = s.iceRestarts.Load(), s.iceRecovered.Load()
	t.LayerUps, t.LayerDowns, t.Probes = s.ups.Load(), s.downs.Load(), s.probes.Load()
	t.Estimated = s.estimating.Load()
	t.PrimeWaits, t.PrimeKeyframeStarts = s.primeWaits.Load(), s.primeSkips.Load()
	return t
}

// releasePrimeSlot gives back the priming slot a track holds (*held),
// once.
func (s *SFU) releasePrimeSlot(held *bool) {
	if *held {
		*held = false
		<-s.primeSlots
	}
}

// Gather sets desc as pc's local description and waits for ICE gathering
// to finish, returning the SDP with every candidate: the edge does not
// trickle its own candidates (WHIP, WHEP and the cascade's pull all send
// one complete offer or answer).
func Gather(ctx context.Context, pc *webrtc.PeerConnection, desc webrtc.SessionDescription) (string, error) {
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(desc); err != nil {
		return "", fmt.Errorf("set local description: %w", err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return "", fmt.Errorf("ICE gathering: %w", ctx.Err())
	}
	return pc.LocalDescription().SDP, nil
}

// addCandidate adds a trickled ICE candidate to pc, a peer's connection
// (nil until it is negotiated).
func addCandidate(pc *webrtc.PeerConnection, c webrtc.ICECandidateInit) error {
	if pc == nil {
		return ErrNotFound
	}
	if err := pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("%w: candidate: %v", ErrBadOffer, err)
	}
	return nil
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
