//go:build linux

package mediatest

import (
	"fmt"
	"net"

	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"

	"github.com/campusedge/campusedge/edge/netnstest"
)

// NetIn is a pion network whose sockets are made inside ns, so a peer in
// this test process lives on that namespace's host (behind its shaped
// link). Use it with sfu.NewAPINet or sfu.Config.Net.
func NetIn(ns *netnstest.Netns) (transport.Net, error) {
	var n *stdnet.Net
	err := ns.Run(func() error {
		var err error
		n, err = stdnet.NewNet() // reads the namespace's interfaces
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pion net in %s: %w", ns.Name, err)
	}
	return &nsNet{Net: n, ns: ns}, nil
}

type nsNet struct {
	*stdnet.Net
	ns *netnstest.Netns
}

func (n *nsNet) ListenPacket(network, address string) (c net.PacketConn, err error) {
	err = n.ns.Run(func() error { c, err = n.Net.ListenPacket(network, address); return err })
	return c, err
}

func (n *nsNet) ListenUDP(network string, addr *net.UDPAddr) (c transport.UDPConn, err error) {
	err = n.ns.Run(func() error { c, err = n.Net.ListenUDP(network, addr); return err })
	return c, err
}

func (n *nsNet) DialUDP(network string, laddr, raddr *net.UDPAddr) (c transport.UDPConn, err error) {
	err = n.ns.Run(func() error { c, err = n.Net.DialUDP(network, laddr, raddr); return err })
	return c, err
}

func (n *nsNet) Dial(network, address string) (c net.Conn, err error) {
	err = n.ns.Run(func() error { c, err = n.Net.Dial(network, address); return err })
	return c, err
}

func (n *nsNet) ListenTCP(network string, addr *net.TCPAddr) (l transport.TCPListener, err error) {
	err = n.ns.Run(func() error { l, err = n.Net.ListenTCP(network, addr); return err })
	return l, err
}

func (n *nsNet) DialTCP(network string, laddr, raddr *net.TCPAddr) (c transport.TCPConn, err error) {
	err = n.ns.Run(func() error { c, err = n.Net.DialTCP(network, laddr, raddr); return err })
	return c, err
}
