package update

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/time/rate"

	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/rangefetch"
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
	if err := fsutil.MkdirAllDurable(u.Dir, 0o700); err != nil {
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
		if errors.Is(err, ErrCorrupt) {
			return "", err // the hub sends another size: asking again will not help
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
	if _, sum, err := rangefetch.Sum(f); err != nil {
		return "", err
	} else if sum != rel.SHA256 {
		f.Close()
		os.Remove(part)
		return "", fmt.Errorf("%w (deleted; it will be downloaded again)", ErrCorrupt)
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := fsutil.RenameDurable(part, final); err != nil {
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
	off, err := rangefetch.ResumeOffset(f, rel.Size)
	if err != nil {
		return false, err
	}
	if off == rel.Size {
		return true, nil
	}
	first := true
	req := rangefetch.Request{
		Client: u.Client, URL: u.Hub + rel.URL, ETag: `"` + rel.SHA256 + `"`, Size: rel.Size,
		Stall: stallTimeout, BufSize: 64 << 10,
		Wrote: func(ctx context.Context, end int64, n int) error {
			if u.Progress != nil {
				u.Progress(end)
			}
			if first {
				first = false
				if err := f.Sync(); err == nil {
					u.step("download")
				}
			}
			if u.Limiter != nil {
				return u.Limiter.WaitN(ctx, n)
			}
			return nil
		},
	}
	if _, err := req.Append(ctx, f, off); err != nil {
		if errors.Is(err, rangefetch.ErrMismatch) {
			return false, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return false, fmt.Errorf("bundle download: %w", err)
	}
	return true, nil
}
