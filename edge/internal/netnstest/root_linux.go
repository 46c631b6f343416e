//go:build linux

package netnstest

import (
	"bytes"
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
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Netns is a named network namespace made for one test, with one end of a
// veth pair in it.
type Netns struct {
	Name string     // as in `ip netns exec NAME`
	Link string     // the veth interface inside the namespace
	Addr netip.Addr // Link's IPv4 address, on a private /24
	Peer netip.Addr // the address at the veth's other end
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
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
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
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread must move back and be unlocked, not left to end:
		// processes started by Command have Pdeathsig, which fires when
		// the thread that forked them ends, and a goroutine that exits
		// while locked ends its thread (any thread may have forked a
		// child). Only if moving back fails is the thread left to end,
		// rather than let it run other goroutines in the wrong namespace.
		runtime.LockOSThread()
		c, restored, err := n.dialLocked(ctx, network, addr)
		if restored {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// dialLocked does DialContext's work on a locked thread; restored is false
// only when the thread is left in another namespace.
func (n *Netns) dialLocked(ctx context.Context, network, addr string) (c net.Conn, restored bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, err
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/var/run/netns", n.Name)) // where `ip netns add` puts it
	if err != nil {
		return nil, true, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("setns %s: %w", n.Name, err)
	}
	var d net.Dialer
	c, err = d.DialContext(ctx, network, addr)
	if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
		if c != nil {
			c.Close()
		}
		return nil, false, fmt.Errorf("setns back from %s: %w", n.Name, rerr)
	}
	return c, true, err
}

// Process is a program running in a namespace, with its output kept.
type Process struct {
	Cmd  *exec.Cmd
	out  *syncBuffer
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
	out := &syncBuffer{}
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

// syncBuffer is a bytes.Buffer safe for a writer and readers at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 4<<20 {
		return len(p), nil // keep the first 4 MiB; a runaway log must not eat memory
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
