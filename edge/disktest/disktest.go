// Package disktest gives a test a small real disk to fill: an ext4 file
// system on a loop device, or, where loop devices are missing, a tmpfs of
// the same size. Full-disk behaviour (ENOSPC in bbolt, in the cache, in
// the outbox) is then the kernel's, not a mock's. FdatasyncRate measures a
// disk's own limit for the durable-append benchmarks.
package disktest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Small mounts a file system of sizeMB megabytes for the test (unmounted
// at its end) and returns its mount point and what it is ("ext4 on a loop
// device" or "tmpfs"). It skips the test when not root.
func Small(t testing.TB, sizeMB int) (mnt, kind string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small disk")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	mnt = filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) error {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %v: %w: %s", name, args, err, out)
		}
		return nil
	}
	kind = "ext4 on a loop device"
	err := run("truncate", "-s", fmt.Sprintf("%dM", sizeMB), img)
	if err == nil {
		err = run("mkfs.ext4", "-q", "-F", img)
	}
	if err == nil {
		err = run("mount", "-o", "loop", img, mnt)
	}
	if err != nil {
		t.Logf("loop-mounted ext4 not available (%v); using tmpfs", err)
		kind = "tmpfs"
		if err := run("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", sizeMB), "tmpfs", mnt); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	return mnt, kind
}

// Fill writes path until the file system refuses (ENOSPC), then smaller
// writes until even those fail, so the disk is truly full. At most 4 GiB.
func Fill(t testing.TB, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	for range 16384 {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	for range 4096 {
		if _, err := f.Write(buf[:4096]); err != nil {
			break
		}
	}
	_ = f.Sync()
}

// FdatasyncRate is the disk's own limit for durable appends, the peer of
// the append benchmarks: one 4 KiB write and fdatasync after another, for
// d, on a file in dir whose blocks are written beforehand (so no write
// allocates and fdatasync waits for the data alone). Writes per second.
func FdatasyncRate(t testing.TB, dir string, d time.Duration) float64 {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "fdatasync-peer"))
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	for i := range 16 {
		if _, err := f.WriteAt(buf, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if _, err := f.WriteAt(buf, int64(n%16)*4096); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			t.Fatal(err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}
