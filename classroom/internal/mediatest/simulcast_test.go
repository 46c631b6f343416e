package mediatest

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// frame is a one-packet frame of layer 0 as SimulcastPublisher sends it.
func frame(n uint32, key bool) *rtp.Packet {
	pl := make([]byte, 12)
	if !key {
		pl[1] = 1
	}
	binary.BigEndian.PutUint32(pl[3:], n)
	pl[8] = 1
	return &rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(n), Timestamp: n * 3000}, Payload: pl}
}

// A frame whose only packet is lost and comes again by retransmission
// within 400 ms of when the frame after it arrived is decodable, and so
// are the frames after it; one that comes later breaks the chain.
func TestFrameCounterWaitsForRetransmission(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rtx   time.Duration // when frame 2's packet arrives after frame 3's
		want  int
		chain bool
	}{
		{"in time", 150 * time.Millisecond, 4, true},
		{"too late", 500 * time.Millisecond, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewFrameCounter()
			t0 := time.Unix(1000, 0)
			c.Packet(frame(1, true), t0)
			c.Packet(frame(3, false), t0.Add(66*time.Millisecond)) // frame 2 lost
			c.Packet(frame(4, false), t0.Add(100*time.Millisecond))
			at := t0.Add(66*time.Millisecond + tc.rtx)
			c.flush(at.Add(-time.Millisecond))
			c.Packet(frame(2, false), at)
			broken := c.flush(t0.Add(2 * time.Second))
			total, _ := c.Between(t0, t0.Add(time.Hour))
			if total != tc.want || broken == tc.chain {
				t.Errorf("decodable %d, broken %v; want %d, broken %v", total, broken, tc.want, !tc.chain)
			}
		})
	}
}
