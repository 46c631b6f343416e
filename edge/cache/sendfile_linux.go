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
// header corked (nginx's tcp_nopush), the body by sendfile at an explicit
// offset, so a kept blob handle needs no seek back to its start and the
// file's own offset is never used. Its functions for the socket are made
// once per connection: nothing is allocated per response.
type plainSock struct {
	c               net.Conn
	rc              syscall.RawConn
	corkOn, corkOff func(fd uintptr)
	step            func(fd uintptr) bool
	src             int // the file being sent
	off, size       int64
	err             error
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
	p.corkOn = func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, 1) }
	p.corkOff = func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, 0) }
	p.step = p.sendfile
	return p
}

// send writes the header h and, unless head, size bytes of f.
func (p *plainSock) send(h []byte, f *os.File, size int64, head bool) error {
	if head {
		_, err := p.c.Write(h)
		return err
	}
	_ = p.rc.Control(p.corkOn)
	defer func() { _ = p.rc.Control(p.corkOff) }()
	if _, err := p.c.Write(h); err != nil {
		return err
	}
	p.src, p.off, p.size, p.err = int(f.Fd()), 0, size, nil // a regular file: Fd leaves it as it is
	if err := p.rc.Write(p.step); err != nil {
		return err
	}
	return p.err
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
