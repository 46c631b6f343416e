//go:build !linux

package cache

import (
	"io"
	"net"
	"os"
)

// sendFileAt sends size bytes of f from its start to c without using or
// moving f's offset.
func sendFileAt(c net.Conn, f *os.File, size int64) (int64, error) {
	return io.Copy(c, io.NewSectionReader(f, 0, size))
}
