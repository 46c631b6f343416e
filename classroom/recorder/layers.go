package recorder

// Simulcast: a teacher page sends its camera as three layers (180p, 360p,
// 720p) and a subscriber gets the one its link carries; the recording
// must hold the top one. The layers start a few hundred milliseconds
// apart, often the lowest first, and a browser short of CPU may start its
// top layer later still.
//
// The recorder does not switch layers in the middle of a file: the WebM
// header states the picture size of the first keyframe, and the layers'
// RTP sequence numbers and clocks are unrelated, so a switch would need
// the SFU's rewriting and a header that lies about the size. Instead a
// part whose video arrives as simulcast waits, up to recLayerWait after
// its first layer came, for the camera's other layers (and for a keyframe
// of each, which tells its picture size), then records the largest from
// its next keyframe. A top layer that starts later than that is not
// recorded: the lesson keeps the layer it started with (logged).

import (
	"time"

	"github.com/campusedge/campusedge/classroom/sfu"
)

const (
	// recLayerWait bounds the wait for a camera's other simulcast layers
	// after its first one came.
	recLayerWait = 2 * time.Second
	// recMaxLayers: browsers send at most three simulcast layers; once
	// that many came (and are sized) there is nothing more to wait for.
	recMaxLayers = 3
	recLayerPoll = 50 * time.Millisecond
)

// videoCand is one simulcast layer of the camera and its sink's number.
type videoCand struct {
	t   sfu.TapTrack
	vid int32
}

// sameCamera reports whether b is another simulcast layer of a's track.
func sameCamera(a, b sfu.TapTrack) bool {
	return a.RID() != "" && b.RID() != "" && a.TrackID() == b.TrackID() && a.RID() != b.RID()
}

// measured: the layer's size (VP8 keyframe) or bitrate is known.
func measured(t sfu.TapTrack) bool { return t.Pixels() > 0 || t.Bitrate() > 0 }

// waitLayers waits, for a camera sent as simulcast, until recMaxLayers of
// its layers came and each is measured, or recLayerWait has passed since
// the first came, or the part ends.
func (p *part) waitLayers() {
	p.mu.Lock()
	if len(p.vcands) == 0 || p.vcands[0].t.RID() == "" {
		p.mu.Unlock()
		return
	}
	deadline := p.firstVideoAt.Add(recLayerWait)
	p.mu.Unlock()
	tick := time.NewTicker(recLayerPoll)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		p.mu.Lock()
		done := len(p.vcands) >= recMaxLayers
		for _, c := range p.vcands {
			done = done && measured(c.t)
		}
		p.mu.Unlock()
		if done {
			return
		}
		select {
		case <-tick.C:
		case <-p.stop:
			return
		case <-p.pubDone:
			return
		}
	}
}

// chooseLayer picks the camera layer to record (under p.mu): the largest
// picture, else the highest bitrate, else the last to come (browsers
// start the low layers first).
func (p *part) chooseLayer() {
	if p.video != nil || len(p.vcands) == 0 {
		return
	}
	best := p.vcands[0]
	for _, c := range p.vcands[1:] {
		bp, cp := best.t.Pixels(), c.t.Pixels()
		switch {
		case cp != bp:
			if cp > bp {
				best = c
			}
		case c.t.Bitrate() != best.t.Bitrate():
			if c.t.Bitrate() > best.t.Bitrate() {
				best = c
			}
		default:
			best = c
		}
	}
	rids := make([]string, 0, len(p.vcands))
	for _, c := range p.vcands {
		rids = append(rids, c.t.RID())
	}
	p.video = &best.t
	p.chosen.Store(best.vid)
	p.log().Info("recording the camera's top simulcast layer", "rid", best.t.RID(), "pixels", best.t.Pixels(), "layers", rids)
}
