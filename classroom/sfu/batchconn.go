// Frame batching on a subscriber's socket: the packets of one video frame
// that the forwarder writes to a subscriber are sent in one system call
// (UDP generic segmentation offload where the kernel has it), not one
// sendto each. Sending was ~45 % of edged's CPU at 40 viewers (TestBenchJanus
// with -bench.cpuprofile), most of it paid per call.

package sfu

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

const (
	// A batch is at most batchSegs packets and batchBytes bytes: the
	// kernel's limits for one segmented send (64 segments, one IP
	// datagram's 64 KB).
	batchSegs  = 64
	batchBytes = 60 << 10
)

// connRegistry finds the batching socket of a subscriber's connection by
// its local address (the selected candidate pair's).
type connRegistry struct {
	mu    sync.Mutex
	conns map[netip.AddrPort]*batchConn
}

func (r *connRegistry) add(c *batchConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		r.conns = map[netip.AddrPort]*batchConn{}
	}
	r.conns[c.key] = c
}

func (r *connRegistry) remove(c *batchConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns[c.key] == c {
		delete(r.conns, c.key)
	}
}

func (r *connRegistry) find(ap netip.AddrPort) *batchConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())]
}

// batchConn is a subscriber connection's UDP socket. While a forwarder
// writes a frame to it (hold … release), what is written is kept and sent
// as one segmented datagram when the frame's last packet is written (or
// sooner: when a packet that cannot join the batch comes, or anything is
// written outside a hold, the batch goes first, so nothing on the socket is
// reordered). A receiver cannot decode a frame before its last packet
// anyway; the frame's first packets wait only for the rest of the frame.
type batchConn struct {
	*net.UDPConn
	reg *connRegistry
	key netip.AddrPort

	mu      sync.Mutex
	holders int            // writers in hold…release
	buf     []byte         // the kept packets, back to back
	seg     int            // their size; the last may be shorter
	n       int            // how many
	short   bool           // the last is shorter than seg: the batch is closed
	dst     netip.AddrPort // where they go
	oob     []byte         // the segment-size control message (gso_linux.go)
	noGSO   bool           // the kernel refused a segmented send: one call per packet from now on
}

func newBatchConn(c *net.UDPConn, reg *connRegistry) *batchConn {
	b := &batchConn{UDPConn: c, reg: reg}
	if ap, ok := c.LocalAddr().(*net.UDPAddr); ok {
		b.key = ap.AddrPort()
		b.key = netip.AddrPortFrom(b.key.Addr().Unmap(), b.key.Port())
	}
	reg.add(b)
	return b
}

// hold makes what is written from now on (by any goroutine) wait in the
// batch until release; newFrame sends what waits first (a frame whose
// last packet was lost, or a sender that marks no frame ends).
func (c *batchConn) hold(newFrame bool) {
	c.mu.Lock()
	if newFrame && c.n > 0 {
		c.flushLocked()
	}
	c.holders++
	c.mu.Unlock()
}

// release ends a hold; flush sends the batch now (the frame is complete).
func (c *batchConn) release(flush bool) {
	c.mu.Lock()
	c.holders--
	if flush && c.n > 0 {
		c.flushLocked()
	}
	c.mu.Unlock()
}

// fits reports whether b to dst can join the batch as its next segment.
func (c *batchConn) fits(b []byte, dst netip.AddrPort) bool {
	return dst == c.dst && !c.short && len(b) <= c.seg && c.n < batchSegs && len(c.buf)+len(b) <= batchBytes
}

// WriteToAddrPort is the path pion's ICE writes every packet through.
func (c *batchConn) WriteToAddrPort(b []byte, dst netip.AddrPort) (int, error) {
	c.mu.Lock()
	if c.holders > 0 && !c.noGSO && len(b) > 0 && len(b) <= batchBytes {
		if c.n > 0 && !c.fits(b, dst) {
			c.flushLocked()
		}
		if c.n == 0 {
			c.seg, c.dst, c.short = len(b), dst, false
		} else if len(b) < c.seg {
			c.short = true
		}
		c.buf = append(c.buf, b...)
		c.n++
		c.mu.Unlock()
		return len(b), nil
	}
	if c.n > 0 {
		c.flushLocked()
	}
	c.mu.Unlock()
	return c.UDPConn.WriteToUDPAddrPort(b, dst)
}

// ReadFromAddrPort completes ICE's allocation-free path (ice.AddrPortReaderWriter).
func (c *batchConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	return c.UDPConn.ReadFromUDPAddrPort(b)
}

// The other ways of writing send the batch first.

func (c *batchConn) WriteToUDPAddrPort(b []byte, dst netip.AddrPort) (int, error) {
	return c.WriteToAddrPort(b, dst)
}

func (c *batchConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if a, ok := addr.(*net.UDPAddr); ok {
		return c.WriteToAddrPort(b, a.AddrPort())
	}
	c.flush()
	return c.UDPConn.WriteTo(b, addr)
}

func (c *batchConn) WriteToUDP(b []byte, addr *net.UDPAddr) (int, error) {
	return c.WriteToAddrPort(b, addr.AddrPort())
}

func (c *batchConn) Write(b []byte) (int, error) {
	c.flush()
	return c.UDPConn.Write(b)
}

func (c *batchConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	c.flush()
	return c.UDPConn.WriteMsgUDP(b, oob, addr)
}

func (c *batchConn) Close() error {
	c.reg.remove(c)
	return c.UDPConn.Close()
}

func (c *batchConn) flush() {
	c.mu.Lock()
	if c.n > 0 {
		c.flushLocked()
	}
	c.mu.Unlock()
}

// flushLocked sends the batch: one segmented send, or one write per packet
// where the kernel cannot segment. A failed send loses the batch, as a
// failed write loses its packet.
func (c *batchConn) flushLocked() {
	buf, seg, n := c.buf, c.seg, c.n
	c.buf, c.n = c.buf[:0], 0
	if n > 1 && !c.noGSO {
		err := c.sendSegmented(buf, seg, c.dst)
		if err == nil || !errors.Is(err, errGSOUnsupported) {
			return
		}
		c.noGSO = true
	}
	for len(buf) > 0 {
		k := min(seg, len(buf))
		_, _ = c.UDPConn.WriteToUDPAddrPort(buf[:k], c.dst)
		buf = buf[k:]
	}
}
