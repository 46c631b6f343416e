package uplink

import (
	"crypto/tls"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCapPacingReachesTheSocket: the cap is set on the TCP socket under a
// TLS connection (what GotConn hands over for an https:// hub).
func TestCapPacingReachesTheSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	capPacing(tls.Client(c, &tls.Config{}), 250_000)
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got uint64
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		var v int
		v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE)
		got = uint64(uint32(v))
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	if got != 250_000 {
		t.Fatalf("SO_MAX_PACING_RATE %d, want 250000", got)
	}
}
