//go:build linux && (amd64 || arm64 || riscv64)

package cache

import (
	"syscall"
	"unsafe"
)

// Raw system calls (no entersyscall, so they never wake the runtime's
// sysmon; see plainSock) for what the fast path does per request. Only for
// calls that cannot block for long: on a non-blocking socket, or on files
// and paths known to be in the kernel's caches. 64-bit ports only, where
// the calls take these arguments as they are.

func rawRead(fd int, b []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), e
}

func rawSend(fd int, b []byte, flags int) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(flags), 0, 0)
	return int(n), e
}

func rawSendfile(out, in int, off *int64, count int) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDFILE, uintptr(out), uintptr(in), uintptr(unsafe.Pointer(off)), uintptr(count), 0, 0)
	return int(n), e
}

func rawPread(fd int, b []byte, off int64) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_PREAD64, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(off), 0, 0)
	return int(n), e
}

func rawStat(path string, st *syscall.Stat_t) syscall.Errno {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return syscall.EINVAL
	}
	const atFDCWD = -100
	fd := atFDCWD
	_, _, e := syscall.RawSyscall6(sysFstatat, uintptr(fd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(st)), 0, 0, 0)
	return e
}
