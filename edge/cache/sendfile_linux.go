package cache

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/campusedge/campusedge/edge/httpapi"
)

// plainSock sends fast-path responses on one plain TCP connection: the
// header with MSG_MORE, so that it leaves in the body's first segment
// (what TCP_CORK or nginx's tcp_nopush do, without two setsockopt calls
// per response; the body's last sendfile chunk, sent without "more",
// pushes it all), and the body by sendfile at an explicit offset, so a
// kept blob handle needs no seek back to its start and the file's own
// offset is never used. Its functions for the socket are made once per
// connection: nothing is allocated per response.
type plainSock struct {
	c         net.Conn
	rc        syscall.RawConn
	hdrStep   func(fd uintptr) bool
	fileStep  func(fd uintptr) bool
	h         []byte // header left to send
	more      bool   // a body follows the header
	src       int    // the file being sent
	off, size int64
	err       error
}

// newPlainSock is nil when c has no TCP connection under it.
func newPlainSock(c net.Conn) *plainSock {
	tc := httpapi.TCPConn(c)
	if tc == nil {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &plainSock{c: c, rc: rc}
	p.hdrStep, p.fileStep = p.sendHeader, p.sendfile
	return p
}

// send writes the header h and, unless head, size bytes of f.
func (p *plainSock) send(h []byte, f *os.File, size int64, head bool) error {
	if head {
		_, err := p.c.Write(h)
		return err
	}
	p.h, p.more, p.err = h, size > 0, nil
	if err := p.rc.Write(p.hdrStep); err != nil {
		return err
	}
	if p.err != nil {
		return p.err
	}
	p.src, p.off, p.size = int(f.Fd()), 0, size // a regular file: Fd leaves it as it is
	if err := p.rc.Write(p.fileStep); err != nil {
		return err
	}
	return p.err
}

// sendHeader is one turn of the poller's write loop for the header.
func (p *plainSock) sendHeader(fd uintptr) bool {
	flags := syscall.MSG_NOSIGNAL
	if p.more {
		flags |= syscall.MSG_MORE
	}
	for len(p.h) > 0 {
		n, err := syscall.SendmsgN(int(fd), p.h, nil, nil, flags)
		switch {
		case errors.Is(err, syscall.EAGAIN):
			return false
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			p.err = err
			return true
		}
		p.h = p.h[n:]
	}
	return true
}

// sendfile is one turn of the poller's write loop: false when the socket
// is full (the poller waits, under the connection's deadline).
func (p *plainSock) sendfile(fd uintptr) bool {
	for p.off < p.size {
		n, err := syscall.Sendfile(int(fd), p.src, &p.off, int(min(p.size-p.off, 1<<30)))
		switch {
		case errors.Is(err, syscall.EAGAIN):
			return false
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			p.err = err
			return true
		case n == 0:
			p.err = io.ErrUnexpectedEOF // the file is shorter than its size
			return true
		}
	}
	return true
}
