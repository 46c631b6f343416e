package sfu

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// meterLink drives a queueMeter as a connection would: packets numbered
// by the TWCC header extension are sent, and the receiver's feedback
// (marshalled and parsed as on the wire) reports when each arrived.
type meterLink struct {
	t   *testing.T
	q   *queueMeter
	t0  time.Time
	seq uint16
	rec *twcc.Recorder
	// pending: packets sent and not yet reported, with their arrival
	// (µs on the receiver's clock, -1: lost).
	pending []arrival
}

type arrival struct {
	seq uint16
	us  int64
}

const meterExt = 5

func newMeterLink(t *testing.T, firstSeq uint16) *meterLink {
	l := &meterLink{t: t, q: &queueMeter{}, t0: time.Unix(1_000_000, 0), seq: firstSeq, rec: twcc.NewRecorder(2)}
	l.q.start = l.t0
	l.q.ext.Store(meterExt)
	return l
}

// send sends one packet at at (since t0) that arrives after delay on the
// receiver's clock (which runs 7 s ahead of the sender's); lost: never.
func (l *meterLink) send(at, delay time.Duration, lost bool) {
	h := &rtp.Header{Version: 2}
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, l.seq)
	if err := h.SetExtension(meterExt, b); err != nil {
		l.t.Fatal(err)
	}
	l.q.sentAt(h, l.t0.Add(at))
	a := arrival{seq: l.seq, us: (7*time.Second + at + delay).Microseconds()}
	if lost {
		a.us = -1
	}
	l.pending = append(l.pending, a)
	l.seq++
}

// report sends the feedback for the pending packets at at (since t0),
// built by pion's receiver-side recorder and parsed as on the wire.
func (l *meterLink) report(at time.Duration) {
	if len(l.pending) == 0 {
		return
	}
	for _, a := range l.pending {
		if a.us >= 0 {
			l.rec.Record(1, a.seq, a.us)
		}
	}
	l.pending = l.pending[:0]
	for _, p := range l.rec.BuildFeedbackPacket() {
		raw, err := p.Marshal()
		if err != nil {
			l.t.Fatal(err)
		}
		var parsed rtcp.TransportLayerCC
		if err := parsed.Unmarshal(raw); err != nil {
			l.t.Fatal(err)
		}
		l.q.feedbackAt(&parsed, l.t0.Add(at))
	}
}

// run sends a packet every 5 ms from from to to, each delayed by
// delay(at), with a report every 100 ms, and returns the last measured
// queueing delay.
func (l *meterLink) run(from, to time.Duration, delay func(at time.Duration) time.Duration) time.Duration {
	for at := from; at < to; at += 5 * time.Millisecond {
		l.send(at, delay(at), false)
		if (at+5*time.Millisecond)%(100*time.Millisecond) == 0 {
			l.report(at)
		}
	}
	d, _, _ := l.q.last()
	return d
}

func near(got, want time.Duration) bool {
	return got >= want-time.Millisecond && got <= want+time.Millisecond
}

// The meter reads a queue as the delay every packet of a report waits
// beyond the link's least delay; one packet held up is no queue.
func TestQueueMeterReadsTheQueue(t *testing.T) {
	l := newMeterLink(t, 65000) // the sequence numbers wrap on the way
	path := 30 * time.Millisecond
	if d := l.run(0, 3*time.Second, func(time.Duration) time.Duration { return path }); !near(d, 0) {
		t.Fatalf("no queue: measured %v", d)
	}
	// A probe fills a queue: from 3 s each packet waits 80 ms more per
	// second (the send rate 8 % above the link).
	grow := func(at time.Duration) time.Duration { return path + (at-3*time.Second)*80/1000 }
	d := l.run(3*time.Second, 4*time.Second, grow)
	// The last report's packets were sent from 3.9 s: they waited 72 ms and more.
	if !near(d, 72*time.Millisecond) {
		t.Fatalf("queue growing to 80 ms: measured %v, want the last report's least, 72 ms", d)
	}
	// Drained: back to the path's delay.
	if d := l.run(4*time.Second, 5*time.Second, func(time.Duration) time.Duration { return path }); !near(d, 0) {
		t.Fatalf("queue drained: measured %v", d)
	}
	// One packet of a report held up 200 ms (a busy machine), another
	// lost: the report's least delay is the path's.
	for at := 5 * time.Second; at < 5100*time.Millisecond; at += 5 * time.Millisecond {
		extra := time.Duration(0)
		if at == 5050*time.Millisecond {
			extra = 200 * time.Millisecond
		}
		l.send(at, path+extra, at == 5060*time.Millisecond)
	}
	l.report(5100 * time.Millisecond)
	if d, _, _ := l.q.last(); !near(d, 0) {
		t.Fatalf("one packet held up: measured %v", d)
	}
}

// A path that gets longer for good is the new least delay within the
// meter's spans, not a queue for ever.
func TestQueueMeterFollowsALongerPath(t *testing.T) {
	l := newMeterLink(t, 0)
	l.run(0, 2*time.Second, func(time.Duration) time.Duration { return 20 * time.Millisecond })
	if d := l.run(2*time.Second, 3*time.Second, func(time.Duration) time.Duration { return 70 * time.Millisecond }); !near(d, 50*time.Millisecond) {
		t.Fatalf("path 50 ms longer: measured %v, want 50 ms at first", d)
	}
	if d := l.run(3*time.Second, 14*time.Second, func(time.Duration) time.Duration { return 70 * time.Millisecond }); !near(d, 0) {
		t.Fatalf("path 50 ms longer for 11 s: measured %v, want 0", d)
	}
}

