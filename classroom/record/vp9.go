package record

// vp9Size reads the frame size from a VP9 keyframe's uncompressed header
// (VP9 bitstream specification §6.2: frame marker, profile, show/frame
// type bits, the sync code, the colour config, then width−1 and
// height−1 in 16 bits each). A sample holding several frames (the spatial
// layers of an SVC picture) is read at its first. It returns 0, 0 when f
// is not a keyframe it can read.
func vp9Size(f []byte) (w, h int) {
	r := bitReader{b: f}
	if r.bits(2) != 2 {
		return 0, 0
	}
	profile := r.bits(1) | r.bits(1)<<1
	if profile == 3 {
		r.bits(1) // reserved
	}
	if r.bits(1) == 1 || r.bits(1) != 0 { // show_existing_frame; frame_type 0 is a keyframe
		return 0, 0
	}
	r.bits(2) // show_frame, error_resilient_mode
	if r.bits(24) != 0x498342 {
		return 0, 0
	}
	if profile >= 2 {
		r.bits(1) // ten_or_twelve_bit
	}
	if cs := r.bits(3); cs != 7 { // not sRGB
		r.bits(1) // color_range
		if profile == 1 || profile == 3 {
			r.bits(3) // subsampling x, y, reserved
		}
	} else if profile == 1 || profile == 3 {
		r.bits(1) // reserved
	}
	w, h = r.bits(16)+1, r.bits(16)+1
	if r.short {
		return 0, 0
	}
	return w, h
}

// bitReader reads big-endian bit fields; past the end it reads zeros and
// sets short.
type bitReader struct {
	b     []byte
	pos   int // in bits
	short bool
}

func (r *bitReader) bits(n int) int {
	v := 0
	for range n {
		i := r.pos / 8
		bit := 0
		if i < len(r.b) {
			bit = int(r.b[i]>>(7-r.pos%8)) & 1
		} else {
			r.short = true
		}
		v = v<<1 | bit
		r.pos++
	}
	return v
}
