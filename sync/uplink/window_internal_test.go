package uplink

import (
	"context"
	"net"
	"testing"
	"time"
)

// fakeCC records what connClock asks of each connection.
type fakeCC struct {
	restarts map[net.Conn]int
	later    map[net.Conn]bool // restart answers restartLater
	never    map[net.Conn]bool // restart answers restartNever
	inStart  bool              // uncap(c, false) finds BBR still starting up
	uncapped map[net.Conn]int
}

func (f *fakeCC) restart(c net.Conn) restartResult {
	switch {
	case f.never[c]:
		return restartNever
	case f.later[c]:
		return restartLater
	}
	f.restarts[c]++
	return restartDone
}

func (f *fakeCC) uncap(c net.Conn, always bool) bool {
	if f.inStart && !always {
		return false
	}
	f.uncapped[c]++
	return true
}

// TestConnClockRestartsEachConnectionEverySpan: a connection is restarted
// once its span since a batch first got it is up, then a span after each
// restart; one recovering a loss is tried again on the next tick, one that
// is not BBR never again; a cap is lifted only once start-up is over, or
// when the clock stops.
func TestConnClockRestartsEachConnectionEverySpan(t *testing.T) {
	f := &fakeCC{restarts: map[net.Conn]int{}, later: map[net.Conn]bool{}, never: map[net.Conn]bool{}, uncapped: map[net.Conn]int{}}
	k := &connClock{span: time.Second, cc: f}
	c1, p1 := net.Pipe()
	defer c1.Close()
	defer p1.Close()
	c2, p2 := net.Pipe()
	defer c2.Close()
	defer p2.Close()
	t0 := time.Now()
	if n := k.tick(t0.Add(time.Hour)); n != 0 {
		t.Fatalf("%d restarts with no connection", n)
	}
	k.got(c1, t0)
	k.got(c1, t0.Add(900*time.Millisecond)) // another batch on it: the clock runs on
	if n := k.tick(t0.Add(999 * time.Millisecond)); n != 0 {
		t.Fatal("restarted within the span")
	}
	f.inStart = true
	if n := k.tick(t0.Add(time.Second)); n != 1 || f.restarts[c1] != 1 {
		t.Fatalf("tick at the span: %d restarts, c1 restarted %d times", n, f.restarts[c1])
	}
	k.tick(t0.Add(1250 * time.Millisecond))
	if f.uncapped[c1] != 0 {
		t.Fatal("uncapped during start-up")
	}
	f.inStart = false
	if n := k.tick(t0.Add(1500 * time.Millisecond)); n != 0 || f.uncapped[c1] != 1 {
		t.Fatalf("after start-up: %d restarts, uncapped %d times", n, f.uncapped[c1])
	}
	k.tick(t0.Add(1750 * time.Millisecond))
	if f.uncapped[c1] != 1 {
		t.Fatal("uncapped again without a restart")
	}
	// A second connection; the first is recovering a loss when its span is up.
	k.got(c2, t0.Add(1500*time.Millisecond))
	f.later[c1] = true
	if n := k.tick(t0.Add(2 * time.Second)); n != 0 {
		t.Fatal("restarted a connection recovering a loss")
	}
	f.later[c1] = false
	if n := k.tick(t0.Add(2250 * time.Millisecond)); n != 1 || f.restarts[c1] != 2 {
		t.Fatalf("the tick after the recovery: %d restarts, c1 restarted %d times", n, f.restarts[c1])
	}
	f.never[c2] = true
	k.tick(t0.Add(2500 * time.Millisecond))
	delete(f.never, c2)
	if n := k.tick(t0.Add(10 * time.Second)); n != 1 || f.restarts[c2] != 0 || f.restarts[c1] != 3 {
		t.Fatalf("after a connection that is not BBR: %d restarts, c1 %d, c2 %d", n, f.restarts[c1], f.restarts[c2])
	}
	// Stopping lifts the cap left by the last restart, start-up or not,
	// and only that one.
	f.inStart = true
	before := f.uncapped[c1]
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	k.run(ctx, func(int) {})
	if f.uncapped[c1] != before+1 || f.uncapped[c2] != 0 {
		t.Fatalf("at stop the cap of c1 was lifted %d times, c2's %d; want once and never", f.uncapped[c1]-before, f.uncapped[c2])
	}
}
