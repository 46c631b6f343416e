package mediatest

import (
	"cmp"
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Layer is one simulcast encoding a SimulcastPublisher sends.
type Layer struct {
	RID     string
	Bitrate int // bits/s
	// Width and Height, when set, make the layer's frames real VP8 frame
	// headers (RFC 6386 9.1) whose keyframes carry this picture size, which
	// the SFU and the recorder read; such frames are not frame-counted (a
	// FrameCounter reads the plain layers' own payloads).
	Width, Height int
	// Start is when, after Run begins, the layer starts (a browser starts
	// its layers apart, often the lowest first).
	Start time.Duration
}

// SimulcastPublisher is a pion peer sending one VP8 track as simulcast
// layers (a=rid, the mid and rid header extensions on every packet, like
// a browser) and Opus audio. Each layer sends 30 VP8-shaped frames a
// second sized to its bitrate; a keyframe starts each layer and follows
// every PLI for that layer's SSRC (and every 3 s). Every payload says its
// layer, frame number and packet index, so a FrameCounter can tell which
// frames are whole and decodable.
type SimulcastPublisher struct {
	PC      *webrtc.PeerConnection
	Layers  []Layer
	PLIs    []atomic.Int64 // per layer
	tracks  []*webrtc.TrackLocalStaticRTP
	audio   *webrtc.TrackLocalStaticRTP
	sender  *webrtc.RTPSender
	needKey []atomic.Bool
}

// SimulcastTracks adds the layers (lowest first) and an audio track to pc,
// before its offer is made.
func SimulcastTracks(t testing.TB, pc *webrtc.PeerConnection, layers []Layer) *SimulcastPublisher {
	t.Helper()
	p := &SimulcastPublisher{PC: pc, Layers: layers, PLIs: make([]atomic.Int64, len(layers)), needKey: make([]atomic.Bool, len(layers))}
	for i, l := range layers {
		tr, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "teacher", webrtc.WithRTPStreamID(l.RID))
		if err != nil {
			t.Fatal(err)
		}
		p.tracks = append(p.tracks, tr)
		if i == 0 {
			tc, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
			if err != nil {
				t.Fatal(err)
			}
			p.sender = tc.Sender()
		} else if err := p.sender.AddEncoding(tr); err != nil {
			t.Fatal(err)
		}
		p.needKey[i].Store(true)
	}
	audio, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "teacher")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(audio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	p.audio = audio
	return p
}

// Run sends until ctx ends (call it once the connection is negotiated).
func (p *SimulcastPublisher) Run(ctx context.Context) {
	var midID, ridID uint8
	for _, e := range p.sender.GetParameters().HeaderExtensions {
		switch e.URI {
		case sdp.SDESMidURI:
			midID = uint8(e.ID)
		case sdp.SDESRTPStreamIDURI:
			ridID = uint8(e.ID)
		}
	}
	mid := ""
	for _, tr := range p.PC.GetTransceivers() {
		if tr.Sender() == p.sender {
			mid = tr.Mid()
		}
	}
	for i, l := range p.Layers {
		go func() {
			for {
				pkts, _, err := p.sender.ReadSimulcastRTCP(l.RID)
				if err != nil {
					return
				}
				for _, pk := range pkts {
					switch pk.(type) {
					case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
						p.PLIs[i].Add(1)
						p.needKey[i].Store(true)
					}
				}
			}
		}()
	}
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var seq uint16
		for n := uint32(0); ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pl := make([]byte, 80)
			pl[0] = 0xfc
			_ = p.audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: n * 960}, Payload: pl})
			seq++
		}
	}()
	tick := time.NewTicker(time.Second / 30)
	defer tick.Stop()
	began := time.Now()
	seqs := make([]uint16, len(p.Layers))
	lastKey := make([]time.Time, len(p.Layers))
	for frame := uint32(0); ; frame++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i, l := range p.Layers {
			if time.Since(began) < l.Start {
				continue
			}
			key := p.needKey[i].Swap(false) || time.Since(lastKey[i]) > 3*time.Second
			if key {
				lastKey[i] = time.Now()
			}
			size := l.Bitrate / 8 / 30
			if key {
				size *= 3
			}
			var vp8 []byte // a sized layer's frame
			count := max(1, (size+1099)/1100)
			if l.Width > 0 {
				vp8 = VP8Frame(key, l.Width, l.Height, max(size, 16))
				count = (len(vp8) + 1099) / 1100
			}
			for k := range count {
				var pl []byte
				if vp8 != nil {
					pl = append([]byte{0}, vp8[k*len(vp8)/count:(k+1)*len(vp8)/count]...)
				} else {
					pl = make([]byte, max(12, size/count))
					if !key {
						pl[1] = 0x01 // VP8 frame header P bit: interframe
					}
					pl[2] = byte(i)
					binary.BigEndian.PutUint32(pl[3:], frame)
					pl[7], pl[8] = byte(k), byte(count)
				}
				if k == 0 {
					pl[0] = 0x10 // VP8 descriptor: S bit, partition 0
				}
				h := rtp.Header{Version: 2, SequenceNumber: seqs[i], Timestamp: frame * 3000, Marker: k == count-1}
				_ = h.SetExtension(midID, []byte(mid))
				_ = h.SetExtension(ridID, []byte(l.RID))
				seqs[i]++
				_ = p.tracks[i].WriteRTP(&rtp.Packet{Header: h, Payload: pl})
			}
		}
	}
}

