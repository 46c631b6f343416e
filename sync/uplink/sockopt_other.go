//go:build !linux

package uplink

import (
	"net"
	"syscall"
)

func controlHubSocket(_, _ string, _ syscall.RawConn) error { return nil }

// socketCC restarts nothing where BBR is not Linux's (see restartEvery).
type socketCC struct{}

func (socketCC) restart(net.Conn) restartResult { return restartNever }

func (socketCC) uncap(net.Conn, bool) bool { return true }
