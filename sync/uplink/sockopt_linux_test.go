package uplink_test

import (
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/campusedge/campusedge/sync/uplink"
)

// A connection to the hub asks for BBR (losses on a school's WAN are
// mostly not congestion) and holds little unsent data; where the kernel
// offers no BBR to this process it keeps the system's default.
func TestHubConnOptions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			var b [1]byte
			_, _ = c.Read(b[:])
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	get := func() (cc string, lowat int) {
		rc, err := c.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var gerr error
		if err := rc.Control(func(fd uintptr) {
			cc, gerr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION)
			if gerr == nil {
				lowat, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT)
			}
		}); err != nil {
			t.Fatal(err)
		}
		if gerr != nil {
			t.Fatal(gerr)
		}
		return strings.TrimRight(cc, "\x00"), lowat
	}
	// Start from reno (always built in), so that a system whose default
	// is already BBR still shows the option being set.
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, "reno")
	}); err != nil || serr != nil {
		t.Fatalf("set reno: %v %v", err, serr)
	}
	before, _ := get()
	if err := uplink.SetHubConnOptions(c); err != nil {
		t.Fatal(err)
	}
	cc, lowat := get()
	if lowat != 32<<10 {
		t.Errorf("TCP_NOTSENT_LOWAT = %d, want 32 KiB", lowat)
	}
	want := before
	if offered(t, "tcp_available_congestion_control") && (os.Geteuid() == 0 || offered(t, "tcp_allowed_congestion_control")) {
		want = "bbr"
	}
	if cc != want {
		t.Errorf("congestion control %q, want %q (system default %q)", cc, want, before)
	}
}

// offered says whether bbr is in /proc/sys/net/ipv4/NAME.
func offered(t *testing.T, name string) bool {
	b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
	if err != nil {
		t.Logf("%s: %v", name, err)
		return false
	}
	return slices.Contains(strings.Fields(string(b)), "bbr")
}

// setCongestion sets c's congestion control (TestSyncWANBench -sync-wan-cc).
func setCongestion(c net.Conn, name string) error {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, name)
	}); err != nil {
		return err
	}
	return serr
}