// VP8Frame is a VP8 frame of about size bytes: a keyframe carries the
// start code and width × height, an interframe only its frame tag.
func VP8Frame(key bool, width, height, size int) []byte {
	var f []byte
	if key {
		f = []byte{0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a}
		f = binary.LittleEndian.AppendUint16(f, uint16(width&0x3fff))
		f = binary.LittleEndian.AppendUint16(f, uint16(height&0x3fff))
	} else {
		f = []byte{0x11, 0x00, 0x00}
	}
	for len(f) < size {
		f = append(f, byte(len(f)))
	}
	return f
}

// FrameCounter assembles a SimulcastPublisher's frames at a subscriber and
// counts those a decoder could show: whole (every packet arrived, within
// 400 ms for retransmissions) and with an unbroken chain back to a
// keyframe of the same layer (a frame after a lost one, or the first
// frame of a new layer that is not a keyframe, is not decodable).
type FrameCounter struct {
	mu      sync.Mutex
	pending map[uint64]*pendingFrame
	chain   bool
	last    uint64 // layer<<32 | frame number of the last decoded frame
	// newest is the highest layer<<32 | frame number seen: a frame that
	// skips past it in the same layer tells of the frames between, which
	// get their 400 ms from then (a decoder's jitter buffer knows of a
	// frame whose every packet was lost from the sequence numbers, and
	// waits for its retransmission before it decodes the frames after).
	newest  uint64
	decoded []Decoded
	// Jumps counts RTP sequence numbers or timestamps that did not follow
	// on from the previous packet (a layer switch the edge did not
	// rewrite); Audio counts audio packets, Padding probe packets.
	Jumps, Audio, Padding, PLIs atomic.Int64
	lastSeq                     uint16
	lastTS                      uint32
	started                     bool
}

// Decoded is one decodable frame.
type Decoded struct {
	At    time.Time
	Layer int
}

type pendingFrame struct {
	first      time.Time
	got, count int
	key        bool
}

// NewFrameCounter returns an empty counter.
func NewFrameCounter() *FrameCounter { return &FrameCounter{pending: map[uint64]*pendingFrame{}} }

// Watch makes pc receive video and audio into c: add its recvonly
// transceivers, then read every track until it ends.
func (c *FrameCounter) Watch(t testing.TB, pc *webrtc.PeerConnection) {
	t.Helper()
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	var videoSSRC atomic.Uint32
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			videoSSRC.Store(uint32(tr.SSRC()))
		}
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if tr.Kind() == webrtc.RTPCodecTypeAudio {
				c.Audio.Add(1)
				continue
			}
			c.Packet(pkt, time.Now())
		}
	})
	go func() {
		// Like a browser's decoder: a broken chain asks for a keyframe,
		// at most every 300 ms.
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		var lastPLI time.Time
		for pc.ConnectionState() != webrtc.PeerConnectionStateClosed {
			now := <-tick.C
			if broken := c.flush(now); broken && now.Sub(lastPLI) > 300*time.Millisecond && videoSSRC.Load() != 0 {
				lastPLI = now
				c.PLIs.Add(1)
				_ = pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: videoSSRC.Load()}})
			}
		}
	}()
}

