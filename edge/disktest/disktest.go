// Package disktest gives a test a small real disk to fill: an ext4 file
// system on a loop device, or, where loop devices are missing, a tmpfs of
// the same size. Full-disk behaviour (ENOSPC in bbolt, in the cache, in
// the outbox) is then the kernel's, not a mock's.
package disktest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
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
