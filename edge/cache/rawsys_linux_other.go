//go:build linux && !(amd64 || arm64 || riscv64)

package cache

import "syscall"

// The fast path's calls through the runtime on the 32-bit and other ports
// (see rawsys_linux64.go).

func rawRead(fd int, b []byte) (int, syscall.Errno) {
	n, err := syscall.Read(fd, b)
	return n, errno(err)
}

func rawSend(fd int, b []byte, flags int) (int, syscall.Errno) {
	n, err := syscall.SendmsgN(fd, b, nil, nil, flags)
	return n, errno(err)
}

func rawSendfile(out, in int, off *int64, count int) (int, syscall.Errno) {
	n, err := syscall.Sendfile(out, in, off, count)
	return n, errno(err)
}

func rawPread(fd int, b []byte, off int64) (int, syscall.Errno) {
	n, err := syscall.Pread(fd, b, off)
	return n, errno(err)
}

func rawStat(path string, st *syscall.Stat_t) syscall.Errno {
	return errno(syscall.Stat(path, st))
}

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return syscall.EIO
}