// Packet takes one received video packet.
func (c *FrameCounter) Packet(pkt *rtp.Packet, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		if d := int16(pkt.SequenceNumber - c.lastSeq); d > 1000 || d < -1000 {
			c.Jumps.Add(1)
		}
		if d := int32(pkt.Timestamp - c.lastTS); d > 90000*5 || d < -90000*5 {
			c.Jumps.Add(1)
		}
	}
	c.started, c.lastSeq, c.lastTS = true, pkt.SequenceNumber, pkt.Timestamp
	pl := pkt.Payload
	if len(pl) == 0 {
		c.Padding.Add(1)
		return
	}
	if len(pl) < 9 {
		return
	}
	k := uint64(pl[2])<<32 | uint64(binary.BigEndian.Uint32(pl[3:]))
	if c.newest>>32 == k>>32 && k > c.newest+1 && k-c.newest <= 30 {
		for m := c.newest + 1; m < k; m++ {
			if c.pending[m] == nil {
				c.pending[m] = &pendingFrame{first: now} // count 0: none of its packets yet
			}
		}
	}
	if c.newest == 0 || c.newest>>32 != k>>32 || k > c.newest {
		c.newest = k
	}
	f := c.pending[k]
	if f == nil {
		f = &pendingFrame{first: now}
		c.pending[k] = f
	}
	if f.got == 0 {
		f.count, f.key = int(pl[8]), pl[1]&1 == 0
	}
	f.got++
}

// flush decides the frames first seen 400 ms ago or more, in the order
// they were first seen, and reports whether the chain is broken.
func (c *FrameCounter) flush(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ready []uint64
	for k, f := range c.pending {
		if now.Sub(f.first) >= 400*time.Millisecond {
			ready = append(ready, k)
		}
	}
	slices.SortFunc(ready, func(a, b uint64) int {
		if d := c.pending[a].first.Compare(c.pending[b].first); d != 0 {
			return d
		}
		return cmp.Compare(a, b)
	})
	for _, k := range ready {
		f := c.pending[k]
		delete(c.pending, k)
		whole := f.got > 0 && f.got >= f.count
		switch {
		case whole && f.key:
			c.chain = true
		case whole && c.chain && k == c.last+1:
		default:
			c.chain = false
			continue
		}
		c.last = k
		c.decoded = append(c.decoded, Decoded{At: f.first, Layer: int(k >> 32)})
	}
	return !c.chain && c.started
}

// Between returns the decodable frames first seen in [from, to), per layer.
func (c *FrameCounter) Between(from, to time.Time) (total int, perLayer map[int]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	perLayer = map[int]int{}
	for _, d := range c.decoded {
		if !d.At.Before(from) && d.At.Before(to) {
			total++
			perLayer[d.Layer]++
		}
	}
	return total, perLayer
}

// FirstOf returns when the first decodable frame of layer at or after
// from was seen (zero if none).
func (c *FrameCounter) FirstOf(layer int, from time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.decoded {
		if d.Layer == layer && !d.At.Before(from) {
			return d.At
		}
	}
	return time.Time{}
}

// Frozen returns how long, within [from, to), no decodable frame came for
// more than gap: the time a viewer sees a frozen picture.
func (c *FrameCounter) Frozen(from, to time.Time, gap time.Duration) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var frozen time.Duration
	prev := from
	for _, d := range c.decoded {
		if d.At.Before(from) || !d.At.Before(to) {
			continue
		}
		if g := d.At.Sub(prev); g > gap {
			frozen += g
		}
		prev = d.At
	}
	if g := to.Sub(prev); g > gap {
		frozen += g
	}
	return frozen
}
