package sfu

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// TestBatchConnHoldsAFrame: what is written under a hold reaches the
// receiver only when the frame's last packet is released, then every
// packet as its own datagram, in order; a write outside a hold, or a new
// frame, sends what waits first.
func TestBatchConnHoldsAFrame(t *testing.T) {
	var reg connRegistry
	raw, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := newBatchConn(raw, &reg)
	defer c.Close()
	if reg.find(c.key) != c {
		t.Fatalf("registry does not find the conn at %v", c.key)
	}
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	dst := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	pkt := func(i, size int) []byte { return bytes.Repeat([]byte{byte(i)}, size) }
	write := func(i, size int) {
		t.Helper()
		if n, err := c.WriteToAddrPort(pkt(i, size), dst); err != nil || n != size {
			t.Fatalf("write %d: %d %v", i, n, err)
		}
	}
	// recv returns the next datagram, or nil when none comes in d.
	buf := make([]byte, 2000)
	recv := func(d time.Duration) []byte {
		_ = rx.SetReadDeadline(time.Now().Add(d))
		n, err := rx.Read(buf)
		if err != nil {
			return nil
		}
		return append([]byte(nil), buf[:n]...)
	}
	expect := func(i, size int) {
		t.Helper()
		got := recv(2 * time.Second)
		if !bytes.Equal(got, pkt(i, size)) {
			t.Fatalf("want packet %d (%d bytes), got %d bytes starting %v", i, size, len(got), got[:min(len(got), 1)])
		}
	}

	// A frame of four: three equal, the last shorter.
	for i := range 4 {
		c.hold(i == 0)
		size := 1200
		if i == 3 {
			size = 700
		}
		write(i, size)
		if i < 3 {
			c.release(false)
			if got := recv(50 * time.Millisecond); got != nil {
				t.Fatalf("packet %d sent before its frame was complete", got[0])
			}
		} else {
			c.release(true)
		}
	}
	for i := range 4 {
		size := 1200
		if i == 3 {
			size = 700
		}
		expect(i, size)
	}
	if canSegment && c.noGSO {
		t.Fatal("the kernel refused a segmented send on loopback")
	}

	// Two held, then a write outside a hold (audio, RTCP): the held go first.
	for i := 10; i < 12; i++ {
		c.hold(false)
		write(i, 1000)
		c.release(false)
	}
	write(12, 100)
	expect(10, 1000)
	expect(11, 1000)
	expect(12, 100)

	// Held packets of different sizes, then a new frame: each in order.
	c.hold(false)
	write(20, 500)
	write(21, 900) // larger than the batch's segments: the batch goes first
	write(22, 300)
	write(23, 300) // after a shorter one: a new batch
	c.release(false)
	c.hold(true) // a new frame sends what waits
	c.release(false)
	for i, size := range []int{500, 900, 300, 300} {
		expect(20+i, size)
	}
	if got := recv(50 * time.Millisecond); got != nil {
		t.Fatalf("unexpected datagram of %d bytes", len(got))
	}

	// Without segmentation (the kernel refused it) nothing waits.
	c.noGSO = true
	c.hold(false)
	write(30, 800)
	expect(30, 800)
	c.release(false)

	c.Close()
	if reg.find(c.key) != nil {
		t.Fatal("a closed conn is still registered")
	}
}
