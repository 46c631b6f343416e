package sfu

// What a tap may read of a simulcast layer, so the lesson recorder can
// record the camera's top layer rather than whichever arrived first.

// RID is the track's simulcast layer name ("" for a single-layer track).
func (t TapTrack) RID() string {
	if t.fwd == nil {
		return ""
	}
	return t.fwd.rid
}

// TrackID is the publisher's track id (its msid): every simulcast layer of
// one camera shares it; a screen share has its own.
func (t TapTrack) TrackID() string {
	if t.fwd == nil {
		return ""
	}
	return t.fwd.id
}

// Pixels is the picture size (width × height) of the layer's last VP8
// keyframe, 0 until one passed (or for other codecs).
func (t TapTrack) Pixels() int64 {
	if t.fwd == nil {
		return 0
	}
	if p := t.fwd.pixels.Load(); p > 0 {
		return p
	}
	w, h := t.fwd.keyframeSize()
	return int64(w * h)
}

// Bitrate is the layer's measured bitrate (bits/s; 0 before the first
// measurement).
func (t TapTrack) Bitrate() int64 {
	if t.fwd == nil {
		return 0
	}
	return t.fwd.bitrate.Load()
}
