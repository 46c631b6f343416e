// Keyframe cache: the last group of pictures of a video track (VP8 and
// H264 keyframes recognised), given to a subscriber that joins.

package sfu

import (
	"strings"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// maxGOPPackets bounds the keyframe cache of one video track: about 4 s of
// a 2.5 Mbit/s lesson. A publisher whose keyframes are further apart than
// that gets no cache (new subscribers fall back to a PLI).
const maxGOPPackets = 1000

// gopCache holds the packets of the current group of pictures: the last
// keyframe and everything after it. Only VP8 and H264 are recognised; other
// codecs are never cached.
type gopCache struct {
	pkts  []*rtp.Packet
	keyTS uint32
	valid bool
}

func (g *gopCache) push(pkt *rtp.Packet, mime string) {
	if isKeyframeStart(pkt.Payload, mime) && (!g.valid || pkt.Timestamp != g.keyTS) {
		// A new keyframe: start over. (Later packets of the same keyframe
		// share its timestamp and are appended below.)
		g.pkts = append(g.pkts[:0:0], pkt)
		g.keyTS, g.valid = pkt.Timestamp, true
		return
	}
	if !g.valid {
		return
	}
	if len(g.pkts) >= maxGOPPackets {
		g.pkts, g.valid = nil, false
		return
	}
	g.pkts = append(g.pkts, pkt)
}

// isKeyframeStart reports whether an RTP payload begins a keyframe.
func isKeyframeStart(p []byte, mime string) bool {
	switch {
	case strings.EqualFold(mime, webrtc.MimeTypeVP8):
		return vp8Keyframe(p)
	case strings.EqualFold(mime, webrtc.MimeTypeH264):
		return h264Keyframe(p)
	}
	return false
}

// vp8Keyframe parses the VP8 payload descriptor (RFC 7741 §4.2): the
// packet must start partition 0 of a frame whose header's P bit is clear.
func vp8Keyframe(p []byte) bool {
	_, ok := vp8Header(p)
	return ok
}

// vp8Size returns the picture size a VP8 keyframe's first packet states
// (RFC 6386 §9.1: after the 3-byte frame tag, the start code 9d 01 2a,
// then 14-bit width and height), or 0, 0.
func vp8Size(p []byte) (w, h int) {
	i, ok := vp8Header(p)
	if !ok || len(p) < i+10 || p[i+3] != 0x9d || p[i+4] != 0x01 || p[i+5] != 0x2a {
		return 0, 0
	}
	w = int(p[i+6]) | int(p[i+7]&0x3f)<<8
	h = int(p[i+8]) | int(p[i+9]&0x3f)<<8
	return w, h
}

// vp8Header returns where the VP8 frame header starts in p when p starts
// partition 0 of a keyframe.
func vp8Header(p []byte) (int, bool) {
	if len(p) < 1 {
		return 0, false
	}
	x, s, pid := p[0]&0x80 != 0, p[0]&0x10 != 0, p[0]&0x07
	if !s || pid != 0 {
		return 0, false
	}
	i := 1
	if x {
		if len(p) < 2 {
			return 0, false
		}
		ext := p[1]
		i = 2
		if ext&0x80 != 0 { // I: picture id, 7 or 15 bits
			if len(p) <= i {
				return 0, false
			}
			if p[i]&0x80 != 0 {
				i++
			}
			i++
		}
		if ext&0x40 != 0 { // L: TL0PICIDX
			i++
		}
		if ext&0x30 != 0 { // T or K: TID/KEYIDX
			i++
		}
	}
	return i, len(p) > i && p[i]&0x01 == 0
}

// h264Keyframe looks for an SPS or the start of an IDR slice (RFC 6184):
// in a single NAL unit, a STAP-A aggregate, or the first FU-A fragment.
func h264Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	key := func(t byte) bool { return t == 5 || t == 7 }
	switch t := p[0] & 0x1f; t {
	case 24: // STAP-A: 16-bit size, then the NAL unit
		for i := 1; i+2 < len(p); {
			n := int(p[i])<<8 | int(p[i+1])
			if n == 0 || i+2+n > len(p) {
				return false
			}
			if key(p[i+2] & 0x1f) {
				return true
			}
			i += 2 + n
		}
		return false
	case 28: // FU-A: start bit and the fragmented NAL unit's type
		return len(p) > 1 && p[1]&0x80 != 0 && key(p[1]&0x1f)
	default:
		return key(t)
	}
}
