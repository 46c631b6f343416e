//go:build !linux

package cache

import "os"

// stillAt reports whether path still names the file fi describes, of
// size bytes.
func stillAt(path string, fi os.FileInfo, size int64, _ bool) bool {
	now, err := os.Stat(path)
	return err == nil && os.SameFile(fi, now) && now.Size() == size
}
