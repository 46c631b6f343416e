//go:build !linux

package cache

import (
	"io"
	"net"
	"os"
)

// plainSock sends fast-path responses on a plain connection.
type plainSock struct{ c net.Conn }

func newPlainSock(c net.Conn) *plainSock { return &plainSock{c: c} }

// read reads from the connection.
func (p *plainSock) read(b []byte) (int, error) { return p.c.Read(b) }

// write writes to the connection.
func (p *plainSock) write(b []byte) (int, error) { return p.c.Write(b) }

// send writes the header h and, unless head, size bytes of f read at
// offsets (f's own offset is not used).
func (p *plainSock) send(h []byte, f *os.File, size int64, head, _ bool) error {
	if _, err := p.c.Write(h); err != nil || head {
		return err
	}
	_, err := io.Copy(p.c, io.NewSectionReader(f, 0, size))
	return err
}

// readAtWarm reads len(b) bytes of f at off.
func readAtWarm(f *os.File, b []byte, off int64, _ bool) error {
	_, err := f.ReadAt(b, off)
	return err
}
