//go:build !linux

package sfu

import (
	"errors"
	"net/netip"
)

// errGSOUnsupported: segmented sends exist only on Linux here; elsewhere
// a batch is sent one packet per call.
var errGSOUnsupported = errors.New("udp segmentation unsupported")

func (c *batchConn) sendSegmented([]byte, int, netip.AddrPort) error { return errGSOUnsupported }

// canSegment: no batching here (a batch would wait for nothing).
const canSegment = false
