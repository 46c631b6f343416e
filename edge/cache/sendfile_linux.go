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
//
// Its reads and writes on the socket are raw system calls (no
// entersyscall), and so is sendfile of a warm body (see send): the Go
// runtime wakes its monitor thread, sysmon, at the first entersyscall
// after all its Ps were idle, and sysmon then polls every 20 µs until they
// are idle again. Under a LAN's request/response load the process goes
// idle between requests thousands of times a second, and those wakes were
// more than half of the edge's context switches and ~7 % of its CPU per
// 200 KB response (docs/BENCHMARKS.md). A raw call on a non-blocking
// socket cannot block, so keeping the P through it costs nothing; the
// poller still waits (under the connection's deadlines) when the socket
// has nothing to read or no room.
type plainSock struct {
	c         net.Conn
	rc        syscall.RawConn
	hdrStep   func(fd uintptr) bool
	fileStep  func(fd uintptr) bool
	readStep  func(fd uintptr) bool
	h         []byte // header left to send
	more      bool   // a body follows the header
	rawFile   bool   // sendfile as a raw call (the body is warm)
	src       int    // the file being sent
	off, size int64
	rb        []byte // read into
	rn        int    // read
	rerr      error  // of the read; err is the write's (a TLS connection reads and writes at once)
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
	p.hdrStep, p.fileStep, p.readStep = p.sendHeader, p.sendfile, p.readRaw
	return p
}

// read reads from the socket like the connection's Read (its deadline
// applies), with a raw read call.
func (p *plainSock) read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	p.rb, p.rn, p.rerr = b, 0, nil
	err := p.rc.Read(p.readStep)
	p.rb = nil
	switch {
	case err != nil:
		return 0, err
	case p.rerr != nil:
		return 0, p.rerr
	case p.rn == 0:
		return 0, io.EOF
	}
	return p.rn, nil
}

// readRaw is one turn of the poller's read loop.
func (p *plainSock) readRaw(fd uintptr) bool {
	for {
		n, e := rawRead(int(fd), p.rb)
		switch e {
		case 0:
			p.rn = n
			return true
		case syscall.EAGAIN:
			return false
		case syscall.EINTR:
			continue
		}
		p.rerr = e
		return true
	}
}

// write writes b like the connection's Write (its deadline applies), with
// raw send calls.
func (p *plainSock) write(b []byte) (int, error) {
	p.h, p.more, p.err = b, false, nil
	err := p.rc.Write(p.hdrStep)
	n := len(b) - len(p.h)
	p.h = nil
	if err == nil {
		err = p.err
	}
	return n, err
}

// send writes the header h and, unless head, size bytes of f. warm says
// f's pages are in the page cache (see MediaListener.serve): sendfile is
// then a raw call too. A cold body's sendfile may wait for the disk, so it
// goes through the runtime, which can hand the P to other goroutines
// meanwhile.
func (p *plainSock) send(h []byte, f *os.File, size int64, head, warm bool) error {
	p.h, p.more, p.err = h, !head && size > 0, nil
	if err := p.rc.Write(p.hdrStep); err != nil {
		return err
	}
	if p.err != nil || head {
		return p.err
	}
	p.src, p.off, p.size, p.rawFile = int(f.Fd()), 0, size, warm // a regular file: Fd leaves it as it is
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
		n, e := rawSend(int(fd), p.h, flags)
		switch e {
		case 0:
			p.h = p.h[n:]
			continue
		case syscall.EAGAIN:
			return false
		case syscall.EINTR:
			continue
		}
		p.err = e
		return true
	}
	return true
}

// sendfile is one turn of the poller's write loop: false when the socket
// is full (the poller waits, under the connection's deadline).
func (p *plainSock) sendfile(fd uintptr) bool {
	for p.off < p.size {
		count := int(min(p.size-p.off, 1<<30))
		var n int
		var err error
		if p.rawFile {
			var e syscall.Errno
			if n, e = rawSendfile(int(fd), p.src, &p.off, count); e != 0 {
				n, err = 0, e
			}
		} else {
			n, err = syscall.Sendfile(int(fd), p.src, &p.off, count)
		}
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

// readAtWarm reads len(b) bytes of f at off: with raw pread calls when
// warm (the pages are in the page cache, see warmBody), else through the
// runtime, which can hand the P over while the disk answers.
func readAtWarm(f *os.File, b []byte, off int64, warm bool) error {
	if !warm {
		_, err := f.ReadAt(b, off)
		return err
	}
	fd := int(f.Fd()) // a regular file: Fd leaves it as it is
	for len(b) > 0 {
		n, e := rawPread(fd, b, off)
		switch {
		case e == syscall.EINTR:
			continue
		case e != 0:
			return &os.PathError{Op: "read", Path: f.Name(), Err: e}
		case n == 0:
			return io.ErrUnexpectedEOF // the file is shorter than its size
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}
