//go:build linux

package netnstest_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/netnstest"
)

// The emulated WAN delays, shapes and loses: a round trip takes at least
// twice the delay, a bulk transfer no less than its bytes at the rate, and
// with loss on, packets are lost and TCP still delivers every byte.
func TestWANDelaysShapesAndLoses(t *testing.T) {
	const delay, rate = 25 * time.Millisecond, 4_000_000
	w := netnstest.NewWAN(t, netnstest.WANConfig{Rate: rate, Delay: delay, Loss: 0.02})
	ln, err := w.B.Listen("tcp", netip.AddrPortFrom(w.B.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 500_000
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		c.Write([]byte{1}) // the round trip's answer
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	c, err := w.A.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil { // SYN, SYN-ACK, ACK + the answer
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 2*2*delay {
		t.Errorf("connect + one answer took %v, less than two round trips of %v", rtt, 2*delay)
	}
	start = time.Now()
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	n := <-got
	el := time.Since(start)
	c.Close()
	if n != size {
		t.Fatalf("received %d of %d bytes", n, size)
	}
	floor := time.Duration(float64(size*8) / rate * float64(time.Second))
	if el < floor {
		t.Errorf("%d bytes took %v, faster than the link's %v", size, el, floor)
	}
	st := w.Stats(0)
	if st.Lost == 0 {
		t.Errorf("2 %% loss lost nothing in %d packets", st.Carried)
	}
	t.Logf("%d bytes in %v (floor %v); A→B %+v", size, el, floor, st)
}
