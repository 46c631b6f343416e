package uplink

import (
	"crypto/tls"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRestartBBRStartsItAfresh: on a TCP socket under a TLS connection
// (what GotConn hands over for an https:// hub) that has carried data, a
// restart leaves BBR chosen but starting up again with its bandwidth
// estimate cleared, the pacing capped at restartPacing times the estimate
// it had; the cap stays until BBR has started up (no ack yet here) and is
// lifted when asked to.
func TestRestartBBRStartsItAfresh(t *testing.T) {
	avail, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if !strings.Contains(string(avail), hubCongestion) {
		t.Skip("this kernel has no BBR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const sent = 4 << 20
	read := make(chan int64, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			read <- 0
			return
		}
		defer s.Close()
		n, _ := io.CopyN(io.Discard, s, sent)
		read <- n
	}()
	c, err := (&net.Dialer{Control: controlHubSocket}).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, sent)); err != nil {
		t.Fatal(err)
	}
	// All acknowledged: no ack comes after the restart below.
	if n := <-read; n != sent {
		t.Fatalf("the peer read %d of %d bytes", n, sent)
	}
	info := func() (cc string, bi *unix.TCPBBRInfo, pacingCap uint64) {
		t.Helper()
		var errs []error
		control(c, func(fd int) {
			var err error
			cc, err = unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION)
			errs = append(errs, err)
			bi, err = unix.GetsockoptTCPCCBBRInfo(fd, unix.IPPROTO_TCP, unix.TCP_CC_INFO)
			errs = append(errs, err)
			pacingCap, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE)
			errs = append(errs, err)
		})
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		return cc, bi, pacingCap
	}
	cc, bi, _ := info()
	bw := uint64(bi.Bw_hi)<<32 | uint64(bi.Bw_lo)
	if cc != hubCongestion || bw == 0 {
		t.Fatalf("before: congestion control %q, bandwidth %d B/s; want bbr having measured something", cc, bw)
	}
	var sc socketCC
	if r := sc.restart(tls.Client(c, &tls.Config{})); r != restartDone {
		t.Fatalf("restart: %v, want restartDone", r)
	}
	cc, bi, pacingCap := info()
	// BBR sets its gain on the next ack; until then it reads 0.
	if cc != hubCongestion || bi.Bw_lo != 0 || bi.Bw_hi != 0 || bi.Pacing_gain != 0 {
		t.Fatalf("after: congestion control %q, bandwidth %d/%d, pacing gain %d; want bbr started afresh with nothing measured", cc, bi.Bw_hi, bi.Bw_lo, bi.Pacing_gain)
	}
	if want := uint64(float64(bw) * restartPacing); pacingCap != want {
		t.Fatalf("pacing cap %d B/s, want %d (%.1f × %d)", pacingCap, want, restartPacing, bw)
	}
	if sc.uncap(c, false) {
		t.Fatal("uncapped before BBR has started up")
	}
	if !sc.uncap(c, true) {
		t.Fatal("not uncapped when asked to")
	}
	if _, _, pacingCap = info(); pacingCap != math.MaxUint64 {
		t.Fatalf("pacing cap %d after uncap, want none", pacingCap)
	}
}
