package record

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// JoinGap is the time a joined file puts between the last frame of a part
// and the first of the next: one video frame at 30 fps. The time the
// lesson was not recorded (an edge restart) is not in the file.
const JoinGap = 33 * time.Millisecond

// JoinedPart is where one part landed in a joined file.
type JoinedPart struct {
	// Offset is the part's start in the joined file.
	Offset time.Duration
	// Duration is the time of its last frame (from its own start).
	Duration time.Duration
	Frames   int
	// Torn says the part was cut off (a crash): its frames up to the tear
	// are in the joined file.
	Torn bool
	// Skipped says the part held nothing usable (cut off before its
	// first frame): it is not in the joined file.
	Skipped bool
}

// Joined says what Join wrote.
type Joined struct {
	Parts    []JoinedPart
	Duration time.Duration
	Frames   int
}

// errStop ends a scan of the headers only.
var errStop = errors.New("stop")

// Join writes the recordings in parts, in order, to out as one finished
// WebM with cues and duration: each part's frames follow the previous
// part's last frame after JoinGap. Parts may be cut off by a crash (Scan).
// The output has the first part's video codec and an Opus track if any
// part has audio; a part whose video codec differs fails the join with
// ErrIncompatible before anything is written. out is closed.
func Join(out io.WriteCloser, parts []io.ReadSeeker) (Joined, error) {
	var res Joined
	var tracks []Track
	video, audio := -1, -1
	width, height := 0, 0
	skip := make([]bool, len(parts))
	for i, p := range parts {
		sc, err := Scan(p, func([]TrackInfo, Frame) error { return errStop })
		if errors.Is(err, ErrNotRecording) {
			skip[i] = true
			continue
		}
		if err != nil && !errors.Is(err, errStop) {
			_ = out.Close()
			return res, fmt.Errorf("part %d: %w", i+1, err)
		}
		for _, t := range sc.Tracks {
			isVideo := strings.HasPrefix(strings.ToLower(t.MimeType), "video/")
			switch {
			case isVideo && video < 0:
				video = len(tracks)
				tracks = append(tracks, t.Track)
				width, height = t.Width, t.Height
			case isVideo && !strings.EqualFold(tracks[video].MimeType, t.MimeType):
				_ = out.Close()
				return res, fmt.Errorf("%w: part %d is %s, part 1 %s", ErrIncompatible, i+1, t.MimeType, tracks[video].MimeType)
			case !isVideo && audio < 0:
				audio = len(tracks)
				tracks = append(tracks, t.Track)
			}
		}
		if _, err := p.Seek(0, io.SeekStart); err != nil {
			_ = out.Close()
			return res, err
		}
	}
	if len(tracks) == 0 {
		_ = out.Close()
		return res, fmt.Errorf("%w: no tracks in any part", ErrNotRecording)
	}
	ws, err := newWriters(out, tracks, video, width, height)
	if err != nil {
		_ = out.Close()
		return res, err
	}
	closeAll := func() error {
		var errs []error
		for _, w := range ws {
			errs = append(errs, w.Close())
		}
		return errors.Join(errs...)
	}
	var offset time.Duration
	for i, p := range parts {
		var index map[uint64]int // the part's track number → output track
		jp := JoinedPart{Offset: offset}
		if skip[i] {
			jp.Skipped = true
			res.Parts = append(res.Parts, jp)
			continue
		}
		sc, err := Scan(p, func(pt []TrackInfo, f Frame) error {
			if index == nil {
				index = map[uint64]int{}
				for _, t := range pt {
					if strings.HasPrefix(strings.ToLower(t.MimeType), "video/") {
						index[t.Number] = video
					} else if audio >= 0 {
						index[t.Number] = audio
					}
				}
			}
			o, ok := index[f.Track]
			if !ok {
				return nil
			}
			if _, err := ws[o].Write(f.Key, (offset + f.At).Milliseconds(), f.Data); err != nil {
				return fmt.Errorf("write frame: %w", err)
			}
			jp.Frames++
			return nil
		})
		if err != nil {
			return res, errors.Join(fmt.Errorf("part %d: %w", i+1, err), closeAll())
		}
		jp.Duration, jp.Torn = sc.End, sc.Torn
		res.Parts = append(res.Parts, jp)
		res.Frames += jp.Frames
		if jp.Frames > 0 {
			res.Duration = offset + sc.End
			offset = res.Duration + JoinGap
		}
	}
	if res.Frames == 0 {
		return res, errors.Join(fmt.Errorf("%w: no frames in any part", ErrNotRecording), closeAll())
	}
	return res, closeAll()
}
