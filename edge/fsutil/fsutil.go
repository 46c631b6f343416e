// Package fsutil holds the file-system steps every durable write in the
// project takes, written once: a file replaced by temp file, fsync and
// rename, with the directory fsynced so the rename itself survives a power
// cut; a verified temp file moved into place the same way; and the free
// space of a file system.
package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFileAtomic replaces path with data: a power cut leaves the old file
// or the new one, never half of one.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return RenameDurable(tmp, path)
}

// RenameDurable moves the complete, fsynced file tmp to dst (creating dst's
// directory, mode 0700, if needed) and fsyncs the directory, so the new name
// is on disk when it returns.
func RenameDurable(tmp, dst string) error {
	dir := filepath.Dir(dst)
	if err := MkdirAllDurable(dir, 0o700); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("rename into %s: %w", dst, err)
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, making the creations, renames and removals in
// it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s to fsync it: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// MkdirAllDurable is os.MkdirAll whose new directories survive a power cut:
// each directory it creates is fsynced into its parent (a blob's new shard
// directory, say, would otherwise vanish with the blob renamed into it).
func MkdirAllDurable(dir string, mode os.FileMode) error {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	// Deepest first: each new directory's entry in its parent.
	for _, d := range missing {
		if err := SyncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// IsNoSpace reports whether err is the file system being full (or the
// user's disk quota spent): the write may succeed later, once space is
// freed, so callers answer "retry", never "invalid".
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// StoreReserve is the free space kept for the store (records, the sync
// outbox, logs) on a file system of size bytes: the resource cache never
// fills it, so records still fit when the cache has filled the disk. It is
// 256 MiB, or an eighth of a small disk.
func StoreReserve(size int64) int64 {
	const most = 256 << 20
	if size <= 0 {
		return most
	}
	return min(most, size/8)
}
