//go:build linux

package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/logtest"
	"golang.org/x/sys/unix"
)

// Netns is a named network namespace made for one test, with one end of a
// veth pair in it.
type Netns struct {
	Name string     // as in `ip netns exec NAME`
	Link string     // the veth interface inside the namespace
	Addr netip.Addr // Link's IPv4 address, on a private /24
	Peer netip.Addr // the address at the veth's other end
	// For a host of NewLAN: the bridge's namespace and the bridge port
	// that sends to this host (where Shape limits what it receives).
	BridgeNS, BridgePort string
}

// NewPair makes two network namespaces joined by a veth pair, each end with
// an address on a random private 10.x.y.0/24 and a route for 224.0.0.0/4 out
// of the veth (without it an IPv4 multicast listener silently fails and
// clients fall back to IPv6). Nothing is done outside the two namespaces:
// the veth pair is created inside the first. t.Cleanup deletes both
// namespaces, after the processes started in them have been stopped.
// Needs root (RequireRoot is called).
func NewPair(t testing.TB) (a, b *Netns) {
	t.Helper()
	RequireRoot(t)
	if _, err := ipPath(); err != nil {
		t.Fatal(err)
	}
	var rnd [5]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(rnd[:3])
	netPrefix := fmt.Sprintf("10.%d.%d.", 16+int(rnd[3])%200, rnd[4])
	a = &Netns{Name: "cetest-" + id + "-a", Link: "ce" + id + "a", Addr: netip.MustParseAddr(netPrefix + "1")}
	b = &Netns{Name: "cetest-" + id + "-b", Link: "ce" + id + "b", Addr: netip.MustParseAddr(netPrefix + "2")}
	a.Peer, b.Peer = b.Addr, a.Addr
	for _, n := range []*Netns{a, b} {
		if err := ip("netns", "add", n.Name); err != nil {
			t.Fatal(err)
		}
		name := n.Name
		t.Cleanup(func() {
			if err := ip("netns", "del", name); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
	}
	steps := [][]string{
		{"-n", a.Name, "link", "add", a.Link, "type", "veth", "peer", "name", b.Link, "netns", b.Name},
	}
	for _, n := range []*Netns{a, b} {
		steps = append(steps,
			[]string{"-n", n.Name, "link", "set", "lo", "up"},
			[]string{"-n", n.Name, "addr", "add", n.Addr.String() + "/24", "dev", n.Link},
			[]string{"-n", n.Name, "link", "set", n.Link, "up"},
			[]string{"-n", n.Name, "route", "add", "224.0.0.0/4", "dev", n.Link},
			// As in NewLAN: segmented UDP sends leave as separate packets.
			[]string{"netns", "exec", n.Name, "ethtool", "-K", n.Link, "tx-udp-segmentation", "off"},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// NewLAN makes n network namespaces ("hosts") on one LAN: each has a
// veth whose other end is a port of a bridge that lives in an extra
// namespace of its own, so that nothing is added to the host's network.
// Host i (from 0) gets prefix's address + i + 1 (with prefix
// 10.77.0.0/24: 10.77.0.1, 10.77.0.2, ...) and a route for 224.0.0.0/4
// out of its veth; Peer is left zero (there is no single peer). Fixed
// addresses are safe: each test's namespaces are its own. t.Cleanup
// deletes every namespace after the processes started in them have been
// stopped. Needs root (RequireRoot is called).
func NewLAN(t testing.TB, prefix netip.Prefix, n int) []*Netns {
	t.Helper()
	RequireRoot(t)
	if _, err := ipPath(); err != nil {
		t.Fatal(err)
	}
	if !prefix.Addr().Is4() || prefix.Bits() > 30 || n < 1 || n > 1<<(32-prefix.Bits())-2 {
		t.Fatalf("netnstest.NewLAN: %d hosts do not fit in %s", n, prefix)
	}
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(rnd[:])
	bridgeNS := "cetest-" + id + "-lan"
	add := func(name string) {
		if err := ip("netns", "add", name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := ip("netns", "del", name); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
	}
	add(bridgeNS)
	steps := [][]string{
		{"-n", bridgeNS, "link", "set", "lo", "up"},
		{"-n", bridgeNS, "link", "add", "br0", "type", "bridge"},
		{"-n", bridgeNS, "link", "set", "br0", "up"},
	}
	hosts := make([]*Netns, n)
	addr := prefix.Masked().Addr()
	for i := range hosts {
		addr = addr.Next()
		port := fmt.Sprintf("p%d", i)
		h := &Netns{Name: fmt.Sprintf("cetest-%s-%d", id, i), Link: fmt.Sprintf("ce%s%d", id, i), Addr: addr,
			BridgeNS: bridgeNS, BridgePort: port}
		hosts[i] = h
		add(h.Name)
		steps = append(steps,
			[]string{"-n", bridgeNS, "link", "add", port, "type", "veth", "peer", "name", h.Link, "netns", h.Name},
			[]string{"-n", bridgeNS, "link", "set", port, "master", "br0"},
			[]string{"-n", bridgeNS, "link", "set", port, "up"},
			[]string{"-n", h.Name, "link", "set", "lo", "up"},
			[]string{"-n", h.Name, "addr", "add", fmt.Sprintf("%s/%d", addr, prefix.Bits()), "dev", h.Link},
			// IPv4 only, before the link comes up: an IPv6 link-local
			// address finishing duplicate address detection later makes a
			// browser on this host abort page loads (see DisableIPv6).
			[]string{"netns", "exec", h.Name, "sh", "-c", "f=/proc/sys/net/ipv6/conf/" + h.Link + "/disable_ipv6; [ ! -e $f ] || echo 1 > $f"},
			[]string{"-n", h.Name, "link", "set", h.Link, "up"},
			[]string{"-n", h.Name, "route", "add", "224.0.0.0/4", "dev", h.Link},
			// A sender's segmented UDP send (UDP_SEGMENT, as the SFU sends
			// a frame) leaves a real host as separate packets (the NIC or
			// the stack segments it); a veth would carry it whole, and
			// Loss and Shape would then drop or queue a frame as one
			// packet. Segment at this host's link, as on a LAN.
			[]string{"netns", "exec", h.Name, "ethtool", "-K", h.Link, "tx-udp-segmentation", "off"},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			t.Fatal(err)
		}
	}
	return hosts
}

// Command returns a command running name with args inside n
// (`ip netns exec`; ip execs the program, so the command's process is the
// program itself).
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	p, err := ipPath()
	if err != nil {
		p = "ip"
	}
	cmd := exec.CommandContext(ctx, p, append([]string{"netns", "exec", n.Name, name}, args...)...)
	// Pdeathsig fires when the OS thread that forked the child ends, not
	// when this process does. Go keeps its threads alive, except one whose
	// goroutine exits while locked to it (runtime.LockOSThread): code here
	// that locks a thread must unlock it before returning (see DialContext).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// LinkLocal returns the IPv6 link-local addresses of n.Link (the kernel
// gives the veth one; it may still be in duplicate address detection).
func (n *Netns) LinkLocal() ([]netip.Addr, error) {
	out, err := ipOutput("-n", n.Name, "-6", "-o", "addr", "show", "dev", n.Link, "scope", "link")
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	for _, f := range strings.Fields(out) {
		if pfx, err := netip.ParsePrefix(f); err == nil && pfx.Addr().Is6() {
			addrs = append(addrs, pfx.Addr())
		}
	}
	return addrs, nil
}

// DialContext dials addr from inside n, as a program running there would:
// the socket is made on an OS thread moved into n, and keeps n after the
// thread moves back. Use it as an http.Transport's DialContext for a client
// on n's host.
func (n *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.run(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil && c != nil { // made, but the thread could not move back
		c.Close()
		c = nil
	}
	return c, err
}

// Listen listens on addr inside n, as a server on n's host would; the
// listener keeps n after the thread that made it moves back.
func (n *Netns) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.run(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil && ln != nil { // made, but the thread could not move back
		ln.Close()
		ln = nil
	}
	return ln, err
}

// Run calls fn on an OS thread inside n: sockets fn makes belong to n
// (a WebRTC peer of the test living on n's host).
func (n *Netns) Run(fn func() error) error { return n.run(fn) }

// Shape limits what a NewLAN host receives to rate (tc's units, e.g.
// "1mbit") with a token bucket (tbf) on its bridge port, buffering up to
// 400 ms; a second call changes the rate in place (what is queued stays
// queued, as when a real link widens).
func (n *Netns) Shape(rate string) error {
	if n.BridgeNS == "" {
		return fmt.Errorf("netnstest: %s is not a NewLAN host", n.Name)
	}
	args := []string{"netns", "exec", n.BridgeNS, "tc", "qdisc", "change", "dev", n.BridgePort, "root", "tbf",
		"rate", rate, "burst", "20kb", "latency", "400ms"}
	if err := ip(args...); err != nil {
		args[5] = "add"
		return ip(args...)
	}
	return nil
}

// Loss drops percent % of the UDP packets n receives, at random
// (nftables; netem does not exist in this kernel). 0 removes the rule.
func (n *Netns) Loss(percent int) error {
	_ = ip("netns", "exec", n.Name, "nft", "delete", "table", "inet", "celoss")
	if percent <= 0 {
		return nil
	}
	return ip("netns", "exec", n.Name, "nft", fmt.Sprintf(
		"add table inet celoss; add chain inet celoss in { type filter hook input priority 0; }; add rule inet celoss in meta l4proto udp numgen random mod 100 < %d drop", percent))
}

// run calls fn on an OS thread moved into n, then moves the thread back.
func (n *Netns) run(fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		// The thread must move back and be unlocked, not left to end:
		// processes started by Command have Pdeathsig, which fires when
		// the thread that forked them ends, and a goroutine that exits
		// while locked ends its thread (any thread may have forked a
		// child). Only if moving back fails is the thread left to end,
		// rather than let it run other goroutines in the wrong namespace.
		runtime.LockOSThread()
		restored, err := n.runLocked(fn)
		if restored {
			runtime.UnlockOSThread()
		}
		ch <- err
	}()
	return <-ch
}

// runLocked does run's work on a locked thread; restored is false only
// when the thread is left in another namespace (fn's result is then
// discarded: a socket it made is in n, but nothing may trust the thread).
func (n *Netns) runLocked(fn func() error) (restored bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return true, err
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/var/run/netns", n.Name)) // where `ip netns add` puts it
	if err != nil {
		return true, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return true, fmt.Errorf("setns %s: %w", n.Name, err)
	}
	err = fn()
	if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
		return false, fmt.Errorf("setns back from %s: %w", n.Name, rerr)
	}
	return true, err
}

// Process is a program running in a namespace, with its output kept.
type Process struct {
	Cmd  *exec.Cmd
	out  *logtest.Buffer
	done chan struct{}
	err  error // valid after done is closed
}

// Start runs name with args inside n, with env added to this process's
// environment, and stops it (SIGTERM, then SIGKILL after 5 s) in t.Cleanup.
// name can be any program: a built edged, avahi-browse, or this test binary
// (os.Executable) re-run with -test.run=^TestHelperX$; ExecTest does the last.
func (n *Netns) Start(t testing.TB, env []string, name string, args ...string) *Process {
	t.Helper()
	cmd := n.Command(context.Background(), name, args...)
	cmd.Env = append(os.Environ(), env...)
	out := &logtest.Buffer{Head: 4 << 20} // a runaway log must not eat memory
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s in %s: %v", name, n.Name, err)
	}
	p := &Process{Cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop()
		t.Logf("%s in %s:\n%s", strings.Join(cmd.Args[4:], " "), n.Name, indent(p.Output()))
	})
	return p
}

// ExecTest re-runs the current test binary inside n, running only the test
// named testName (a helper test that checks env and otherwise returns).
func (n *Netns) ExecTest(t testing.TB, env []string, testName string, args ...string) *Process {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Not /proc/self/exe: ip would resolve that to itself.
	return n.Start(t, env, exe, append([]string{"-test.run=" + runPattern(testName), "-test.v=true", "-test.count=1"}, args...)...)
}

// Output returns what the process has written to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// WaitOutput waits until the output contains s, the process ends, or ctx is
// done.
func (p *Process) WaitOutput(ctx context.Context, s string) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(p.Output(), s) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %q in the output of %s: %w", s, p.Cmd.Path, ctx.Err())
		case <-p.done:
			if strings.Contains(p.Output(), s) {
				return nil
			}
			return fmt.Errorf("%s exited (%v) before writing %q", strings.Join(p.Cmd.Args, " "), p.err, s)
		case <-tick.C:
		}
	}
}

// Stop ends the process: SIGTERM, then SIGKILL if it has not exited within
// 5 s. It returns the process's exit error, nil for a clean exit.
func (p *Process) Stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
	return p.err
}
