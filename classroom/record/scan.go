package record

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// A recording cut off by a crash (SIGKILL, power loss) is a WebM whose
// Segment and Clusters have unknown sizes (the muxer writes them so), with
// no cues and a placeholder duration: the bytes up to the last whole
// SimpleBlock are good. Scan reads such a file — or a finished one — frame
// by frame and stops quietly where it is torn; Join writes the frames of
// one or more of them again as one finished, seekable file.

// EBML element IDs the scanner knows (Matroska/WebM).
const (
	idEBML          = 0x1A45DFA3
	idSegment       = 0x18538067
	idInfo          = 0x1549A966
	idTimecodeScale = 0x2AD7B1
	idTracks        = 0x1654AE6B
	idTrackEntry    = 0xAE
	idTrackNumber   = 0xD7
	idCodecID       = 0x86
	idVideo         = 0xE0
	idPixelWidth    = 0xB0
	idPixelHeight   = 0xBA
	idAudio         = 0xE1
	idSamplingFreq  = 0xB5
	idChannels      = 0x9F
	idCluster       = 0x1F43B675
	idTimecode      = 0xE7
	idSimpleBlock   = 0xA3
	idBlockGroup    = 0xA0
	idBlock         = 0xA1
	idCues          = 0x1C53BB6B
	idSeekHead      = 0x114D9B74
	idTags          = 0x1254C367
	idChapters      = 0x1043A770
	idAttachments   = 0x1941A469
)

// Bounds on what the scanner reads into memory: a frame of a lesson is far
// below maxFrameBytes; the headers are a few hundred bytes.
const (
	maxFrameBytes  = 16 << 20
	maxHeaderBytes = 1 << 20
	unknownSize    = -1
)

// ErrNotRecording is returned by Scan for input that does not start as a
// WebM with tracks: nothing of it can be saved.
var ErrNotRecording = errors.New("not a WebM recording")

// ErrIncompatible is returned by Join when the parts' video codecs differ
// (a teacher who came back with another browser): they cannot be one file.
var ErrIncompatible = errors.New("the parts' codecs differ")

// TrackInfo is one track of a scanned file.
type TrackInfo struct {
	Number uint64
	Track
	Width, Height int // video
}

// Frame is one coded frame read back from a recording.
type Frame struct {
	Track uint64 // TrackNumber in the file
	Key   bool
	At    time.Duration // from the file's start
	Data  []byte
}

// Scanned says what Scan found.
type Scanned struct {
	Tracks []TrackInfo
	Frames int
	// End is the time of the last frame (0 if none).
	End time.Duration
	// Torn is true when the file stops inside an element or holds bytes
	// that are not WebM (a crash or power cut): what follows Good is lost.
	Torn bool
	// Good is how many bytes up to the last whole element were read.
	Good int64
}

type scanner struct {
	r     *bufio.Reader
	off   int64
	scale int64 // TimecodeScale, ns
	out   Scanned
	fn    func([]TrackInfo, Frame) error
}

// errTorn marks the end of the good bytes: the caller stops, keeping what
// came before.
var errTorn = errors.New("torn")

// Scan reads the recording in r and calls fn for each whole frame, in file
// order, with the file's tracks. A torn tail is not an error (Scanned.Torn says so); an error from
// fn stops the scan and is returned.
func Scan(r io.Reader, fn func([]TrackInfo, Frame) error) (Scanned, error) {
	s := &scanner{r: bufio.NewReaderSize(r, 64<<10), scale: 1_000_000, fn: fn}
	err := s.top()
	switch {
	case errors.Is(err, errTorn):
		s.out.Torn = true
		if len(s.out.Tracks) == 0 {
			return s.out, fmt.Errorf("%w: it is cut off before its tracks", ErrNotRecording)
		}
		return s.out, nil
	case err != nil:
		return s.out, err
	}
	if len(s.out.Tracks) == 0 {
		return s.out, fmt.Errorf("%w: no tracks", ErrNotRecording)
	}
	return s.out, nil
}

// top reads the EBML header and the Segment.
func (s *scanner) top() error {
	id, size, err := s.head()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: empty", ErrNotRecording)
		}
		return err
	}
	if id != idEBML || size < 0 || size > maxHeaderBytes {
		return fmt.Errorf("%w: no EBML header", ErrNotRecording)
	}
	if err := s.skip(size); err != nil {
		return err
	}
	s.out.Good = s.off
	id, size, err = s.head()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return errTorn
		}
		return err
	}
	if id != idSegment {
		return fmt.Errorf("%w: no Segment", ErrNotRecording)
	}
	end := int64(math.MaxInt64)
	if size != unknownSize {
		end = s.off + size
	}
	return s.segment(end)
}

