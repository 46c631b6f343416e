package record_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/at-wat/ebml-go/mkvcore"
	"github.com/pion/rtp"

	"github.com/campusedge/campusedge/classroom/record"
)

// FuzzWriteRTP: the recorder takes RTP from the publisher, outside data.
// Whatever the packets hold (VP8 or VP9 payload descriptors and frame
// headers, Opus, timestamps jumping or going back), it must neither panic
// nor write a file that does not read back as WebM. The input is a
// sequence of records: track (1 byte), sequence delta (1), timestamp
// delta (2, signed), marker (1), payload length (1), payload.
func FuzzWriteRTP(f *testing.F) {
	key := []byte{0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 1, 2, 3}
	rec := func(track, seq byte, ts int16, marker byte, pl []byte) []byte {
		b := []byte{track, seq}
		b = binary.BigEndian.AppendUint16(b, uint16(ts))
		return append(append(b, marker, byte(len(pl))), pl...)
	}
	var seed []byte
	seed = append(seed, rec(0, 1, 0, 1, key)...)
	seed = append(seed, rec(1, 1, 960, 0, []byte{0xfc, 1, 2})...)
	seed = append(seed, rec(0, 1, 3000, 1, []byte{0x10, 0x01, 0, 0, 5, 6})...)
	seed = append(seed, rec(0, 1, -3000, 1, []byte{0x10, 0x01})...)
	f.Add(seed, false)
	f.Add(seed, true)
	f.Add([]byte{0, 0, 0, 0, 1, 3, 0x10, 0x00, 0x00}, false)
	f.Add([]byte{0, 255, 127, 255, 0, 0}, true)
	f.Fuzz(func(t *testing.T, in []byte, vp9 bool) {
		mime := "video/VP8"
		if vp9 {
			mime = "video/VP9"
		}
		path := filepath.Join(t.TempDir(), "f.webm")
		out, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		r, err := record.New(out, []record.Track{{MimeType: mime, ClockRate: 90000}, {MimeType: "audio/opus", ClockRate: 48000, Channels: 2}}, func() {})
		if err != nil {
			t.Fatal(err)
		}
		var seq [2]uint16
		var ts [2]uint32
		for len(in) >= 6 {
			tr := int(in[0] & 1)
			seq[tr] += uint16(in[1])
			ts[tr] += uint32(int32(int16(binary.BigEndian.Uint16(in[2:4]))))
			marker := in[4]&1 == 1
			n := min(int(in[5]), len(in)-6)
			pl := in[6 : 6+n]
			in = in[6+n:]
			_ = r.WriteRTP(tr, &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq[tr], Timestamp: ts[tr], Marker: marker}, Payload: pl})
		}
		st, err := r.Close()
		if err != nil {
			return // an error is a fine answer; a panic is not
		}
		if !st.Started {
			return
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mkvcore.NewSimpleBlockReader(bytes.NewReader(data)); err != nil {
			t.Fatalf("a recording that closed without error does not read back: %v", err)
		}
	})
}

// FuzzScanAndJoin: a recording left by a crash is read back from disk,
// where a power cut can leave anything. Whatever the bytes, Scan must not
// panic or read past a frame bound, and what it accepts Join writes as a
// file that scans back with the same frames.
func FuzzScanAndJoin(f *testing.F) {
	path := filepath.Join(f.TempDir(), "seed.webm")
	out, err := os.Create(path)
	if err != nil {
		f.Fatal(err)
	}
	r, err := record.New(out, []record.Track{{MimeType: "video/VP8", ClockRate: 90000}, {MimeType: "audio/opus", ClockRate: 48000, Channels: 1}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	key := []byte{0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 1, 2, 3}
	for i := range 20 {
		pl := append([]byte{0x10, 0x01, 0, 0}, byte(i))
		if i%10 == 0 {
			pl = key
		}
		_ = r.WriteRTP(0, &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(i * 3000), Marker: true}, Payload: pl})
		_ = r.WriteRTP(1, &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(i * 960)}, Payload: []byte{0xfc, byte(i)}})
	}
	if _, err := r.Close(); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)*2/3])
	f.Add(seed[:66000])
	f.Add([]byte{0x1A, 0x45, 0xDF, 0xA3, 0x80, 0x18, 0x53, 0x80, 0x67, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		n := 0
		sc, err := record.Scan(bytes.NewReader(in), func(_ []record.TrackInfo, fr record.Frame) error {
			if len(fr.Data) > len(in) {
				t.Fatalf("a frame of %d bytes from %d bytes of input", len(fr.Data), len(in))
			}
			n++
			return nil
		})
		if err != nil {
			return
		}
		if n != sc.Frames || sc.Good > int64(len(in)) {
			t.Fatalf("%d frames seen, %d counted; %d good bytes of %d", n, sc.Frames, sc.Good, len(in))
		}
		out := &memFile{}
		j, err := record.Join(out, []io.ReadSeeker{bytes.NewReader(in)})
		if err != nil {
			return
		}
		back, err := record.Scan(bytes.NewReader(out.b), nil)
		if err != nil || back.Torn || back.Frames != j.Frames {
			t.Fatalf("the joined file scans back as %+v, %v; %d frames were written", back, err, j.Frames)
		}
	})
}

// memFile is an in-memory file for the muxer (which goes back to write
// the cues).
type memFile struct{ b []byte }

func (m *memFile) Write(p []byte) (int, error) { m.b = append(m.b, p...); return len(p), nil }
func (m *memFile) Close() error                { return nil }
func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	copy(m.b[off:], p)
	return len(p), nil
}
