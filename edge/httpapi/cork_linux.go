package httpapi

import "syscall"

func setCork(fd uintptr, on int) error {
	return syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, on)
}
