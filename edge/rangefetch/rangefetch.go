// Package rangefetch continues a download where a partial file stopped:
// one HTTP attempt asks for the missing bytes with Range and If-Range,
// checks the answer (status, Content-Range, Content-Length) before it
// writes a byte, never writes past the expected size, and drops a
// connection that stalls. Bytes that cannot be trusted to continue the
// partial file make it start over from zero, never get spliced in.
//
// It is the one resumable fetch of the project: the edge's resource cache
// and the firmware updater loop over attempts with it, then verify the
// whole file (Sum) and give it its final name themselves.
package rangefetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// ErrMismatch means the server sends a different size than expected: a
// full answer of the wrong length, or more bytes than the file has.
// Trying again will not help.
var ErrMismatch = errors.New("server's content does not match the expected size")

// DefaultStall is how long an attempt waits for a byte before it is
// dropped (the next attempt resumes from what arrived).
const DefaultStall = 30 * time.Second

// Request is one resumable file: where it is and what it must be.
type Request struct {
	Client *http.Client
	URL    string
	// ETag is the validator sent in If-Range (quoted, as the server's
	// ETag): a server whose content changed answers in full.
	ETag string
	// Size is the whole file's size in bytes.
	Size int64
	// Stall overrides DefaultStall; BufSize the 32 KiB read buffer.
	Stall   time.Duration
	BufSize int
	// Restarted, when set, hears that the file was truncated to zero:
	// bytes anyone read from it before are void.
	Restarted func()
	// Live, when set, hears that the answer passed its checks and bytes
	// are about to be written from the returned offset on.
	Live func()
	// Wrote, when set, is called after every write with the new end of the
	// file and the byte count; it paces the transfer (the attempt ends,
	// retryable, on its error) and reports progress.
	Wrote func(ctx context.Context, end int64, n int) error
}

// Append makes one attempt at bytes [off, Size) and writes them to f at
// off. retry says whether another attempt can help; the file always holds
// a valid prefix afterwards, fsynced when the attempt was cut, so the next
// attempt (or the next process) resumes from its size.
func (r *Request) Append(ctx context.Context, f *os.File, off int64) (retry bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, off, retry, err := r.open(ctx, f, off)
	if err != nil {
		return retry, err
	}
	defer resp.Body.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return false, err
	}
	if r.Live != nil {
		r.Live()
	}
	stall := r.Stall
	if stall <= 0 {
		stall = DefaultStall
	}
	// A stalled connection is cancelled; the next attempt resumes.
	t := time.AfterFunc(stall, cancel)
	defer t.Stop()
	return r.copy(ctx, f, resp.Body, off, func() { t.Reset(stall) })
}

// open sends the request and checks the answer; off comes back 0 when
// the file had to start over.
func (r *Request) open(ctx context.Context, f *os.File, off int64) (*http.Response, int64, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL, nil)
	if err != nil {
		return nil, off, false, err
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		req.Header.Set("If-Range", r.ETag)
	}
	resp, err := r.Client.Do(req)
	if err != nil {
		return nil, off, true, fmt.Errorf("server unreachable: %w", err)
	}
	off, retry, err := r.check(f, resp, off)
	if err != nil {
		resp.Body.Close()
		return nil, off, retry, err
	}
	return resp, off, false, nil
}

func (r *Request) check(f *os.File, resp *http.Response, off int64) (int64, bool, error) {
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		want := fmt.Sprintf("bytes %d-%d/%d", off, r.Size-1, r.Size)
		if got := resp.Header.Get("Content-Range"); got != want {
			// Never trust a range we did not ask for: start over.
			_ = r.restart(f)
			return 0, true, fmt.Errorf("server answered Content-Range %q, want %q; restarting from zero", got, want)
		}
		if resp.ContentLength != r.Size-off {
			_ = r.restart(f)
			return 0, true, fmt.Errorf("server answered Content-Length %d for a range of %d bytes; restarting from zero", resp.ContentLength, r.Size-off)
		}
		return off, false, nil
	case resp.StatusCode == http.StatusOK:
		if off > 0 { // the server ignored the range (or the content changed)
			if err := r.restart(f); err != nil {
				return off, false, err
			}
		}
		if resp.ContentLength >= 0 && resp.ContentLength != r.Size {
			_ = r.restart(f)
			return 0, false, fmt.Errorf("%w: server sends %d bytes, want %d", ErrMismatch, resp.ContentLength, r.Size)
		}
		return 0, false, nil
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		_ = r.restart(f)
		return 0, true, fmt.Errorf("server refused range from %d (416); restarting from zero", off)
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		transient := resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
		return off, transient, fmt.Errorf("server answered %s: %s", resp.Status, b)
	}
}

func (r *Request) restart(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if r.Restarted != nil {
		r.Restarted()
	}
	return nil
}

// copy writes body to f from pos until Size; alive is called on every
// read that brought bytes.
func (r *Request) copy(ctx context.Context, f *os.File, body io.Reader, pos int64, alive func()) (retry bool, err error) {
	// Read one byte more than expected so an overlong body is caught.
	body = io.LimitReader(body, r.Size-pos+1)
	buf := make([]byte, max(r.BufSize, 32<<10))
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			alive()
			if pos+int64(n) > r.Size {
				_ = r.restart(f)
				return false, fmt.Errorf("%w: server sent more than %d bytes", ErrMismatch, r.Size)
			}
			if _, err := f.Write(buf[:n]); err != nil {
				return false, fmt.Errorf("write partial file: %w", err)
			}
			pos += int64(n)
			if r.Wrote != nil {
				if err := r.Wrote(ctx, pos, n); err != nil {
					_ = f.Sync()
					return true, fmt.Errorf("download stopped at byte %d of %d: %w", pos, r.Size, err)
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			_ = f.Sync() // keep what arrived for the next attempt
			return true, fmt.Errorf("download cut at byte %d of %d: %w", pos, r.Size, rerr)
		}
	}
	if pos < r.Size {
		_ = f.Sync()
		return true, fmt.Errorf("download ended at byte %d of %d", pos, r.Size)
	}
	return false, nil
}

// ResumeOffset is where a download into the partial file f continues:
// its size, or zero (the file truncated) when it holds more than size
// bytes and so cannot be a prefix of the file.
func ResumeOffset(f *os.File, size int64) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Size() <= size {
		return fi.Size(), nil
	}
	if err := f.Truncate(0); err != nil {
		return 0, err
	}
	return 0, nil
}

// Sum reads f from the start and returns its length and hex SHA-256: the
// check every download makes before the file gets its final name.
func Sum(f *os.File) (int64, string, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, "", err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return n, "", fmt.Errorf("read partial file: %w", err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