// segment reads the Segment's children up to end (or EOF).
func (s *scanner) segment(end int64) error {
	var pending uint64 // a level-1 ID read while ending an unknown-size Cluster
	var pendingSize int64
	for s.off < end {
		var id uint64
		var size int64
		if pending != 0 {
			id, size, pending = pending, pendingSize, 0
		} else {
			var err error
			id, size, err = s.head()
			if errors.Is(err, io.EOF) {
				return nil // ends at an element boundary
			}
			if err != nil {
				return err
			}
		}
		switch id {
		case idInfo:
			if err := s.info(size); err != nil {
				return err
			}
		case idTracks:
			if err := s.tracks(size); err != nil {
				return err
			}
		case idCluster:
			if len(s.out.Tracks) == 0 {
				return fmt.Errorf("%w: a Cluster before the Tracks", ErrNotRecording)
			}
			next, nsize, err := s.cluster(size)
			if err != nil {
				return err
			}
			pending, pendingSize = next, nsize
			if pending == 0 {
				s.out.Good = s.off
			}
			continue
		default:
			if size == unknownSize {
				return errTorn // only Segment and Cluster are written so
			}
			if err := s.skip(size); err != nil {
				return err
			}
		}
		s.out.Good = s.off
	}
	return nil
}

// levelOne reports whether id is a child of the Segment: it ends an
// unknown-size Cluster.
func levelOne(id uint64) bool {
	switch id {
	case idCluster, idCues, idSeekHead, idInfo, idTracks, idTags, idChapters, idAttachments:
		return true
	}
	return false
}

// cluster reads one Cluster. For an unknown-size Cluster it returns the
// level-1 element head that ended it (id 0 at EOF).
func (s *scanner) cluster(size int64) (uint64, int64, error) {
	end := int64(math.MaxInt64)
	if size != unknownSize {
		end = s.off + size
	}
	var tc int64
	for s.off < end {
		id, esize, err := s.head()
		if errors.Is(err, io.EOF) && size == unknownSize {
			return 0, 0, nil
		}
		if err != nil {
			return 0, 0, unexpected(err)
		}
		if levelOne(id) {
			if size != unknownSize {
				return 0, 0, errTorn
			}
			return id, esize, nil
		}
		if esize == unknownSize || s.off+esize > end {
			return 0, 0, errTorn
		}
		switch id {
		case idTimecode:
			v, err := s.uint(esize)
			if err != nil {
				return 0, 0, err
			}
			if v > math.MaxInt32 {
				return 0, 0, errTorn
			}
			tc = int64(v)
		case idSimpleBlock:
			if err := s.block(esize, tc); err != nil {
				return 0, 0, err
			}
		case idBlockGroup:
			gend := s.off + esize
			for s.off < gend {
				cid, csize, err := s.head()
				if err != nil {
					return 0, 0, unexpected(err)
				}
				if csize == unknownSize || s.off+csize > gend {
					return 0, 0, errTorn
				}
				if cid == idBlock {
					if err := s.block(csize, tc); err != nil {
						return 0, 0, err
					}
				} else if err := s.skip(csize); err != nil {
					return 0, 0, err
				}
			}
		default:
			if err := s.skip(esize); err != nil {
				return 0, 0, err
			}
		}
		s.out.Good = s.off
	}
	return 0, 0, nil
}

// block reads a (Simple)Block of size bytes in a cluster at tc.
func (s *scanner) block(size int64, tc int64) error {
	if size > maxFrameBytes || size < 4 {
		return errTorn
	}
	b, err := s.read(size)
	if err != nil {
		return err
	}
	track, n := vint(b)
	if n == 0 || n+3 > len(b) {
		return errTorn
	}
	rel := int64(int16(binary.BigEndian.Uint16(b[n:])))
	flags := b[n+2]
	if flags&0x06 != 0 {
		return nil // laced: never written by this package; skipped
	}
	at := time.Duration((tc + rel) * s.scale)
	if at < 0 {
		at = 0
	}
	s.out.Frames++
	if at > s.out.End {
		s.out.End = at
	}
	if s.fn == nil {
		return nil
	}
	return s.fn(s.out.Tracks, Frame{Track: track, Key: flags&0x80 != 0, At: at, Data: b[n+3:]})
}

func (s *scanner) info(size int64) error {
	if size == unknownSize || size > maxHeaderBytes {
		return errTorn
	}
	end := s.off + size
	for s.off < end {
		id, esize, err := s.head()
		if err != nil {
			return unexpected(err)
		}
		if esize == unknownSize || s.off+esize > end {
			return errTorn
		}
		if id == idTimecodeScale {
			v, err := s.uint(esize)
			if err != nil {
				return err
			}
			if v == 0 || v > uint64(time.Second) {
				return fmt.Errorf("%w: TimecodeScale %d", ErrNotRecording, v)
			}
			s.scale = int64(v)
			continue
		}
		if err := s.skip(esize); err != nil {
			return err
		}
	}
	return nil
}

func (s *scanner) tracks(size int64) error {
	if size == unknownSize || size > maxHeaderBytes {
		return errTorn
	}
	end := s.off + size
	for s.off < end {
		id, esize, err := s.head()
		if err != nil {
			return unexpected(err)
		}
		if esize == unknownSize || s.off+esize > end {
			return errTorn
		}
		if id != idTrackEntry {
			if err := s.skip(esize); err != nil {
				return err
			}
			continue
		}
		t, err := s.trackEntry(s.off + esize)
		if err != nil {
			return err
		}
		if t.MimeType != "" && t.Number > 0 {
			s.out.Tracks = append(s.out.Tracks, t)
		}
	}
	return nil
}

