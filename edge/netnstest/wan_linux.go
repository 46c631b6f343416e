//go:build linux

package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// WANConfig shapes both directions of a NewWAN link alike.
type WANConfig struct {
	// Rate is the link's capacity in bits per second, counted on whole IP
	// packets (0: unlimited).
	Rate int
	// Delay is the one-way propagation delay (RTT = 2 × Delay).
	Delay time.Duration
	// Loss is the probability that a packet is dropped at random, in
	// each direction (0.01 = 1 %).
	Loss float64
	// Queue is the longest a packet may wait for the link before it is
	// dropped, like tbf's latency (default 400 ms).
	Queue time.Duration
	// Seed makes the random losses repeatable (0: a fixed default).
	Seed uint64
}

// WAN is a point-to-point link between two namespaces whose packets pass
// through this process, so it can delay them: this kernel has no
// sch_netem, and a TCP proxy (faultproxy) cannot make TCP itself meet
// loss and delay in one loop. Each namespace holds a TUN device; packets
// one sends to the other are read from its TUN, serialised at Rate behind
// a drop-tail queue, dropped at random with probability Loss, held for
// Delay and written into the other's TUN.
type WAN struct {
	// A and B are the link's ends; A.Peer is B.Addr and the reverse.
	A, B *Netns

	cfg  WANConfig
	tunA *os.File
	tunB *os.File
	wg   sync.WaitGroup
	// Per direction: [0] A→B, [1] B→A.
	carried, carriedBytes, lost, queueDrops, payload [2]atomic.Int64
}

// WANStats counts one direction's packets.
type WANStats struct {
	Carried, CarriedBytes, Lost, QueueDrops int64
	// PayloadBytes is the TCP payload among CarriedBytes (first sendings
	// and retransmissions alike): the bytes the link spent on data.
	PayloadBytes int64
}

// NewWAN makes two namespaces joined by an emulated WAN link (see WAN),
// addresses 10.x.y.1 (A) and 10.x.y.2 (B). t.Cleanup stops the link and
// deletes the namespaces. Needs root.
func NewWAN(t testing.TB, cfg WANConfig) *WAN {
	t.Helper()
	RequireRoot(t)
	if _, err := ipPath(); err != nil {
		t.Fatal(err)
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 400 * time.Millisecond
	}
	if cfg.Seed == 0 {
		cfg.Seed = 42
	}
	var rnd [5]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(rnd[:3])
	prefix := fmt.Sprintf("10.%d.%d.", 16+int(rnd[3])%200, rnd[4])
	w := &WAN{cfg: cfg,
		A: &Netns{Name: "cetest-" + id + "-wa", Link: "wan" + id + "a", Addr: netip.MustParseAddr(prefix + "1")},
		B: &Netns{Name: "cetest-" + id + "-wb", Link: "wan" + id + "b", Addr: netip.MustParseAddr(prefix + "2")},
	}
	w.A.Peer, w.B.Peer = w.B.Addr, w.A.Addr
	for _, n := range []*Netns{w.A, w.B} {
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
	var err error
	if w.tunA, err = openTUN(w.A); err != nil {
		t.Fatal(err)
	}
	if w.tunB, err = openTUN(w.B); err != nil {
		w.tunA.Close()
		t.Fatal(err)
	}
	for _, n := range []*Netns{w.A, w.B} {
		for _, s := range [][]string{
			{"-n", n.Name, "link", "set", "lo", "up"},
			{"-n", n.Name, "addr", "add", n.Addr.String(), "peer", n.Peer.String() + "/32", "dev", n.Link},
			{"-n", n.Name, "link", "set", n.Link, "up"},
		} {
			if err := ip(s...); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.wg.Add(2)
	go w.carry(0, w.tunA, w.tunB, mrand.New(mrand.NewPCG(cfg.Seed, 1)))
	go w.carry(1, w.tunB, w.tunA, mrand.New(mrand.NewPCG(cfg.Seed, 2)))
	t.Cleanup(w.close)
	return w
}

// openTUN makes n's TUN device (named n.Link) and returns its queue, in
// non-blocking mode so that closing it ends a pending read.
func openTUN(n *Netns) (*os.File, error) {
	var f *os.File
	err := n.run(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(n.Link)
		if err == nil {
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", n.Link, err)
		}
		f = os.NewFile(uintptr(fd), n.Link)
		return nil
	})
	return f, err
}

func (w *WAN) close() {
	w.tunA.Close()
	w.tunB.Close()
	w.wg.Wait()
}

// Stats returns the counts of the A→B (0) or B→A (1) direction.
func (w *WAN) Stats(dir int) WANStats {
	return WANStats{w.carried[dir].Load(), w.carriedBytes[dir].Load(), w.lost[dir].Load(), w.queueDrops[dir].Load(), w.payload[dir].Load()}
}

// tcpPayload is the length of an IPv4 TCP packet's payload (0 for
// anything else).
func tcpPayload(p []byte) int {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != 6 {
		return 0
	}
	ihl := int(p[0]&0x0f) * 4
	total := int(p[2])<<8 | int(p[3])
	if total > len(p) || ihl+20 > total {
		return 0
	}
	return total - ihl - int(p[ihl+12]>>4)*4
}

type wanPacket struct {
	at time.Time
	b  []byte
}

// carry moves packets from one TUN to the other for one direction.
func (w *WAN) carry(dir int, from, to *os.File, rng *mrand.Rand) {
	defer w.wg.Done()
	// The link's queue: departures are in order and the delay is fixed,
	// so deliveries are too, and one FIFO serves. Its length bounds
	// memory: Queue's worth at Rate, or a generous fixed count.
	out := make(chan wanPacket, 8192)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for p := range out {
			if d := time.Until(p.at); d > 0 {
				time.Sleep(d)
			}
			if _, err := to.Write(p.b); err != nil && errors.Is(err, os.ErrClosed) {
				for range out { // drain so the reader never blocks
				}
				return
			}
		}
	}()
	defer func() { close(out); wg.Wait() }()
	var free time.Time // when the link has sent everything queued so far
	buf := make([]byte, 65536)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return // closed
		}
		now := time.Now()
		if w.cfg.Loss > 0 && rng.Float64() < w.cfg.Loss {
			w.lost[dir].Add(1)
			continue
		}
		depart := now
		if w.cfg.Rate > 0 {
			start := now
			if free.After(now) {
				start = free
			}
			if start.Sub(now) > w.cfg.Queue {
				w.queueDrops[dir].Add(1)
				continue
			}
			free = start.Add(time.Duration(float64(n*8) / float64(w.cfg.Rate) * float64(time.Second)))
			depart = free
		}
		w.carried[dir].Add(1)
		w.carriedBytes[dir].Add(int64(n))
		w.payload[dir].Add(int64(max(0, tcpPayload(buf[:n]))))
		select {
		case out <- wanPacket{at: depart.Add(w.cfg.Delay), b: append([]byte(nil), buf[:n]...)}:
		default:
			w.queueDrops[dir].Add(1) // the FIFO is full: drop-tail
		}
	}
}
