package uplink

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// notSentLowat is how much unsent data a connection to the hub holds in
// its socket (TCP_NOTSENT_LOWAT): enough to keep a WAN link busy between
// the uplink's writes, little enough that a batch body is "written" when
// it is nearly all on the wire, so that the next one (see batchGate) does
// not share the link with it.
const notSentLowat = 32 << 10

// hubCongestion is the congestion control asked for on connections to the
// hub (TCP_CONGESTION). A school's WAN loses packets at random (radio
// links, congested city uplinks); cubic and reno read every loss as
// congestion and halve their window, so at 1 % loss over 200 ms they
// carry a fraction of a 2 Mbit/s link, while BBR paces at the delivery
// rate it measures and keeps the link busy. Only these sockets are
// changed, not the system's default; a kernel without BBR (or one that
// does not let this process choose it) keeps its default, silently.
const hubCongestion = "bbr"

func controlHubSocket(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		// Older kernels without an option still carry the batches, so
		// errors are not the caller's concern.
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
		_ = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, hubCongestion)
	})
}

// capPacing caps how fast the kernel paces c's segments (SO_MAX_PACING_RATE,
// bytes/s of payload, as BBR reckons its pacing rate); where c or its
// socket cannot be reached it does nothing.
func capPacing(c net.Conn, bytesPerSec uint64) {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn() // a *tls.Conn
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, bytesPerSec)
	})
}
