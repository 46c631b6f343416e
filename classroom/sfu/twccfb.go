// TWCC feedback: tells a publisher when each of its packets arrived, for
// its send-side bandwidth estimate, without a goroutine hand-off per packet.

package sfu

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtp"
)

// transportCCURI names the transport-wide sequence number header
// extension (draft-holmer-rmcat-transport-wide-cc-extensions-01).
const transportCCURI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

// twccFeedbackInterval is how often feedback is sent (pion's default).
const twccFeedbackInterval = 100 * time.Millisecond

// twccFeedbackFactory makes the edge's TWCC feedback interceptor for its
// receiving connections (and the tests' peers, NewAPINet), in place of
// pion's twcc.SenderInterceptor. That one sends every received packet's
// number through a channel to a goroutine of its own, so each packet of a
// lesson woke one more goroutine; this one records the arrival under a
// lock in the goroutine that reads the packet (the forwarder), and only
// the 10 Hz report runs apart, started by the first packet (a connection
// that receives nothing has no ticker).
type twccFeedbackFactory struct{}

func (twccFeedbackFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &twccFeedback{start: time.Now(), rec: twcc.NewRecorder(rand.Uint32()), done: make(chan struct{})}, nil
}

type twccFeedback struct {
	interceptor.NoOp
	start time.Time

	mu      sync.Mutex
	rec     *twcc.Recorder
	w       interceptor.RTCPWriter
	running bool
	closed  bool
	done    chan struct{}
	wg      sync.WaitGroup
}

// BindRTCPWriter keeps the connection's RTCP writer for the reports.
func (f *twccFeedback) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter {
	f.mu.Lock()
	f.w = w
	f.mu.Unlock()
	return w
}

// BindRemoteStream records the arrival of every packet of a stream that
// carries transport-wide sequence numbers.
func (f *twccFeedback) BindRemoteStream(info *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	var id uint8
	for _, e := range info.RTPHeaderExtensions {
		if e.URI == transportCCURI && e.ID > 0 && e.ID < 256 {
			id = uint8(e.ID)
			break
		}
	}
	if id == 0 {
		return reader
	}
	ssrc := info.SSRC
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		i, attr, err := reader.Read(b, a)
		if err != nil {
			return 0, nil, err
		}
		if attr == nil {
			attr = interceptor.Attributes{}
		}
		h, err := attr.GetRTPHeader(b[:i])
		if err != nil {
			return 0, nil, err
		}
		if ext := h.GetExtension(id); ext != nil {
			var tcc rtp.TransportCCExtension
			if tcc.Unmarshal(ext) == nil {
				f.record(ssrc, tcc.TransportSequence)
			}
		}
		return i, attr, nil
	})
}

func (f *twccFeedback) record(ssrc uint32, seq uint16) {
	at := time.Since(f.start).Microseconds()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.rec.Record(ssrc, seq, at)
	if !f.running && f.w != nil {
		f.running = true
		f.wg.Add(1)
		go f.loop()
	}
}

// loop sends the feedback gathered since the last report, 10 times a
// second.
func (f *twccFeedback) loop() {
	defer f.wg.Done()
	tk := time.NewTicker(twccFeedbackInterval)
	defer tk.Stop()
	for {
		select {
		case <-f.done:
			return
		case <-tk.C:
			f.mu.Lock()
			pkts, w := f.rec.BuildFeedbackPacket(), f.w
			f.mu.Unlock()
			if len(pkts) > 0 {
				_, _ = w.Write(pkts, nil) // fails only once the connection is closing
			}
		}
	}
}

// Close stops the reports.
func (f *twccFeedback) Close() error {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		close(f.done)
	}
	f.mu.Unlock()
	f.wg.Wait()
	return nil
}
