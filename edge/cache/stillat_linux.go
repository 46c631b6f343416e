package cache

import (
	"os"
	"syscall"
)

// stillAt reports whether path still names the file fi describes, of
// size bytes. hot says the path was looked up within warmFor: its
// directory entries are in the kernel's cache, so the stat is a raw call,
// which does not wake the runtime's sysmon (see plainSock) — serving a hot
// blob revalidates it every revalidateAfter, which across a school's files
// is hundreds of times a second.
func stillAt(path string, fi os.FileInfo, size int64, hot bool) bool {
	want, ok := fi.Sys().(*syscall.Stat_t)
	if !hot || !ok {
		now, err := os.Stat(path)
		return err == nil && os.SameFile(fi, now) && now.Size() == size
	}
	var st syscall.Stat_t
	for {
		switch e := rawStat(path, &st); e {
		case syscall.EINTR:
			continue
		case 0:
			return st.Dev == want.Dev && st.Ino == want.Ino && st.Size == size
		default:
			return false
		}
	}
}
