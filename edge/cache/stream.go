package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// errGenChanged means the partial file was restarted under a reader: what
// it already sent belongs to a discarded download.
var errGenChanged = errors.New("the download restarted from zero; reload to get the verified file")

// growingFile is an io.ReadSeeker over a download in flight: reads block
// until the bytes are on disk, and the last byte is held back until the
// whole file is verified, so that a client never receives a complete
// response with content that failed its SHA-256 check (it gets a cut
// connection instead). http.ServeContent drives it, so Range, If-Range and
// the rest behave exactly as for a cached file.
type growingFile struct {
	ctx   context.Context
	d     *download
	f     *os.File
	gen   int
	pos   int64
	flush func() // pushes what was written so far to the client before a wait
}

// openGrowing waits until d has a live response (or ends) and opens its
// partial file. It returns (nil, nil) when d finished before that: the
// caller serves the blob or the error.
func (c *downloader) openGrowing(ctx context.Context, d *download, flush func()) (*growingFile, error) {
	for {
		s := d.snapshot()
		select {
		case <-d.done:
			return nil, nil
		default:
		}
		if s.live {
			f, err := os.Open(c.partialPath(d.it.ID))
			if err != nil {
				// Renamed into place or discarded between the snapshot and
				// the open: the outcome is a moment away.
				select {
				case <-d.done:
					return nil, nil
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return &growingFile{ctx: ctx, d: d, f: f, gen: s.gen, flush: flush}, nil
		}
		// done as well as wake: the download's last update (its wake) comes
		// just before done is closed, so a reader that took its snapshot
		// between the two would otherwise wait on a wake that never comes.
		select {
		case <-s.wake:
		case <-d.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (g *growingFile) Close() error { return g.f.Close() }

func (g *growingFile) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += g.pos
	case io.SeekEnd:
		off += g.d.it.Size
	default:
		return 0, fmt.Errorf("seek: bad whence %d", whence)
	}
	if off < 0 {
		return 0, errors.New("seek: negative offset")
	}
	g.pos = off
	return off, nil
}

func (g *growingFile) Read(p []byte) (int, error) {
	size := g.d.it.Size
	if g.pos >= size {
		return 0, io.EOF
	}
	for {
		s := g.d.snapshot()
		if s.gen != g.gen {
			return 0, errGenChanged
		}
		avail := s.written
		if !s.verified {
			avail = min(avail, size-1)
		}
		if g.pos < avail {
			n, err := g.f.ReadAt(p[:min(int64(len(p)), avail-g.pos)], g.pos)
			g.pos += int64(n)
			if err == io.EOF && n > 0 {
				err = nil
			}
			return n, err
		}
		select {
		case <-g.d.done:
			if g.d.err != nil {
				return 0, g.d.err
			}
			// Verified: the next snapshot shows it (update precedes done).
			if s2 := g.d.snapshot(); s2.written == s.written && s2.verified == s.verified && s2.gen == s.gen {
				return 0, io.ErrUnexpectedEOF
			}
			continue
		default:
		}
		if g.flush != nil {
			g.flush()
		}
		select { // done too: see openGrowing
		case <-s.wake:
		case <-g.d.done:
		case <-g.ctx.Done():
			return 0, g.ctx.Err()
		}
	}
}
