package cache

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/campusedge/campusedge/edge/httpapi"
)

// sendFileAt sends size bytes of f from its start to c with sendfile at
// an explicit offset: the file's own offset is neither read nor moved, so
// a kept handle needs no seek back to its start (one system call less per
// response than net's ReadFrom), and waiting for the socket goes through
// the poller under c's deadlines. Without a TCP connection under c it
// copies.
func sendFileAt(c net.Conn, f *os.File, size int64) (int64, error) {
	tc := httpapi.TCPConn(c)
	if tc == nil {
		return io.Copy(c, io.NewSectionReader(f, 0, size))
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, err
	}
	src := int(f.Fd()) // a regular file: never in non-blocking mode
	var off int64
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		for off < size {
			n, err := syscall.Sendfile(int(fd), src, &off, int(min(size-off, 1<<30)))
			switch {
			case errors.Is(err, syscall.EAGAIN):
				return false // the poller waits until the socket takes more
			case errors.Is(err, syscall.EINTR):
				continue
			case err != nil:
				serr = err
				return true
			case n == 0:
				serr = io.ErrUnexpectedEOF // the file is shorter than its size
				return true
			}
		}
		return true
	})
	if serr != nil {
		err = serr
	}
	return off, err
}
