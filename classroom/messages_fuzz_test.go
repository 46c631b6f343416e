package classroom

import (
	"testing"

	"github.com/campusedge/campusedge/edge/ctlwire"
)

// FuzzDecodeMessage: any bytes through the envelope and body decoders give
// a message or an error, never a panic; a decoded message passes its own
// validation again.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"join","v":1,"name":"Room 204"}`,
		`{"type":"publish","v":1,"id":"r1","sdp":"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"}`,
		`{"type":"answer","v":1,"pc":"subscribe","sdp":"v=0\r\n"}`,
		`{"type":"candidate","v":1,"pc":"publish","candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}`,
		`{"type":"hand","v":1,"raised":true}`,
		`{"type":"stage","v":1,"classroom_id":"c-1","on":true}`,
		`{"type":"mute","v":1,"classroom_id":"c-1","muted":false}`,
		`{"type":"end","v":1}`, `{"type":"leave","v":1}`, `{"type":"subscribe","v":1}`,
		`{"type":"stage","v":1}`, `{"type":"end","v":1,"x":1}`, `{"type":"hand","v":1,"raised":"yes"}`,
		`{"type":"join","v":2}`, `{}`, `[]`, `null`, "\xff", `{"type":"join","v":1}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		hdr, err := ctlwire.Decode(data)
		if err != nil {
			return
		}
		m, err := decodeMessage(hdr, data)
		if err != nil {
			if m != nil {
				t.Fatal("decodeMessage returned a message with an error")
			}
			return
		}
		if err := validate(m); err != nil {
			t.Fatalf("decoded message fails validation: %v", err)
		}
	})
}
