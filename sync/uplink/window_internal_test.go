package uplink

import (
	"net"
	"testing"
	"time"
)

// TestConnClockRotatesOncePerConnection: a connection is asked to close
// only once the batch launched would be written span after its first body
// began; after that no other batch is marked until a new connection has
// begun to carry (a batch that still went out on the old one changes
// nothing), and the new one gets a span of its own.
func TestConnClockRotatesOncePerConnection(t *testing.T) {
	k := &connClock{span: time.Second}
	c1, p1 := net.Pipe()
	defer c1.Close()
	defer p1.Close()
	c2, p2 := net.Pipe()
	defer c2.Close()
	defer p2.Close()
	t0 := time.Now()
	if k.rotate(t0.Add(time.Hour)) {
		t.Fatal("rotated before any connection carried a body")
	}
	k.got(c1)
	if k.rotate(t0.Add(time.Hour)) {
		t.Fatal("rotated a connection whose first body has not begun")
	}
	k.started(c1, t0)
	if k.rotate(t0.Add(999 * time.Millisecond)) {
		t.Fatal("rotated a batch written within the span")
	}
	if !k.rotate(t0.Add(time.Second)) {
		t.Fatal("did not rotate a batch written a span after the connection began")
	}
	if k.rotate(t0.Add(2 * time.Second)) {
		t.Fatal("marked a second batch before a new connection showed up")
	}
	k.got(c1) // launched before the switch: still the old connection
	if k.rotate(t0.Add(2 * time.Second)) {
		t.Fatal("an old connection seen again reopened the clock")
	}
	k.got(c2)
	k.started(c2, t0.Add(1500*time.Millisecond))
	k.started(c1, t0.Add(1600*time.Millisecond)) // a late body on the old one
	if k.rotate(t0.Add(2400 * time.Millisecond)) {
		t.Fatal("the new connection was rotated within its own span")
	}
	if !k.rotate(t0.Add(2500 * time.Millisecond)) {
		t.Fatal("the new connection was not rotated after its span")
	}
}

// TestConnClockRate: the rate bodies go into TCP, from the last four
// bodies' ends; nothing before four.
func TestConnClockRate(t *testing.T) {
	var k connClock
	t0 := time.Now()
	for i := range 3 {
		k.written(100_000, t0.Add(time.Duration(i)*time.Second))
		if r := k.rate(); r != 0 {
			t.Fatalf("rate %v after %d bodies", r, i+1)
		}
	}
	k.written(100_000, t0.Add(3*time.Second))
	if r := k.rate(); r != 100_000 {
		t.Fatalf("rate %v, want 100000 (3 bodies of 100 kB in 3 s)", r)
	}
	k.written(400_000, t0.Add(4*time.Second)) // the oldest drops out
	if r := k.rate(); r != 200_000 {
		t.Fatalf("rate %v, want 200000 (600 kB in 3 s)", r)
	}
	if w := writtenBy([]flyingBatch{{newBatchGate(nil), 200_000}}, 200_000, 200_000); time.Until(w) < 1900*time.Millisecond {
		t.Fatalf("a 200 kB batch behind an unwritten 200 kB one at 200 kB/s is written by %v from now", time.Until(w))
	}
}
