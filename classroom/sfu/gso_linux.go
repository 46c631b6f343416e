package sfu

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errGSOUnsupported: this socket's route cannot take segmented sends (no
// checksum offload on the device, a segment too big for its MTU, an old
// kernel); the caller sends one packet per call instead.
var errGSOUnsupported = errors.New("udp segmentation unsupported")

// sendSegmented sends buf as packets of seg bytes (the last may be
// shorter) to dst in one sendmsg with UDP_SEGMENT.
func (c *batchConn) sendSegmented(buf []byte, seg int, dst netip.AddrPort) error {
	if c.oob == nil {
		c.oob = make([]byte, unix.CmsgSpace(2))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&c.oob[0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
	}
	binary.NativeEndian.PutUint16(c.oob[unix.CmsgLen(0):], uint16(seg))
	_, _, err := c.UDPConn.WriteMsgUDPAddrPort(buf, c.oob, dst)
	if errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EOPNOTSUPP) {
		return errGSOUnsupported
	}
	return err
}

// canSegment: this system can send a batch in one call.
const canSegment = true
