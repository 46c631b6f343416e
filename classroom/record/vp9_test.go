package record

import "testing"

// vp9Header builds the start of a VP9 keyframe's uncompressed header bit
// by bit: profile, colour space (7: sRGB), then the size.
func vp9Header(profile, colorSpace, w, h int, key bool) []byte {
	var bits []int
	put := func(v, n int) {
		for i := n - 1; i >= 0; i-- {
			bits = append(bits, v>>i&1)
		}
	}
	put(2, 2)
	put(profile&1, 1)
	put(profile>>1, 1)
	if profile == 3 {
		put(0, 1)
	}
	put(0, 1) // show_existing_frame
	if key {
		put(0, 1)
	} else {
		put(1, 1)
	}
	put(1, 1) // show_frame
	put(0, 1) // error_resilient_mode
	put(0x498342, 24)
	if profile >= 2 {
		put(0, 1)
	}
	put(colorSpace, 3)
	if colorSpace != 7 {
		put(0, 1)
		if profile == 1 || profile == 3 {
			put(0, 3)
		}
	} else if profile == 1 || profile == 3 {
		put(0, 1)
	}
	put(w-1, 16)
	put(h-1, 16)
	out := make([]byte, (len(bits)+7)/8+4)
	for i, b := range bits {
		out[i/8] |= byte(b << (7 - i%8))
	}
	return out
}

func TestVP9Size(t *testing.T) {
	for _, tc := range []struct{ profile, cs, w, h int }{{0, 1, 1280, 720}, {0, 7, 320, 180}, {1, 2, 640, 360}, {2, 1, 1920, 1080}, {3, 7, 16, 16}} {
		f := vp9Header(tc.profile, tc.cs, tc.w, tc.h, true)
		if w, h := vp9Size(f); w != tc.w || h != tc.h {
			t.Errorf("profile %d colour space %d: %d×%d, want %d×%d", tc.profile, tc.cs, w, h, tc.w, tc.h)
		}
		if !isKeyframe("video/VP9", f) && tc.profile != 3 {
			t.Errorf("profile %d: not a keyframe to isKeyframe", tc.profile)
		}
		if w, h := vp9Size(vp9Header(tc.profile, tc.cs, tc.w, tc.h, false)); w != 0 || h != 0 {
			t.Errorf("an inter frame read as %d×%d", w, h)
		}
		if w, h := vp9Size(f[:6]); w != 0 || h != 0 {
			t.Errorf("a truncated header read as %d×%d", w, h)
		}
	}
}

func FuzzVP9Size(f *testing.F) {
	f.Add(vp9Header(0, 1, 1280, 720, true))
	f.Add(vp9Header(1, 7, 2, 2, true))
	f.Add([]byte{0x82, 0x49})
	f.Fuzz(func(t *testing.T, b []byte) {
		w, h := vp9Size(b)
		if (w == 0) != (h == 0) || w < 0 || w > 65536 || h > 65536 {
			t.Fatalf("size %d×%d", w, h)
		}
	})
}
