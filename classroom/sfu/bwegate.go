// The estimator gate: pion's gcc estimator sees every packet the edge
// sends a subscriber and every RTCP report it returns, and that costs about
// a quarter more CPU per forwarded packet (TestBenchLiveClass, N=40). It is
// only worth paying where there is a layer to choose, so every subscriber
// connection gets the estimator behind a gate that starts shut: packets
// and reports go straight past it until the subscriber receives a
// simulcast track (chooseOnce opens it). A class whose publisher sends one
// layer (OBS, GStreamer, a single-layer page) never pays for it.

package sfu

import (
	"sync/atomic"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/rtp"
)

// bweGate is the estimator's interceptor on one connection, bypassed while
// shut.
type bweGate struct {
	interceptor.Interceptor // the cc interceptor (gcc)
	bwe                     cc.BandwidthEstimator
	open                    atomic.Bool
}

// bweGateFactory makes a gated cc interceptor per connection and hands
// it to onNew (called inside NewPeerConnection).
type bweGateFactory struct {
	inner *cc.InterceptorFactory
	last  cc.BandwidthEstimator // set by inner's callback, read at once
	onNew func(*bweGate)
}

func newBWEGateFactory(inner *cc.InterceptorFactory, onNew func(*bweGate)) *bweGateFactory {
	f := &bweGateFactory{inner: inner, onNew: onNew}
	// The factory's callback runs inside inner.NewInterceptor, on the
	// same goroutine, just before it returns: last is read right after.
	inner.OnNewPeerConnection(func(_ string, e cc.BandwidthEstimator) { f.last = e })
	return f
}

// NewInterceptor wraps a new cc interceptor in a shut gate. pion calls it
// from NewPeerConnection, which the SFU serializes (newSubscriberPC).
func (f *bweGateFactory) NewInterceptor(id string) (interceptor.Interceptor, error) {
	f.last = nil
	in, err := f.inner.NewInterceptor(id)
	if err != nil {
		return nil, err
	}
	g := &bweGate{Interceptor: in, bwe: f.last}
	f.onNew(g)
	return g, nil
}

// BindRTCPReader passes reports to the estimator only while open.
func (g *bweGate) BindRTCPReader(reader interceptor.RTCPReader) interceptor.RTCPReader {
	through := g.Interceptor.BindRTCPReader(reader)
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		if g.open.Load() {
			return through.Read(b, a)
		}
		return reader.Read(b, a)
	})
}

// BindLocalStream records packets in the estimator only while open.
// Feedback about packets sent while shut names sequence numbers the
// estimator never saw, which it skips.
func (g *bweGate) BindLocalStream(info *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	through := g.Interceptor.BindLocalStream(info, writer)
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if g.open.Load() {
			return through.Write(h, payload, a)
		}
		return writer.Write(h, payload, a)
	})
}

// estimator returns the estimator when the gate is open, else nil.
func (g *bweGate) estimator() cc.BandwidthEstimator {
	if g == nil || !g.open.Load() {
		return nil
	}
	return g.bwe
}

var (
	_ interceptor.Factory     = (*bweGateFactory)(nil)
	_ interceptor.Interceptor = (*bweGate)(nil)
)
