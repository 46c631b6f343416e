package uplink

import (
	"math"
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

// socketCC restarts BBR on a connection's TCP socket (see restartEvery).
type socketCC struct{}

// bbrStartupGain is BBR's pacing gain in start-up (2/ln 2, as TCP_CC_INFO
// reports it, in 1/256).
const bbrStartupGain = 739

// restart chooses BBR again on c's socket (first another congestion
// control: choosing the one a socket has changes nothing), which starts
// it afresh with its minimum RTT renewed, its congestion window kept and
// its pacing capped at restartPacing times the bandwidth it had measured.
// Not while the connection recovers a loss (BBR's restart would forget
// that it was), and only when it is BBR.
func (socketCC) restart(c net.Conn) restartResult {
	res := restartNever
	control(c, func(fd int) {
		if cc, err := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION); err != nil || cc != hubCongestion {
			return
		}
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return
		}
		if ti.Ca_state >= 2 { // TCP_CA_CWR, _Recovery, _Loss: not _Open or _Disorder
			res = restartLater
			return
		}
		bi, err := unix.GetsockoptTCPCCBBRInfo(fd, unix.IPPROTO_TCP, unix.TCP_CC_INFO)
		if err != nil {
			return
		}
		if bw := uint64(bi.Bw_hi)<<32 | uint64(bi.Bw_lo); bw > 0 {
			_ = unix.SetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, uint64(float64(bw)*restartPacing))
		}
		// reno is always there and allowed.
		if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, "reno"); err != nil {
			return
		}
		if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, hubCongestion); err != nil {
			// The same process chose BBR for this socket before, so this
			// does not happen; if it does, the connection carries on
			// under reno.
			return
		}
		res = restartDone
	})
	return res
}

// uncap lifts c's pacing cap once its BBR has left start-up (or always).
// BBR reports its gain from the first ack after the restart on.
func (socketCC) uncap(c net.Conn, always bool) bool {
	done := false
	control(c, func(fd int) {
		if !always {
			bi, err := unix.GetsockoptTCPCCBBRInfo(fd, unix.IPPROTO_TCP, unix.TCP_CC_INFO)
			// 0: no ack since the restart, so not started up either.
			if err == nil && (bi.Pacing_gain == 0 || bi.Pacing_gain >= bbrStartupGain) {
				return
			}
		}
		_ = unix.SetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, math.MaxUint64)
		done = true
	})
	return done
}

// control runs f on c's socket (under a *tls.Conn); where c or its socket
// cannot be reached it does nothing.
func control(c net.Conn, f func(fd int)) {
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
	_ = rc.Control(func(fd uintptr) { f(int(fd)) })
}