// Packets the meter did not see sent (the gate was shut) and reports
// of too few packets measure nothing.
func TestQueueMeterSkipsUnknownPackets(t *testing.T) {
	l := newMeterLink(t, 100)
	l.q.ext.Store(0) // no TWCC extension negotiated: nothing recorded
	l.run(0, time.Second, func(time.Duration) time.Duration { return 10 * time.Millisecond })
	if _, n, _ := l.q.last(); n != 0 {
		t.Fatalf("%d reports measured without send times", n)
	}
	l.q.ext.Store(meterExt)
	l.send(time.Second, 10*time.Millisecond, false)
	l.report(time.Second)
	if _, n, _ := l.q.last(); n != 0 {
		t.Fatalf("a report of one packet was measured")
	}
}

// Feedback is outside data: any report the RTCP parser accepts is
// measured without panicking or reading past its deltas.
func FuzzQueueMeterFeedback(f *testing.F) {
	l := newMeterLink(&testing.T{}, 0)
	for at := time.Duration(0); at < 100*time.Millisecond; at += 5 * time.Millisecond {
		l.send(at, 10*time.Millisecond, at == 50*time.Millisecond)
	}
	fb := &rtcp.TransportLayerCC{BaseSequenceNumber: 0, PacketStatusCount: 3, ReferenceTime: 1,
		PacketChunks: []rtcp.PacketStatusChunk{&rtcp.RunLengthChunk{PacketStatusSymbol: rtcp.TypeTCCPacketReceivedSmallDelta, RunLength: 3}},
		RecvDeltas:   []*rtcp.RecvDelta{{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 250}, {Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 500}, {Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 0}}}
	raw, err := fb.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	fb.PacketChunks = []rtcp.PacketStatusChunk{&rtcp.StatusVectorChunk{SymbolSize: rtcp.TypeTCCSymbolSizeTwoBit,
		SymbolList: []uint16{rtcp.TypeTCCPacketReceivedSmallDelta, rtcp.TypeTCCPacketNotReceived, rtcp.TypeTCCPacketReceivedLargeDelta}}}
	fb.RecvDeltas = fb.RecvDeltas[:2]
	fb.RecvDeltas[1].Type, fb.RecvDeltas[1].Delta = rtcp.TypeTCCPacketReceivedLargeDelta, -64_000
	if raw, err = fb.Marshal(); err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		var p rtcp.TransportLayerCC
		if p.Unmarshal(b) != nil {
			return
		}
		l.q.feedbackAt(&p, l.t0.Add(time.Second))
		if d, _, _ := l.q.last(); d < 0 {
			t.Fatalf("negative queueing delay %v", d)
		}
	})
}

// An armed probe's padding stops at the first report whose queue is past
// probeQueue; a report below it leaves the probe running.
func TestQueueMeterStopsAProbe(t *testing.T) {
	l := newMeterLink(t, 0)
	path := 10 * time.Millisecond
	l.run(0, time.Second, func(time.Duration) time.Duration { return path })
	var probe atomic.Int64
	probe.Store(400_000)
	l.q.arm(&probe)
	// One report 15 ms late: no queue to speak of.
	l.run(time.Second, 1100*time.Millisecond, func(time.Duration) time.Duration { return path + 15*time.Millisecond })
	l.run(1100*time.Millisecond, 2*time.Second, func(time.Duration) time.Duration { return path })
	if _, _, tripped := l.q.last(); tripped || probe.Load() == 0 {
		t.Fatalf("one report 15 ms late stopped the probe")
	}
	// A queue growing by 100 ms a second: its reports show 5, 15, 25 ms
	// of least delay: stopped at the third, with the padding.
	stopped := time.Duration(0)
	for at := 2 * time.Second; at < 3*time.Second && stopped == 0; at += 100 * time.Millisecond {
		l.run(at, at+100*time.Millisecond, func(at time.Duration) time.Duration { return path + (at-1950*time.Millisecond)/10 })
		if probe.Load() == 0 {
			stopped = at + 100*time.Millisecond
		}
	}
	d, _, tripped := l.q.last()
	if !tripped || stopped != 2300*time.Millisecond || !near(d, 25*time.Millisecond) {
		t.Fatalf("growing queue: padding stopped at %v (want 2.3 s), tripped %v, queue %v", stopped, tripped, d)
	}
	// Disarmed: a later queue stops nothing.
	l.q.arm(nil)
	probe.Store(400_000)
	l.run(3*time.Second, 4*time.Second, func(at time.Duration) time.Duration { return path + 80*time.Millisecond })
	if _, _, tripped := l.q.last(); tripped || probe.Load() == 0 {
		t.Fatalf("disarmed meter stopped a probe")
	}
}

// BenchmarkQueueMeterSent is the meter's cost per packet sent on an
// estimated link (the send path of every subscriber that takes simulcast).
func BenchmarkQueueMeterSent(b *testing.B) {
	q := &queueMeter{start: time.Now()}
	q.ext.Store(meterExt)
	h := &rtp.Header{Version: 2}
	if err := h.SetExtension(meterExt, []byte{0, 0}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		binary.BigEndian.PutUint16(h.GetExtension(meterExt), uint16(i))
		q.sent(h)
	}
}
