//go:build linux

package discovery

import (
	"os"
	"strconv"

	"github.com/hashicorp/mdns"
	"golang.org/x/sys/unix"
)

// newServer is mdns.NewServer plus one Linux fix. Linux delivers a
// multicast datagram to every socket bound to its port that joined the
// group on *any* interface (IP_MULTICAST_ALL, on by default). So the
// library's server for interface A also hears queries arriving on
// interface B (whenever anything, us or avahi-daemon, joined 224.0.0.251
// on B) and answers them by unicast with A's addresses: a terminal on B
// could be sent to an address it cannot reach (observed: a querier on a
// veth got A 127.0.0.1 from the lo server). The library does not expose its
// sockets, so newServer finds the ones NewServer just opened (UDP sockets
// on port 5353 that were not there before) and turns the option off on
// them; they then hear only their own interface.
func newServer(cfg *mdns.Config) (*mdns.Server, error) {
	before := mdnsSockets()
	srv, err := mdns.NewServer(cfg)
	if err != nil {
		return nil, err
	}
	for fd, ino := range mdnsSockets() {
		if before[fd] == ino {
			continue
		}
		// Best effort: on failure the server still works, as the library
		// intends, only with the leak described above.
		if sa, err := unix.Getsockname(fd); err == nil {
			switch sa.(type) {
			case *unix.SockaddrInet4:
				_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
			case *unix.SockaddrInet6:
				_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0)
			}
		}
	}
	return srv, nil
}

// mdnsSockets returns the process's UDP sockets bound to port 5353, as
// fd → inode (the inode tells a reused fd number apart).
func mdnsSockets() map[int]uint64 {
	out := make(map[int]uint64)
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return out
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			continue
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_DGRAM {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		port := 0
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			port = a.Port
		case *unix.SockaddrInet6:
			port = a.Port
		}
		if port == mdnsPort {
			out[fd] = st.Ino
		}
	}
	return out
}

// restrictToJoined turns IP_MULTICAST_ALL off on one of our own sockets.
func restrictToJoined(fd uintptr, v6 bool) {
	if v6 {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0)
		return
	}
	_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
}
