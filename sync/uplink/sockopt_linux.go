package uplink

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// notSentLowat is how much unsent data a connection to the hub holds in
// its socket (TCP_NOTSENT_LOWAT): enough to keep a WAN link busy between
// the uplink's writes, little enough that a batch body is "written" when
// it is nearly all on the wire, so that the next one (see batchGate) does
// not share the link with it.
const notSentLowat = 32 << 10

func controlHubSocket(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
	})
	if err != nil {
		return err
	}
	// An older kernel without the option still carries the batches.
	_ = serr
	return nil
}