func (s *scanner) trackEntry(end int64) (TrackInfo, error) {
	var t TrackInfo
	var codec string
	for s.off < end {
		id, esize, err := s.head()
		if err != nil {
			return t, unexpected(err)
		}
		if esize == unknownSize || s.off+esize > end {
			return t, errTorn
		}
		switch id {
		case idTrackNumber:
			if t.Number, err = s.uint(esize); err != nil {
				return t, err
			}
		case idCodecID:
			b, err := s.read(esize)
			if err != nil {
				return t, err
			}
			codec = string(b)
		case idVideo, idAudio:
			// Descend: their children are read by this loop.
		case idPixelWidth, idPixelHeight, idChannels:
			v, err := s.uint(esize)
			if err != nil {
				return t, err
			}
			if v > 1<<16 {
				return t, errTorn
			}
			switch id {
			case idPixelWidth:
				t.Width = int(v)
			case idPixelHeight:
				t.Height = int(v)
			default:
				t.Channels = uint16(v)
			}
		case idSamplingFreq:
			b, err := s.read(esize)
			if err != nil {
				return t, err
			}
			var f float64
			switch len(b) {
			case 4:
				f = float64(math.Float32frombits(binary.BigEndian.Uint32(b)))
			case 8:
				f = math.Float64frombits(binary.BigEndian.Uint64(b))
			}
			if f >= 1 && f <= 384000 {
				t.ClockRate = uint32(f)
			}
		default:
			if err := s.skip(esize); err != nil {
				return t, err
			}
		}
	}
	switch codec {
	case "V_VP8":
		t.MimeType, t.ClockRate = "video/VP8", 90000
	case "V_VP9":
		t.MimeType, t.ClockRate = "video/VP9", 90000
	case "A_OPUS":
		t.MimeType = "audio/opus"
		if t.ClockRate == 0 {
			t.ClockRate = 48000
		}
	}
	return t, nil
}

// head reads an element's ID and size (unknownSize for all ones). io.EOF
// means the input ended exactly before it.
func (s *scanner) head() (uint64, int64, error) {
	first, err := s.r.ReadByte()
	if err != nil {
		return 0, 0, err // io.EOF at a boundary
	}
	s.off++
	idLen := 1
	for m := byte(0x80); idLen <= 4 && first&m == 0; m >>= 1 {
		idLen++
	}
	if idLen > 4 {
		return 0, 0, errTorn // zeros: a hole a power cut left
	}
	id := uint64(first)
	for range idLen - 1 {
		b, err := s.byte()
		if err != nil {
			return 0, 0, err
		}
		id = id<<8 | uint64(b)
	}
	first, err = s.byte()
	if err != nil {
		return 0, 0, err
	}
	n := 1
	for m := byte(0x80); n <= 8 && first&m == 0; m >>= 1 {
		n++
	}
	if n > 8 {
		return 0, 0, errTorn
	}
	v := uint64(first & (0xFF >> n))
	allOnes := v == uint64(0xFF>>n)
	for range n - 1 {
		b, err := s.byte()
		if err != nil {
			return 0, 0, err
		}
		v = v<<8 | uint64(b)
		allOnes = allOnes && b == 0xFF
	}
	if allOnes {
		return id, unknownSize, nil
	}
	if v > math.MaxInt64/2 {
		return 0, 0, errTorn
	}
	return id, int64(v), nil
}

func (s *scanner) byte() (byte, error) {
	b, err := s.r.ReadByte()
	if err != nil {
		return 0, unexpected(err)
	}
	s.off++
	return b, nil
}

func (s *scanner) read(n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.r, b); err != nil {
		return nil, unexpected(err)
	}
	s.off += n
	return b, nil
}

func (s *scanner) skip(n int64) error {
	m, err := s.r.Discard(int(min(n, math.MaxInt32)))
	s.off += int64(m)
	if err != nil {
		return unexpected(err)
	}
	if int64(m) < n {
		return s.skip(n - int64(m))
	}
	return nil
}

func (s *scanner) uint(n int64) (uint64, error) {
	if n > 8 {
		return 0, errTorn
	}
	b, err := s.read(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v, nil
}

// unexpected turns the end of input inside an element into errTorn.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errTorn
	}
	return err
}

// vint reads a track number (EBML variable-size integer, marker removed);
// n is 0 if b does not hold one.
func vint(b []byte) (uint64, int) {
	if len(b) == 0 {
		return 0, 0
	}
	n := 1
	for m := byte(0x80); n <= 8 && b[0]&m == 0; m >>= 1 {
		n++
	}
	if n > 8 || n > len(b) {
		return 0, 0
	}
	v := uint64(b[0] & (0xFF >> n))
	for _, x := range b[1:n] {
		v = v<<8 | uint64(x)
	}
	return v, n
}
