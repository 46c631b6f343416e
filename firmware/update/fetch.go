package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/time/rate"

	"github.com/campusedge/campusedge/firmware/release"
)

// Fetcher downloads release bundles from the hub into Dir: resumable with
// Range (a WAN cut or a kill continues where it stopped), dropped and
// resumed when the connection stalls, under an optional bandwidth cap, and
// checked against the release's size and SHA-256 before the file gets its
// final name DIR/<sha256>.bundle. It is used for edged's own bundles and
// for terminal images.
type Fetcher struct {
	Client  *http.Client
	Hub     string
	Dir     string
	Limiter *rate.Limiter
	Logger  *slog.Logger
	// Progress sees the bytes on disk as they grow; State sees
	// "downloading" and "verifying".
	Progress func(done int64)
	State    func(state string)
	// Step is the test hook of Config.Step ("download").
	Step func(step string)
	// KeepOthers keeps bundles of other releases in Dir (terminal images
	// keep one per model); otherwise they are removed.
	KeepOthers bool
}

func (u *Fetcher) state(s string) {
	if u.State != nil {
		u.State(s)
	}
}

func (u *Fetcher) step(s string) {
	if u.Step != nil {
		u.Step(s)
	}
}

// ErrCorrupt means the downloaded bytes are not what the hub announced.
var ErrCorrupt = errors.New("downloaded bundle does not match the release's size and SHA-256")

const (
	maxAttempts  = 6
	stallTimeout = 30 * time.Second
)

// Fetch downloads rel into Dir, resuming a partial file,
// and returns the path of the complete, hash-checked bundle.
func (u *Fetcher) Fetch(ctx context.Context, rel release.Release) (string, error) {
	if err := os.MkdirAll(u.Dir, 0o700); err != nil {
		return "", err
	}
	final := filepath.Join(u.Dir, rel.SHA256+".bundle")
	if fi, err := os.Stat(final); err == nil && fi.Size() == rel.Size {
		return final, nil // verified before it got this name
	}
	if !u.KeepOthers {
		u.cleanOthers(rel.SHA256)
	}
	part := final + ".part"
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	u.state("downloading")
	var lastErr error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt) * time.Second)
			select {
			case <-ctx.Done():
				t.Stop()
				return "", ctx.Err()
			case <-t.C:
			}
		}
		done, err := u.fetch(ctx, f, rel)
		if done {
			break
		}
		lastErr = err
		u.Logger.Warn("firmware download interrupted; resuming", "err", err, "attempt", attempt+1)
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if fi.Size() != rel.Size {
		return "", fmt.Errorf("firmware download failed after %d attempts: %w", maxAttempts, lastErr)
	}
	u.state("verifying")
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	if hex.EncodeToString(h.Sum(nil)) != rel.SHA256 {
		f.Close()
		os.Remove(part)
		return "", fmt.Errorf("%w (deleted; it will be downloaded again)", ErrCorrupt)
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := os.Rename(part, final); err != nil {
		return "", err
	}
	u.Logger.Info("firmware bundle downloaded and its SHA-256 checked", "version", rel.Version, "bytes", rel.Size)
	return final, nil
}

// cleanOthers removes downloads of other releases.
func (u *Fetcher) cleanOthers(keep string) {
	ents, _ := os.ReadDir(u.Dir)
	for _, e := range ents {
		if len(e.Name()) >= 64 && e.Name()[:64] != keep {
			os.Remove(filepath.Join(u.Dir, e.Name()))
		}
	}
}

// fetch appends to f from its current size. It reports done when f holds
// rel.Size bytes.
func (u *Fetcher) fetch(ctx context.Context, f *os.File, rel release.Release) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	off := fi.Size()
	if off > rel.Size {
		if err := f.Truncate(0); err != nil {
			return false, err
		}
		off = 0
	}
	if off == rel.Size {
		return true, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.Hub+rel.URL, nil)
	if err != nil {
		return false, err
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		req.Header.Set("If-Range", `"`+rel.SHA256+`"`)
	}
	resp, err := u.Client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
	case resp.StatusCode == http.StatusOK:
		if err := f.Truncate(0); err != nil {
			return false, err
		}
		off = 0
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return false, f.Truncate(0)
	default:
		return false, fmt.Errorf("hub answered the bundle download with HTTP %d", resp.StatusCode)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return false, err
	}
	// A stalled connection is cancelled; the next attempt resumes.
	stall := time.AfterFunc(stallTimeout, cancel)
	defer stall.Stop()
	buf := make([]byte, 64<<10)
	body := io.LimitReader(resp.Body, rel.Size-off)
	first := true
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			stall.Reset(stallTimeout)
			if u.Limiter != nil {
				if err := u.Limiter.WaitN(ctx, n); err != nil {
					return false, err
				}
			}
			if _, err := f.Write(buf[:n]); err != nil {
				return false, fmt.Errorf("write firmware download: %w", err)
			}
			off += int64(n)
			if u.Progress != nil {
				u.Progress(off)
			}
			if first {
				first = false
				if err := f.Sync(); err == nil {
					u.step("download")
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return false, rerr
		}
	}
	return off == rel.Size, nil
}
