package mediatest

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// SizedLayer is a simulcast layer with a picture size, sent from Start
// after the publisher runs (a browser starts its layers apart, often the
// lowest first).
type SizedLayer struct {
	RID           string
	Width, Height int
	Bitrate       int // bits/s
	Start         time.Duration
}

// SizedSimulcast is a pion peer sending one VP8 camera as simulcast layers
// (rid and mid header extensions, like a browser) whose keyframes carry a
// real VP8 keyframe header with the layer's picture size (RFC 6386 9.1),
// which the SFU and the recorder read; and Opus audio. 30 frames a second
// per layer, a keyframe first, on each PLI for that layer and every 3 s.
// Its payloads are not frame-counted (use SimulcastPublisher for that).
type SizedSimulcast struct {
	PC      *webrtc.PeerConnection
	Layers  []SizedLayer
	PLIs    []atomic.Int64 // per layer
	tracks  []*webrtc.TrackLocalStaticRTP
	audio   *webrtc.TrackLocalStaticRTP
	sender  *webrtc.RTPSender
	needKey []atomic.Bool
}

// SizedSimulcastTracks adds the layers and an audio track to pc, before
// its offer is made.
func SizedSimulcastTracks(t testing.TB, pc *webrtc.PeerConnection, layers []SizedLayer) *SizedSimulcast {
	t.Helper()
	p := &SizedSimulcast{PC: pc, Layers: layers, PLIs: make([]atomic.Int64, len(layers)), needKey: make([]atomic.Bool, len(layers))}
	for i, l := range layers {
		tr, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "camera", "teacher", webrtc.WithRTPStreamID(l.RID))
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

// Run sends until ctx ends (call it once the connection is negotiated).
func (p *SizedSimulcast) Run(ctx context.Context) {
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
			_ = p.audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: n * 960}, Payload: []byte{0xfc, 0xff, 0xfe, byte(n)}})
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
			f := VP8Frame(key, l.Width, l.Height, max(size, 16))
			count := (len(f) + 1099) / 1100
			for k := range count {
				chunk := f[k*len(f)/count : (k+1)*len(f)/count]
				desc := byte(0x00)
				if k == 0 {
					desc = 0x10 // VP8 payload descriptor: S bit, partition 0
				}
				h := rtp.Header{Version: 2, SequenceNumber: seqs[i], Timestamp: frame * 3000, Marker: k == count-1}
				_ = h.SetExtension(midID, []byte(mid))
				_ = h.SetExtension(ridID, []byte(l.RID))
				seqs[i]++
				_ = p.tracks[i].WriteRTP(&rtp.Packet{Header: h, Payload: append([]byte{desc}, chunk...)})
			}
		}
	}
}
