package sfu

import (
	"slices"
	"strings"

	"github.com/pion/webrtc/v4"
)

// VideoLayer is the video a subscriber takes: for a simulcast track, which
// of the publisher's layers (by rid and position), and the picture size of
// that layer's last keyframe. The console's cascade panel shows it per
// school pulling from this edge.
type VideoLayer struct {
	RID string
	// Layer is the position among the track's layers (0 the lowest) and
	// Layers how many it has (1 for a single-layer track).
	Layer, Layers int
	// Width and Height of the layer's cached keyframe (VP8 only; 0 when
	// unknown).
	Width, Height int
}

// VideoLayer reports the layer of the subscriber's first camera track
// (screen shares skipped while a camera exists): ok is false while it
// takes no video.
func (s *Subscriber) VideoLayer() (VideoLayer, bool) {
	tracks := s.videoTracks()
	slices.SortStableFunc(tracks, func(a, b *subTrack) int {
		switch {
		case a.screen() == b.screen():
			return 0
		case a.screen():
			return 1
		}
		return -1
	})
	for _, t := range tracks {
		f := t.cur.Load()
		if f == nil {
			f = t.fwd
		}
		v := VideoLayer{RID: f.rid, Layers: 1}
		if f.grp != nil && t.layered() {
			ls := f.grp.layers()
			v.Layer, v.Layers = max(0, slices.Index(ls, f)), len(ls)
		}
		v.Width, v.Height = f.keyframeSize()
		return v, true
	}
	return VideoLayer{}, false
}

// keyframeSize is the picture size of the cached keyframe (0, 0: none, or
// not VP8); for a layer of a VP9 SVC track, its spatial layer's size.
func (f *forwarder) keyframeSize() (w, h int) {
	if f.layer != nil && f.layer.base.svc != nil {
		return f.layer.base.svc.pictureSize(f.layer.s)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.track == nil || !strings.EqualFold(f.track.Codec().MimeType, webrtc.MimeTypeVP8) || !f.gop.valid || len(f.gop.pkts) == 0 {
		return 0, 0
	}
	return vp8Size(f.gop.pkts[0].Payload)
}

// ConnState is the subscriber's media connection: "new" before it has
// one, else the WebRTC peer connection state ("connecting", "connected",
// "disconnected", "failed", "closed").
func (s *Subscriber) ConnState() string {
	s.mu.Lock()
	pc := s.pc
	s.mu.Unlock()
	if pc == nil {
		return webrtc.PeerConnectionStateNew.String()
	}
	return pc.ConnectionState().String()
}

// SentBytes is what the edge has sent the subscriber so far, probe
// padding included.
func (s *Subscriber) SentBytes() uint64 { return s.tx.Load() }
