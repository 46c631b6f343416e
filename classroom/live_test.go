package classroom_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/campusedge/campusedge/cmd/edged/appliance/appliancetest"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/logtest"
	"github.com/campusedge/campusedge/edge/metricstest"
)

// edge is a real edged started in-process, on loopback (startEdge) or on
// a LAN address over HTTPS (startLANEdge).
type edge struct {
	url    string
	plain  string // the plain HTTP side (url, unless startLANEdge moved url to HTTPS)
	admin  string
	log    *logtest.Buffer
	client *http.Client       // for url; http.DefaultClient when nil
	tls    *appliancetest.TLS // the HTTPS side, when edged serves it
	// dial, when set, makes the control channel's connections (a host in
	// a network namespace); net.Dialer's otherwise.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func startEdge(t *testing.T, ctx context.Context) *edge {
	t.Helper()
	return startEdgeAt(t, ctx, "127.0.0.1:0", &logtest.Buffer{})
}

// startEdgeLog is startEdge logging (at debug level) to logBuf.
func startEdgeLog(t *testing.T, ctx context.Context, logBuf *logtest.Buffer) *edge {
	return startEdgeAt(t, ctx, "127.0.0.1:0", logBuf)
}

// startEdgeAt starts edged with -listen listen, logging to logBuf (shown
// if the test fails); e.url is its plain HTTP side and e.tls its HTTPS side.
func startEdgeAt(t *testing.T, ctx context.Context, listen string, logBuf *logtest.Buffer, tune ...func(*config.Config)) *edge {
	t.Helper()
	cfg := appliancetest.Config(t)
	cfg.Listen = listen
	for _, f := range tune {
		f(&cfg)
	}
	t.Cleanup(func() { // runs after edged stopped: the log is whole
		if t.Failed() {
			t.Logf("edged log:\n%s", logBuf.String())
		}
	})
	a := appliancetest.Start(ctx, t, cfg, slog.New(slog.NewTextHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return &edge{url: a.URL, plain: a.URL, admin: a.Admin, log: logBuf, tls: a.HTTPS}
}

func (e *edge) Do(t testing.TB, ctx context.Context, method, path, token, ctype string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	c := e.client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

type createResp struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Tokens struct {
		Master   string `json:"master"`
		Observer string `json:"observer"`
		Cascade  string `json:"cascade"`
	} `json:"tokens"`
}

func (e *edge) createSession(t *testing.T, ctx context.Context, title string) createResp {
	t.Helper()
	resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions", e.admin, "application/json", []byte(`{"title":"`+title+`"}`))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create session: %d %s", resp.StatusCode, b)
	}
	var cr createResp
	if err := json.Unmarshal(b, &cr); err != nil {
		t.Fatal(err)
	}
	return cr
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWHIPPublishWHEPWatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createUnrecorded(t, ctx, "Physics 8A") // checks the PLIs subscribers cause
	other := e.createSession(t, ctx, "Other class")

	// Before anyone publishes, watching is refused with a clear error.
	{
		pc, err := mediatest.LoopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
		o := mediatest.Offer(t, ctx, pc)
		if resp, b := e.Do(t, ctx, "POST", "/whep/"+s.ID, s.Tokens.Observer, "application/sdp", o); resp.StatusCode != http.StatusConflict || !strings.Contains(string(b), "no_publisher") {
			t.Fatalf("WHEP before publish: %d %s", resp.StatusCode, b)
		}
		// Wrong tokens and bad bodies on WHIP.
		cases := []struct {
			name, path, token, ctype string
			body                     []byte
			code                     int
		}{
			{"no token", "/whip/" + s.ID, "", "application/sdp", o, 401},
			{"unknown token", "/whip/" + s.ID, "nope", "application/sdp", o, 401},
			{"observer publishes", "/whip/" + s.ID, s.Tokens.Observer, "application/sdp", o, 403},
			{"other session's master", "/whip/" + s.ID, other.Tokens.Master, "application/sdp", o, 403},
			{"wrong content type", "/whip/" + s.ID, s.Tokens.Master, "application/json", o, 415},
			{"garbage sdp", "/whip/" + s.ID, s.Tokens.Master, "application/sdp", []byte("hello"), 400},
			{"broken sdp", "/whip/" + s.ID, s.Tokens.Master, "application/sdp", []byte("v=0\r\nm=video junk\r\n"), 400},
			{"oversized sdp", "/whip/" + s.ID, s.Tokens.Master, "application/sdp", append([]byte("v=0\r\n"), bytes.Repeat([]byte("a=x\r\n"), 20<<10)...), 413},
			{"junk session id", "/whip/xyz", s.Tokens.Master, "application/sdp", o, 404},
			{"whep other session's token", "/whep/" + s.ID, other.Tokens.Observer, "application/sdp", o, 403},
		}
		for _, c := range cases {
			if resp, b := e.Do(t, ctx, "POST", c.path, c.token, c.ctype, c.body); resp.StatusCode != c.code || !bytes.Contains(b, []byte(`"error"`)) {
				t.Errorf("%s: %d %s, want %d", c.name, resp.StatusCode, b, c.code)
			}
		}
	}

	pub := mediatest.Publish(t, ctx, e, s.ID, s.Tokens.Master)
	// A WHIP publish starts the session.
	if resp, b := e.Do(t, ctx, "GET", "/api/v1/sessions/"+s.ID, e.admin, "", nil); resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"state":"live"`)) {
		t.Fatalf("session after WHIP: %d %s", resp.StatusCode, b)
	}
	// A second publisher is refused while the first is live.
	{
		pc, err := mediatest.LoopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			t.Fatal(err)
		}
		if resp, b := e.Do(t, ctx, "POST", "/whip/"+s.ID, s.Tokens.Master, "application/sdp", mediatest.Offer(t, ctx, pc)); resp.StatusCode != http.StatusConflict {
			t.Errorf("second WHIP: %d %s", resp.StatusCode, b)
		}
	}

	subA := mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Observer)
	subB := mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Master)
	more := []*mediatest.Subscriber{mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Observer), mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Observer)}
	const n = 100 // 0.5 s of packets
	waitFor(t, 10*time.Second, "all four subscribers to receive video and audio", func() bool {
		ok := subA.Got.Load() > n && subB.Got.Load() > n && subA.Audio.Load() > n/4 && subB.Audio.Load() > n/4
		for _, m := range more {
			ok = ok && m.Got.Load() > n && m.Audio.Load() > n/4
		}
		return ok
	})
	for i, m := range more {
		if m.Bad.Load() != 0 {
			t.Errorf("subscriber %d: %d payloads differ from what was sent", i+3, m.Bad.Load())
		}
		_ = m.PC.Close()
	}
	if subA.FirstKey.Load() == 0 || subB.FirstKey.Load() == 0 {
		t.Error("a subscriber got no keyframe")
	}

	// A late joiner gets a keyframe within 1 s (from the edge's cache of
	// the current group of pictures, or by a PLI to the publisher, which
	// sends keyframes only when asked; TestKeyframeCache separates the two).
	time.Sleep(600 * time.Millisecond) // past the PLI rate limit
	joined := time.Now()
	subC := mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Observer)
	waitFor(t, 5*time.Second, "the late joiner's first keyframe", func() bool { return subC.FirstKey.Load() != 0 })
	if d := time.Duration(subC.FirstKey.Load() - joined.UnixNano()); d > time.Second {
		t.Errorf("late joiner's first keyframe after %v, want ≤ 1s", d)
	} else {
		t.Logf("late joiner: first keyframe %v after its WHEP POST", d.Round(time.Millisecond))
	}

	// The edge's metrics show the forwarding.
	if resp, b := e.Do(t, ctx, "GET", "/metrics", "", "", nil); resp.StatusCode != 200 ||
		!bytes.Contains(b, []byte("campusedge_live_subscribers 3")) || !bytes.Contains(b, []byte("campusedge_live_publishers 1")) ||
		!bytes.Contains(b, []byte("campusedge_live_forwarded_packets_total ")) {
		t.Errorf("metrics: %d\n%s", resp.StatusCode, metricstest.Grep(b, "campusedge_live"))
	}

	// B stalls: A keeps receiving at full rate (what the publisher sends).
	subB.Stall.Store(true)
	if g, sent := mediatest.KeptUp(subA, pub, time.Second); float64(g) < mediatest.FullRate*float64(sent) {
		t.Errorf("while B stalls, A got %d of the %d packets sent in 1s", g, sent)
	}
	// B vanishes without a DELETE: A keeps receiving, and the edge drops B.
	_ = subB.PC.Close()
	if g, sent := mediatest.KeptUp(subA, pub, time.Second); float64(g) < mediatest.FullRate*float64(sent) {
		t.Errorf("after B closed, A got %d of the %d packets sent in 1s", g, sent)
	}
	bID := subB.Location[strings.LastIndex(subB.Location, "/")+1:]
	waitFor(t, 12*time.Second, "the edge to remove the vanished subscriber", func() bool {
		return strings.Contains(e.log.String(), "subscriber left") && strings.Contains(e.log.String(), bID)
	})
	if subA.Bad.Load() != 0 || subB.Bad.Load() != 0 {
		t.Errorf("payloads differing from what was sent: A %d, B %d", subA.Bad.Load(), subB.Bad.Load())
	}

	// DELETE on the WHEP Location needs a token of the session; the
	// publisher's resource cannot be deleted through /whep.
	if resp, b := e.Do(t, ctx, "DELETE", subA.Location, "", "", nil); resp.StatusCode != 401 {
		t.Errorf("DELETE WHEP without a token: %d %s", resp.StatusCode, b)
	}
	pubID := pub.Location[strings.LastIndex(pub.Location, "/")+1:]
	if resp, b := e.Do(t, ctx, "DELETE", "/whep/"+s.ID+"/"+pubID, s.Tokens.Observer, "", nil); resp.StatusCode != 404 {
		t.Errorf("DELETE publisher through /whep: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.Do(t, ctx, "DELETE", pub.Location, s.Tokens.Observer, "", nil); resp.StatusCode != 403 {
		t.Errorf("observer DELETE on WHIP: %d %s", resp.StatusCode, b)
	}

	// DELETE on the WHIP Location ends publishing: A stops receiving and
	// new watchers are told nobody is publishing.
	if resp, b := e.Do(t, ctx, "DELETE", pub.Location, s.Tokens.Master, "", nil); resp.StatusCode != 200 {
		t.Fatalf("DELETE WHIP: %d %s", resp.StatusCode, b)
	}
	time.Sleep(200 * time.Millisecond) // packets in flight
	if g := mediatest.Gain(subA, 500*time.Millisecond); g > 5 {
		t.Errorf("A still got %d packets after the WHIP DELETE", g)
	}
	if resp, b := e.Do(t, ctx, "DELETE", pub.Location, s.Tokens.Master, "", nil); resp.StatusCode != 404 {
		t.Errorf("second DELETE WHIP: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.Do(t, ctx, "PATCH", subA.Location, s.Tokens.Observer, "application/trickle-ice-sdpfrag", []byte("a=x")); resp.StatusCode != 405 {
		t.Errorf("PATCH (trickle): %d %s", resp.StatusCode, b)
	}
}

func TestSessionEndClosesMedia(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createSession(t, ctx, "History 7B")
	mediatest.PublishCodec(t, ctx, e, s.ID, s.Tokens.Master, webrtc.MimeTypeH264) // as OBS sends
	sub := mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Observer)
	waitFor(t, 10*time.Second, "H264 and Opus packets", func() bool { return sub.Got.Load() > 20 && sub.Audio.Load() > 5 })
	if mime := sub.VideoMime.Load(); mime == nil || !strings.EqualFold(*mime, webrtc.MimeTypeH264) {
		t.Errorf("subscriber's video codec %v, want H264", mime)
	}
	if resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions/"+s.ID+"/end", s.Tokens.Observer, "", nil); resp.StatusCode != 403 {
		t.Fatalf("observer ends: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions/"+s.ID+"/end", s.Tokens.Master, "", nil); resp.StatusCode != 200 {
		t.Fatalf("master ends: %d %s", resp.StatusCode, b)
	}
	time.Sleep(200 * time.Millisecond)
	if g := mediatest.Gain(sub, 500*time.Millisecond); g > 5 {
		t.Errorf("still %d packets after the session ended", g)
	}
	pc, err := mediatest.LoopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	if resp, b := e.Do(t, ctx, "POST", "/whip/"+s.ID, s.Tokens.Master, "application/sdp", mediatest.Offer(t, ctx, pc)); resp.StatusCode != http.StatusConflict || !bytes.Contains(b, []byte("session_ended")) {
		t.Fatalf("WHIP to an ended session: %d %s", resp.StatusCode, b)
	}
}

func TestVanishedSubscriberIsRemoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createSession(t, ctx, "Chemistry 9C")
	pub := mediatest.Publish(t, ctx, e, s.ID, s.Tokens.Master)
	stay := mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Observer)

	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pc, err := mediatest.VanishingAPI(t, conn).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			got.Add(1)
		}
	})
	resp, body := e.Do(t, ctx, "POST", "/whep/"+s.ID, s.Tokens.Observer, "application/sdp", mediatest.Offer(t, ctx, pc))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHEP: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "both subscribers to receive", func() bool { return got.Load() > 50 && stay.Got.Load() > 50 })

	vanished := time.Now()
	_ = conn.Close()
	id := loc[strings.LastIndex(loc, "/")+1:]
	waitFor(t, 15*time.Second, "the edge to remove the vanished subscriber", func() bool {
		for _, l := range strings.Split(e.log.String(), "\n") {
			if strings.Contains(l, "subscriber left") && strings.Contains(l, id) {
				return true
			}
		}
		return false
	})
	t.Logf("vanished subscriber removed %v after it went silent", time.Since(vanished).Round(100*time.Millisecond))
	if g, sent := mediatest.KeptUp(stay, pub, time.Second); float64(g) < mediatest.FullRate*float64(sent) {
		t.Errorf("the other subscriber got %d of the %d packets sent in 1s after the removal", g, sent)
	}
	// Its resource is gone.
	if resp, b := e.Do(t, ctx, "DELETE", loc, s.Tokens.Observer, "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE of the removed subscriber: %d %s", resp.StatusCode, b)
	}
}

// TestNACKAndTWCC: a subscriber's NACK is answered by the edge from its own
// packet cache (the publisher never sees it), and the edge's RTP to a
// subscriber carries the transport-wide sequence numbers TWCC feedback
// needs, the feedback being negotiated in the answer.
func TestNACKAndTWCC(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createSession(t, ctx, "Music 5")
	pub := mediatest.Publish(t, ctx, e, s.ID, s.Tokens.Master)

	// Count, below pion's receiver, every packet on a stream other than
	// the media one: the retransmissions (RTX, RFC 4588) carrying the
	// original sequence number in their first two payload bytes.
	rtx := &rtxCounter{osn: map[uint16]int{}}
	pc, err := rtxAPI(t, rtx).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		mu    sync.Mutex
		count map[uint16]int
		total int
		last  uint16
	}
	got := &seen{count: map[uint16]int{}}
	ssrc := make(chan webrtc.SSRC, 1)
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		ssrc <- tr.SSRC()
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			got.mu.Lock()
			got.count[pkt.SequenceNumber]++
			got.total++
			got.last = pkt.SequenceNumber
			got.mu.Unlock()
		}
	})
	resp, body := e.Do(t, ctx, "POST", "/whep/"+s.ID, s.Tokens.Observer, "application/sdp", mediatest.Offer(t, ctx, pc))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHEP: %d %s", resp.StatusCode, body)
	}
	if !bytes.Contains(body, []byte("transport-cc")) || !bytes.Contains(body, []byte("nack")) {
		t.Errorf("the WHEP answer negotiates no transport-cc or nack feedback:\n%s", body)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	var media webrtc.SSRC
	select {
	case media = <-ssrc:
	case <-ctx.Done():
		t.Fatal("no track")
	}
	waitFor(t, 10*time.Second, "100 packets", func() bool { got.mu.Lock(); defer got.mu.Unlock(); return got.total > 100 })

	// Ask again for ten packets received a moment ago (a real loss is
	// noticed within a few packets, well inside the cache).
	got.mu.Lock()
	var want []uint16
	for sq := got.last - 5; len(want) < 10; sq-- {
		if got.count[sq] == 1 {
			want = append(want, sq)
		}
	}
	got.mu.Unlock()
	rtx.media.Store(uint32(media))
	// Like a receiver's NACK generator, repeat the NACK for what is still
	// missing every 200 ms.
	go func() {
		for ctx.Err() == nil {
			var missing []uint16
			rtx.mu.Lock()
			for _, sq := range want {
				if rtx.osn[sq] == 0 {
					missing = append(missing, sq)
				}
			}
			rtx.mu.Unlock()
			if len(missing) == 0 {
				return
			}
			_ = pc.WriteRTCP([]rtcp.Packet{&rtcp.TransportLayerNack{MediaSSRC: uint32(media), Nacks: rtcp.NackPairsFromSequenceNumbers(missing)}})
			time.Sleep(200 * time.Millisecond)
		}
	}()
	defer func() {
		if t.Failed() {
			rtx.mu.Lock()
			t.Logf("NACKed %v; retransmissions seen (by original sequence number) %v", want, rtx.osn)
			rtx.mu.Unlock()
		}
	}()
	waitFor(t, 5*time.Second, "the NACKed packets to be sent again", func() bool {
		rtx.mu.Lock()
		defer rtx.mu.Unlock()
		for _, sq := range want {
			if rtx.osn[sq] == 0 {
				return false
			}
		}
		return true
	})
	// The subscriber's TWCC feedback and the NACK reach the edge.
	var metrics []byte
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, metrics = e.Do(t, ctx, "GET", "/metrics", "", "", nil)
		if metricstest.Value(metrics, "campusedge_live_twcc_reports_total") > 0 && metricstest.Value(metrics, "campusedge_live_nacks_total") >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TWCC reports or NACK counted by the edge:\n%s", metricstest.Grep(metrics, "campusedge_live"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := pub.NACKs.Load(); n != 0 {
		t.Errorf("the publisher got %d NACKs: the edge should answer from its cache", n)
	}
}

// rtxCounter is an interceptor counting retransmitted packets by their
// original sequence number.
type rtxCounter struct {
	interceptor.NoOp
	media atomic.Uint32
	mu    sync.Mutex
	osn   map[uint16]int
}

func (c *rtxCounter) NewInterceptor(string) (interceptor.Interceptor, error) { return c, nil }

func (c *rtxCounter) BindRemoteStream(info *interceptor.StreamInfo, r interceptor.RTPReader) interceptor.RTPReader {
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, a, err := r.Read(b, a)
		if err != nil {
			return n, a, err
		}
		var h rtp.Header
		if hn, e := h.Unmarshal(b[:n]); e == nil && h.SSRC != c.media.Load() && c.media.Load() != 0 && n >= hn+2 {
			c.mu.Lock()
			c.osn[binary.BigEndian.Uint16(b[hn:])]++
			c.mu.Unlock()
		}
		return n, a, err
	})
}

func rtxAPI(t *testing.T, c *rtxCounter) *webrtc.API {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		t.Fatal(err)
	}
	ir.Add(c)
	var se webrtc.SettingEngine
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) })
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
}

// throttledConn is a subscriber's socket behind a weak link: while limited,
// RTP datagrams beyond rate bytes/s are lost (ICE and DTLS get through, so
// the test sees congestion rather than a dead link).
type throttledConn struct {
	net.PacketConn
	limited atomic.Bool
	rate    float64
	mu      sync.Mutex
	tokens  float64
	last    time.Time
}

func (c *throttledConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := c.PacketConn.ReadFrom(b)
		if err != nil || !c.limited.Load() || n < 2 || b[0] < 128 || b[0] > 191 || (b[1] >= 192 && b[1] <= 223) {
			return n, a, err
		}
		c.mu.Lock()
		now := time.Now()
		c.tokens = min(c.tokens+now.Sub(c.last).Seconds()*c.rate, c.rate/10)
		c.last = now
		ok := c.tokens >= float64(n)
		if ok {
			c.tokens -= float64(n)
		}
		c.mu.Unlock()
		if ok {
			return n, a, err
		}
	}
}

// TestWeakLinkKeepsAudio: a subscriber whose link loses most packets has
// its video paused by the edge (from its TWCC feedback) and keeps the
// audio; the other subscriber is untouched; when the link recovers, a
// probe brings the video back.
func TestWeakLinkKeepsAudio(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createSession(t, ctx, "Art 6")
	pub := mediatest.Publish(t, ctx, e, s.ID, s.Tokens.Master) // ~1 Mbit/s video + Opus
	good := mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Observer)

	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	link := &throttledConn{PacketConn: udp, rate: 300e3 / 8, last: time.Now()}
	pc, err := mediatest.VanishingAPI(t, link).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	var video, audio atomic.Int64
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		n := &video
		if tr.Kind() == webrtc.RTPCodecTypeAudio {
			n = &audio
		}
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			n.Add(1)
		}
	})
	resp, body := e.Do(t, ctx, "POST", "/whep/"+s.ID, s.Tokens.Observer, "application/sdp", mediatest.Offer(t, ctx, pc))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHEP: %d %s", resp.StatusCode, body)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the weak subscriber's first packets", func() bool { return video.Load() > 50 && audio.Load() > 10 })

	metric := func(name string) float64 {
		_, b := e.Do(t, ctx, "GET", "/metrics", "", "", nil)
		return metricstest.Value(b, name)
	}
	link.limited.Store(true) // 300 kbit/s for ~1 Mbit/s of media
	waitFor(t, 10*time.Second, "the edge to pause the weak subscriber's video", func() bool { return metric("campusedge_live_video_pauses_total") >= 1 })
	time.Sleep(300 * time.Millisecond) // queued packets drain
	v0, a0, g0 := video.Load(), audio.Load(), good.Got.Load()
	sv0, sa0 := pub.SentVideo.Load(), pub.SentAudio.Load()
	time.Sleep(2 * time.Second)
	sv, sa := pub.SentVideo.Load()-sv0, pub.SentAudio.Load()-sa0
	if dv := video.Load() - v0; dv > 20 {
		t.Errorf("weak subscriber still got %d video packets in 2s while paused", dv)
	}
	if da := audio.Load() - a0; float64(da) < 0.8*float64(sa) {
		t.Errorf("weak subscriber got %d of the %d audio packets sent in 2s: audio must go on", da, sa)
	}
	if dg := good.Got.Load() - g0; float64(dg) < mediatest.FullRate*float64(sv) {
		t.Errorf("the other subscriber got %d of the %d video packets sent in 2s", dg, sv)
	}

	link.limited.Store(false) // the link recovers: a probe brings video back
	waitFor(t, 15*time.Second, "the weak subscriber's video to resume", func() bool {
		v := video.Load()
		time.Sleep(500 * time.Millisecond)
		return metric("campusedge_live_video_resumes_total") >= 1 && video.Load()-v > 60
	})
}

// TestH264HighProfileToBrowser: OBS's default H264 High profile cannot go
// to a browser that decodes only Baseline; the watcher gets an error that
// says what to change, and the edge's log warns at publish time.
func TestH264HighProfileToBrowser(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createSession(t, ctx, "Drama 10")
	mediatest.PublishFmtp(t, ctx, e, s.ID, s.Tokens.Master, webrtc.MimeTypeH264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f")
	waitFor(t, 5*time.Second, "the edge's warning about the profile", func() bool {
		return strings.Contains(e.log.String(), "profile browsers do not decode")
	})

	// A "browser": H264 Constrained Baseline and Opus only.
	me := &webrtc.MediaEngine{}
	for _, c := range []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, PayloadType: 102},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, PayloadType: 111},
	} {
		typ := webrtc.RTPCodecTypeVideo
		if c.MimeType == webrtc.MimeTypeOpus {
			typ = webrtc.RTPCodecTypeAudio
		}
		if err := me.RegisterCodec(c, typ); err != nil {
			t.Fatal(err)
		}
	}
	var se webrtc.SettingEngine
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) })
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	resp, body := e.Do(t, ctx, "POST", "/whep/"+s.ID, s.Tokens.Observer, "application/sdp", mediatest.Offer(t, ctx, pc))
	if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("baseline")) {
		t.Fatalf("WHEP of H264 High by a Baseline-only client: %d %s", resp.StatusCode, body)
	}
}

// TestKeyframeCache: a publisher that, like OBS, ignores keyframe requests
// and sends a keyframe every 3 s; a classroom joining just after one still
// shows the picture within a second, from the edge's cached group of
// pictures.
func TestKeyframeCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createUnrecorded(t, ctx, "Latin 11") // counts the PLIs subscribers cause
	pub := mediatest.Publish(t, ctx, e, s.ID, s.Tokens.Master)
	pub.IgnorePLI.Store(true)
	pub.KeyEvery.Store(600) // 200 packets/s: every 3 s
	first := mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Observer)
	waitFor(t, 10*time.Second, "the first subscriber's packets", func() bool { return first.Got.Load() > 100 })
	// The first subscriber only shows the lesson flows (and is cached).
	// It leaves before the late join: on a loaded machine its loopback
	// link can look lossy, and the keyframe it is then rightly sent after
	// a pause would be counted below as one for the late joiner. A
	// coalesced request of its own goes out within one PLI interval.
	if err := first.PC.Close(); err != nil {
		t.Fatal(err)
	}
	left := time.Now()

	// Join 0.2-0.8 s after a periodic keyframe (not the first one: it went
	// out before the connection was up), so the next is over 2 s away.
	// The publisher says when it sent one: its 5 ms ticker lags on a
	// loaded machine, so a wall-clock phase would drift.
	for {
		since := time.Since(time.Unix(0, pub.LastKey.Load()))
		if pub.Keys.Load() >= 2 && since > 200*time.Millisecond && since < 800*time.Millisecond && time.Since(left) > 2*sfu.DefaultPLIInterval {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	plis := pub.PLIs.Load()
	joined := time.Now()
	late := mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Observer)
	waitFor(t, 5*time.Second, "the late joiner's first keyframe", func() bool { return late.FirstKey.Load() != 0 })
	if d := time.Duration(late.FirstKey.Load() - joined.UnixNano()); d > time.Second {
		t.Errorf("late joiner's first keyframe after %v, want ≤ 1s from the cache", d)
	} else {
		t.Logf("late joiner: first keyframe %v after its WHEP POST (publisher ignores PLIs)", d.Round(time.Millisecond))
	}
	if pub.PLIs.Load() != plis {
		t.Errorf("the edge sent %d PLIs although its cache had the keyframe", pub.PLIs.Load()-plis)
	}
	waitFor(t, 5*time.Second, "the late joiner to keep receiving", func() bool { return late.Got.Load() > 200 })
	if late.Bad.Load() != 0 {
		t.Errorf("late joiner: %d payloads differ", late.Bad.Load())
	}
}
