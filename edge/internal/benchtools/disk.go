package benchtools

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// FdatasyncLatency times n rounds of "write 4 KiB in place, fdatasync" on a
// scratch file in dir: the physical floor under every bbolt commit, which
// makes two such syncs (data pages, then the meta page). It is what bounds
// how fast edged can pair terminals or record them coming and going.
func FdatasyncLatency(dir string, n int) (Durations, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return Durations{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	page := make([]byte, 4096)
	if _, err := f.Write(make([]byte, 64*len(page))); err != nil {
		return Durations{}, err
	}
	if err := f.Sync(); err != nil {
		return Durations{}, err
	}
	d := make([]time.Duration, 0, n)
	for i := range n {
		page[0] = byte(i)
		t0 := time.Now()
		if _, err := f.WriteAt(page, int64(i%64)*int64(len(page))); err != nil {
			return Durations{}, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return Durations{}, fmt.Errorf("fdatasync %s: %w", filepath.Base(f.Name()), err)
		}
		d = append(d, time.Since(t0))
	}
	return Summarize(d), nil
}
