//go:build linux

package netnstest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestIsolate checks the namespace it runs in: lo is multicast-capable and
// the only interface, and an IPv4 multicast datagram sent on lo comes back.
func TestIsolate(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	if !Isolate(t) {
		return
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	if len(ifaces) != 1 || ifaces[0].Name != "lo" || ifaces[0].Flags&net.FlagMulticast == 0 || ifaces[0].Flags&net.FlagUp == 0 {
		t.Fatalf("interfaces in the namespace: %+v", ifaces)
	}
	if err := SetupLoopbackMulticast(); err != nil { // idempotent
		t.Fatal(err)
	}
	group := &net.UDPAddr{IP: net.IPv4(239, 255, 77, 1), Port: 47001}
	l, err := net.ListenMulticastUDP("udp4", &ifaces[0], group)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.DialUDP("udp4", nil, group)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	l.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 16)
	n, _, err := l.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("multicast on lo: %q, %v", buf[:n], err)
	}
}

func TestSetupRefusesOutsideNamespace(t *testing.T) {
	if InNetns() {
		t.Skip("inside a namespace")
	}
	if err := SetupLoopbackMulticast(); err == nil {
		t.Fatal("SetupLoopbackMulticast ran on the host")
	}
	if runtime.GOOS == "linux" {
		if err := AddVeth("x", "", ""); err == nil {
			t.Fatal("AddVeth ran on the host")
		}
	}
}

// TestNewPair (root): the two namespaces reach each other over the veth,
// and multicast is routed out of it.
func TestNewPair(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	a, b := NewPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range []*Netns{a, b} {
		out, err := n.Command(ctx, mustIP(t), "route", "get", "224.0.0.251").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "dev "+n.Link) {
			t.Fatalf("multicast route in %s: %s %v", n.Name, out, err)
		}
	}
	// Multicast crosses the veth: a listener in b that names no interface
	// (it relies on the 224.0.0.0/4 route) hears a sender in a.
	listener := b.ExecTest(t, []string{envHelperMcast + "=listen"}, "TestHelperMulticast")
	if err := listener.WaitOutput(ctx, "LISTENING"); err != nil {
		t.Fatal(err)
	}
	a.ExecTest(t, []string{envHelperMcast + "=send"}, "TestHelperMulticast")
	if err := listener.WaitOutput(ctx, "GOT hello"); err != nil {
		t.Fatal(err)
	}

	p := b.Start(t, nil, "sleep", "30")
	if done, _ := p.Exited(); done {
		t.Fatal("sleep exited at once")
	}
	if err := p.Stop(); err == nil {
		t.Fatal("Stop of sleep: want a signal exit error")
	}
}

// TestNewLAN (root): three hosts on one bridge reach each other.
func TestNewLAN(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	hosts := NewLAN(t, netip.MustParsePrefix("10.77.0.0/24"), 3)
	if got := hosts[2].Addr.String(); got != "10.77.0.3" {
		t.Fatalf("third host's address %s", got)
	}
	ln, err := hosts[0].Listen("tcp", hosts[0].Addr.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello from %s\n", hosts[0].Addr)
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, h := range hosts[1:] {
		c, err := h.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("from %s: %v", h.Addr, err)
		}
		if src := c.LocalAddr().(*net.TCPAddr).IP.String(); src != h.Addr.String() {
			t.Errorf("connection from %s has source %s", h.Addr, src)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if !strings.Contains(string(b), "hello from 10.77.0.1") {
			t.Errorf("from %s: %q", h.Addr, b)
		}
	}
}

const envHelperMcast = "NETNSTEST_HELPER_MCAST"

// TestHelperMulticast is the listener or sender process of TestNewPair.
func TestHelperMulticast(t *testing.T) {
	group := &net.UDPAddr{IP: net.IPv4(239, 255, 77, 2), Port: 47002}
	switch os.Getenv(envHelperMcast) {
	case "listen":
		l, err := net.ListenMulticastUDP("udp4", nil, group)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		fmt.Println("LISTENING")
		l.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 64)
		n, _, err := l.ReadFromUDP(buf)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("GOT %s\n", buf[:n])
	case "send":
		c, err := net.DialUDP("udp4", nil, group)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for range 200 { // until stopped, at most 20 s
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func mustIP(t *testing.T) string {
	p, err := exec.LookPath("ip")
	if err != nil {
		p, err = ipPath()
		if err != nil {
			t.Fatal(err)
		}
	}
	return p
}
