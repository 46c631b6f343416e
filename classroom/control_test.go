package classroom_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/gorilla/websocket"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// classSession is a session reaching real classrooms of the edge.
type classSession struct {
	ID         string
	Classrooms []string
	Tokens     struct {
		Master     string `json:"master"`
		Observer   string `json:"observer"`
		Cascade    string `json:"cascade"`
		Classrooms map[string]struct {
			Assistant string `json:"assistant"`
			Terminal  string `json:"terminal"`
		} `json:"classrooms"`
	}
}

func (e *edge) createClass(t *testing.T, ctx context.Context, title string, nClassrooms int) classSession {
	t.Helper()
	var ids []string
	for i := range nClassrooms {
		body := fmt.Sprintf(`{"name":"Room %d","room_code":"R%d-%d"}`, i, i, time.Now().UnixNano()%1e6)
		resp, b := e.Do(t, ctx, "POST", "/api/v1/classrooms", e.admin, "application/json", []byte(body))
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("create classroom: %d %s", resp.StatusCode, b)
		}
		var c struct{ ID string }
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.ID)
	}
	return e.createClassIn(t, ctx, title, ids)
}

// createClassIn creates a session reaching the classrooms ids.
func (e *edge) createClassIn(t *testing.T, ctx context.Context, title string, ids []string) classSession {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"title": title, "classrooms": ids})
	resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions", e.admin, "application/json", req)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create session: %d %s", resp.StatusCode, b)
	}
	var s classSession
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	var withTokens struct {
		Tokens json.RawMessage `json:"tokens"`
	}
	_ = json.Unmarshal(b, &withTokens)
	if err := json.Unmarshal(withTokens.Tokens, &s.Tokens); err != nil {
		t.Fatal(err)
	}
	s.Classrooms = ids
	return s
}

// msg is one control message as received.
type msg map[string]any

func (m msg) str(k string) string { s, _ := m[k].(string); return s }

// ctl is a control-channel client: a real WebSocket to the edge that
// records every message; offers for the subscribe connection go to onOffer.
type ctl struct {
	ws      *websocket.Conn
	wmu     sync.Mutex
	mu      sync.Mutex
	got     []msg
	used    []bool
	closed  chan struct{}
	onOffer atomic.Pointer[func(sdp string)]
	seq     atomic.Int64
}

func dialCtl(t *testing.T, ctx context.Context, e *edge, token string) (*ctl, msg) {
	t.Helper()
	d := websocket.DefaultDialer
	if e.dial != nil {
		d = &websocket.Dialer{NetDialContext: e.dial, HandshakeTimeout: 10 * time.Second}
		if tr, ok := e.client.Transport.(*http.Transport); ok {
			d.TLSClientConfig = tr.TLSClientConfig // wss: the edge's pinned key
		}
	}
	ws, _, err := d.DialContext(ctx, "ws"+strings.TrimPrefix(e.url, "http")+"/api/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	c := &ctl{ws: ws, closed: make(chan struct{})}
	go func() {
		defer close(c.closed)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var m msg
			if json.Unmarshal(data, &m) != nil {
				continue
			}
			if m.str("type") == "offer" {
				if f := c.onOffer.Load(); f != nil {
					go (*f)(m.str("sdp"))
					continue
				}
			}
			c.mu.Lock()
			c.got = append(c.got, m)
			c.used = append(c.used, false)
			c.mu.Unlock()
		}
	}()
	c.send(t, map[string]any{"type": "hello", "v": 1, "token": token})
	w := c.wait(t, "welcome", func(m msg) bool { return m.str("type") == "welcome" || m.str("type") == "error" })
	return c, w
}

func (c *ctl) send(t *testing.T, v any) {
	t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteJSON(v); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func (c *ctl) sendRaw(t *testing.T, data []byte) {
	t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.TextMessage, data); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// wait returns the first not yet consumed message matching pred.
func (c *ctl) wait(t *testing.T, what string, pred func(msg) bool) msg {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for i, m := range c.got {
			if !c.used[i] && pred(m) {
				c.used[i] = true
				c.mu.Unlock()
				return m
			}
		}
		c.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Fatalf("no %s within 10s; received %v", what, c.got)
	return nil
}

// request sends a message with a fresh id and returns the ack, error or
// answer carrying that id.
func (c *ctl) request(t *testing.T, m map[string]any) msg {
	t.Helper()
	id := fmt.Sprintf("r%d", c.seq.Add(1))
	m["v"], m["id"] = 1, id
	c.send(t, m)
	return c.wait(t, "reply to "+m["type"].(string), func(r msg) bool { return r.str("id") == id })
}

// lastState is the newest state message received.
func (c *ctl) lastState() msg {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.got) - 1; i >= 0; i-- {
		if c.got[i].str("type") == "state" {
			return c.got[i]
		}
	}
	return nil
}

func errCode(m msg) string {
	if m.str("type") != "error" {
		return ""
	}
	return m.str("code")
}

func TestControlRoles(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createClass(t, ctx, "Maths 7", 2)
	a, b := s.Classrooms[0], s.Classrooms[1]
	tokens := map[string]string{
		"master":    s.Tokens.Master,
		"assistant": s.Tokens.Classrooms[a].Assistant,
		"terminal":  s.Tokens.Classrooms[a].Terminal,
		"observer":  s.Tokens.Observer,
	}
	conns := map[string]*ctl{}
	for role, tok := range tokens {
		c, w := dialCtl(t, ctx, e, tok)
		if w.str("type") != "welcome" || w.str("role") != role || w.str("session_id") != s.ID {
			t.Fatalf("%s welcome: %v", role, w)
		}
		if r := c.request(t, map[string]any{"type": "join", "name": role}); r.str("type") != "ack" {
			t.Fatalf("%s join: %v", role, r)
		}
		conns[role] = c
	}
	// A syntactically valid offer: publish must be refused before it is read.
	sdpOffer := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
	forbidden := []struct {
		role string
		m    map[string]any
	}{
		{"observer", map[string]any{"type": "publish", "sdp": sdpOffer}},
		{"observer", map[string]any{"type": "hand", "raised": true}},
		{"observer", map[string]any{"type": "stage", "classroom_id": a, "on": true}},
		{"observer", map[string]any{"type": "mute", "classroom_id": a, "muted": true}},
		{"observer", map[string]any{"type": "end"}},
		{"terminal", map[string]any{"type": "stage", "classroom_id": a, "on": true}},
		{"terminal", map[string]any{"type": "mute", "classroom_id": a, "muted": true}},
		{"terminal", map[string]any{"type": "end"}},
		{"terminal", map[string]any{"type": "hand", "raised": true, "classroom_id": b}},
		{"assistant", map[string]any{"type": "publish", "sdp": sdpOffer}},
		{"assistant", map[string]any{"type": "stage", "classroom_id": a, "on": true}},
		{"assistant", map[string]any{"type": "mute", "classroom_id": b, "muted": true}},
		{"assistant", map[string]any{"type": "end"}},
		{"assistant", map[string]any{"type": "hand", "raised": true, "classroom_id": b}},
		{"master", map[string]any{"type": "hand", "raised": true, "classroom_id": a}},
	}
	for _, f := range forbidden {
		typ := f.m["type"].(string)
		r := conns[f.role].request(t, f.m)
		if errCode(r) != "forbidden" || r.str("message") == "" {
			t.Errorf("%s %s: got %v, want a forbidden error", f.role, typ, r)
		}
	}
	// Another edge's cascade token is for WHEP/WHIP only.
	if cc, w := dialCtl(t, ctx, e, s.Tokens.Cascade); w.str("role") != "cascade" {
		t.Errorf("cascade welcome: %v", w)
	} else if r := cc.request(t, map[string]any{"type": "join"}); errCode(r) != "forbidden" {
		t.Errorf("cascade join: %v, want forbidden", r)
	}
	// Nothing forbidden took effect: the session is not ended, nobody is
	// on stage, no hand is up, nothing is muted.
	if resp, body := e.Do(t, ctx, "GET", "/api/v1/sessions/"+s.ID, e.admin, "", nil); !bytes.Contains(body, []byte(`"state":"created"`)) {
		t.Errorf("session after refused requests: %d %s", resp.StatusCode, body)
	}
	if st := conns["master"].lastState(); st == nil || st.str("stage") != "" || len(st["hands"].([]any)) != 0 || len(st["muted"].([]any)) != 0 {
		t.Errorf("state after refused requests: %v", st)
	}

	// What each role may do, it can.
	if r := conns["terminal"].request(t, map[string]any{"type": "hand", "raised": true}); r.str("type") != "ack" {
		t.Errorf("terminal raises hand: %v", r)
	}
	waitFor(t, 5*time.Second, "the master to see the raised hand", func() bool {
		st := conns["master"].lastState()
		return st != nil && fmt.Sprint(st["hands"]) == "["+a+"]" && len(st["participants"].([]any)) == 4
	})
	if r := conns["assistant"].request(t, map[string]any{"type": "mute", "classroom_id": a, "muted": true}); r.str("type") != "ack" {
		t.Errorf("assistant mutes own classroom: %v", r)
	}
	if r := conns["master"].request(t, map[string]any{"type": "stage", "classroom_id": a, "on": true}); r.str("type") != "ack" {
		t.Errorf("master invites on stage: %v", r)
	}
	waitFor(t, 5*time.Second, "the observer to see the stage and mute", func() bool {
		st := conns["observer"].lastState()
		return st != nil && st.str("stage") == a && fmt.Sprint(st["muted"]) == "["+a+"]" && fmt.Sprint(st["hands"]) == "[]"
	})
	if r := conns["master"].request(t, map[string]any{"type": "stage", "classroom_id": b, "on": false}); errCode(r) != "not_on_stage" {
		t.Errorf("stage back of a classroom not on stage: %v", r)
	}
	if r := conns["master"].request(t, map[string]any{"type": "end"}); r.str("type") != "ack" {
		t.Errorf("master ends: %v", r)
	}
	for role, c := range conns {
		c.wait(t, role+"'s ended message", func(m msg) bool { return m.str("type") == "ended" })
		select {
		case <-c.closed:
		case <-time.After(5 * time.Second):
			t.Errorf("%s's connection still open after the end", role)
		}
	}
	// A token of the ended session is told so at once.
	c, w := dialCtl(t, ctx, e, tokens["terminal"])
	if w.str("type") != "welcome" {
		t.Fatalf("welcome after end: %v", w)
	}
	c.wait(t, "ended", func(m msg) bool { return m.str("type") == "ended" })
}

func TestControlBadInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createClass(t, ctx, "Biology 9", 1)
	c, _ := dialCtl(t, ctx, e, s.Tokens.Master)

	// Before join, everything but join is out of order.
	if r := c.request(t, map[string]any{"type": "stage", "classroom_id": s.Classrooms[0], "on": true}); errCode(r) != "not_joined" {
		t.Errorf("stage before join: %v", r)
	}
	if r := c.request(t, map[string]any{"type": "join"}); r.str("type") != "ack" {
		t.Fatalf("join: %v", r)
	}
	cases := []struct {
		name string
		m    map[string]any
		code string
	}{
		{"join twice", map[string]any{"type": "join"}, "already_joined"},
		{"answer before subscribe", map[string]any{"type": "answer", "pc": "subscribe", "sdp": "v=0\r\n"}, "out_of_order"},
		{"candidate before publish", map[string]any{"type": "candidate", "pc": "publish", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}, "out_of_order"},
		{"unknown type", map[string]any{"type": "dance"}, "unknown_type"},
		{"unknown field", map[string]any{"type": "end", "force": true}, "bad_message"},
		{"wrong field type", map[string]any{"type": "hand", "raised": "yes"}, "bad_message"},
		{"garbage sdp", map[string]any{"type": "publish", "sdp": "hello"}, "bad_message"},
		{"broken sdp", map[string]any{"type": "publish", "sdp": "v=0\r\nm=video junk\r\n"}, "bad_sdp"},
		{"sdp without media", map[string]any{"type": "publish", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}, "bad_sdp"},
		{"bad pc", map[string]any{"type": "candidate", "pc": "both", "candidate": "x"}, "bad_message"},
		{"stage of a stranger", map[string]any{"type": "stage", "classroom_id": "c-nothere", "on": true}, "not_found"},
		{"stage without classroom", map[string]any{"type": "stage", "on": true}, "bad_message"},
	}
	for _, tc := range cases {
		if r := c.request(t, tc.m); errCode(r) != tc.code {
			t.Errorf("%s: got %v, want error %s", tc.name, r, tc.code)
		}
	}
	for _, raw := range []string{`not json`, `{"type":"join","v":2}`, `{"type":"JOIN","v":1}`, `[]`, `{"type":"join","v":1}{}`} {
		c.sendRaw(t, []byte(raw))
		if r := c.wait(t, "error for "+raw, func(m msg) bool { return m.str("type") == "error" && m.str("id") == "" }); r.str("code") != "bad_message" {
			t.Errorf("%s: %v", raw, r)
		}
	}
	// The connection still works after all that.
	if r := c.request(t, map[string]any{"type": "hand", "raised": false, "classroom_id": s.Classrooms[0]}); r.str("type") != "ack" {
		t.Errorf("valid request after bad ones: %v", r)
	}
	// A flood is rate limited (20 messages/s, bursts of 40). Fewer than
	// 64 replies, so the edge's send queue does not overflow: a client
	// that does not read its replies is disconnected instead.
	for i := range 50 {
		c.send(t, map[string]any{"type": "leave", "v": 1, "id": fmt.Sprintf("f%d", i)})
	}
	c.wait(t, "rate_limited", func(m msg) bool { return errCode(m) == "rate_limited" })
	// An oversized message closes the connection (the edge reads no more
	// than 64 KiB); the edge keeps serving others.
	// (The write itself may fail: the edge resets the connection as soon
	// as the limit is passed.)
	c.wmu.Lock()
	_ = c.ws.WriteMessage(websocket.TextMessage, append([]byte(`{"type":"publish","v":1,"sdp":"v=0`), bytes.Repeat([]byte("a"), 70<<10)...))
	c.wmu.Unlock()
	select {
	case <-c.closed:
	case <-time.After(5 * time.Second):
		t.Error("oversized message did not close the connection")
	}
	c2, w := dialCtl(t, ctx, e, s.Tokens.Observer)
	if w.str("type") != "welcome" {
		t.Fatalf("after the oversized message: %v", w)
	}
	if r := c2.request(t, map[string]any{"type": "join"}); r.str("type") != "ack" {
		t.Errorf("join after another client's oversized message: %v", r)
	}
	// Unknown tokens are refused.
	if _, w := dialCtl(t, ctx, e, "not-a-token"); errCode(w) != "unauthorized" {
		t.Errorf("unknown token: %v", w)
	}
}

// mediaPeer is a pion client of the control channel: it can publish a
// camera+mic (and later a screen) and receive what the edge offers.
type mediaPeer struct {
	t    *testing.T
	c    *ctl
	pub  *webrtc.PeerConnection
	sub  *webrtc.PeerConnection
	mu   sync.Mutex
	recv map[string]*atomic.Int64 // packets received per stream id (source) and kind
	bad  atomic.Int64
	plis atomic.Int64
	// Video packets written by this peer: on a loaded machine its 10 ms
	// ticker lags, so "packets in a second" is judged against these.
	sentVideo atomic.Int64
	tag       byte
	stopc     context.CancelFunc
	api       *webrtc.API // for subscribe; LoopbackAPI when nil
}

func newMediaPeer(t *testing.T, c *ctl, tag byte) *mediaPeer {
	return &mediaPeer{t: t, c: c, recv: map[string]*atomic.Int64{}, tag: tag}
}

// countPrefix sums the packets of every stream whose key starts with prefix.
func (p *mediaPeer) countPrefix(prefix string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n int64
	for k, v := range p.recv {
		if strings.HasPrefix(k, prefix) {
			n += v.Load()
		}
	}
	return n
}

func (p *mediaPeer) count(key string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.recv[key]; n != nil {
		return n.Load()
	}
	return 0
}

// taggedPayload is payloadFor with the sender's tag in its last byte, so a
// receiver knows whose camera it sees.
func taggedPayload(n uint64, key bool, tag byte) []byte {
	p := mediatest.PayloadFor(n, key)
	p[len(p)-1] = tag
	return p
}

// subscribe asks the edge for media and answers every offer it makes.
func (p *mediaPeer) subscribe(ctx context.Context) {
	t := p.t
	api := p.api
	if api == nil {
		api = mediatest.LoopbackAPI(t)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	p.sub = pc
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		key := tr.StreamID() + "/" + tr.Kind().String()
		p.mu.Lock()
		n := p.recv[key]
		if n == nil {
			n = &atomic.Int64{}
			p.recv[key] = n
		}
		p.mu.Unlock()
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if tr.Kind() == webrtc.RTPCodecTypeVideo {
				pl := pkt.Payload
				if len(pl) != mediatest.PayloadLen || !bytes.Equal(pl, taggedPayload(binary.BigEndian.Uint64(pl[7:15]), mediatest.IsKeyframe(pl), pl[len(pl)-1])) {
					p.bad.Add(1)
					continue
				}
			}
			n.Add(1)
		}
	})
	var negMu sync.Mutex
	f := func(sdp string) {
		negMu.Lock()
		defer negMu.Unlock()
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
			return
		}
		ans, err := pc.CreateAnswer(nil)
		if err != nil {
			return
		}
		done := webrtc.GatheringCompletePromise(pc)
		if pc.SetLocalDescription(ans) != nil {
			return
		}
		<-done
		p.c.wmu.Lock()
		_ = p.c.ws.WriteJSON(map[string]any{"type": "answer", "v": 1, "pc": "subscribe", "sdp": pc.LocalDescription().SDP})
		p.c.wmu.Unlock()
	}
	p.c.onOffer.Store(&f)
	if r := p.c.request(t, map[string]any{"type": "subscribe"}); r.str("type") != "ack" {
		t.Fatalf("subscribe: %v", r)
	}
}

// publish sends camera+mic through the control channel and keeps sending.
func (p *mediaPeer) publish(ctx context.Context) {
	t := p.t
	pc, err := mediatest.LoopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	p.pub = pc
	p.addTrack(ctx, "camera")
	audio, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "mic", "self")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(audio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for n := uint16(0); ctx.Err() == nil; n++ {
			<-tick.C
			_ = audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: n, Timestamp: uint32(n) * 960}, Payload: []byte{0xfc, 0xff, p.tag}})
		}
	}()
	p.negotiatePublish(ctx)
}

// addTrack adds a video track (camera, or a screen share mid-class) that
// sends a packet every 10 ms, a keyframe when asked by a PLI.
func (p *mediaPeer) addTrack(ctx context.Context, id string) {
	t := p.t
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, id, "self")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := p.pub.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		t.Fatal(err)
	}
	var needKey atomic.Bool
	needKey.Store(true)
	go func() {
		for {
			pkts, _, err := tr.Sender().ReadRTCP()
			if err != nil {
				return
			}
			for _, pk := range pkts {
				if _, ok := pk.(*rtcp.PictureLossIndication); ok {
					p.plis.Add(1)
					needKey.Store(true)
				}
			}
		}
	}()
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for n := uint64(0); ctx.Err() == nil; n++ {
			<-tick.C
			_ = track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, PayloadType: 96, SequenceNumber: uint16(n), Timestamp: uint32(n * 900)},
				Payload: taggedPayload(n, needKey.Swap(false), p.tag)})
			p.sentVideo.Add(1)
		}
	}()
}

// negotiatePublish offers the publish connection's current tracks.
func (p *mediaPeer) negotiatePublish(ctx context.Context) {
	t := p.t
	r := p.c.request(t, map[string]any{"type": "publish", "sdp": string(mediatest.Offer(t, ctx, p.pub))})
	if r.str("type") != "answer" || r.str("pc") != "publish" {
		t.Fatalf("publish: %v", r)
	}
	if err := p.pub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: r.str("sdp")}); err != nil {
		t.Fatal(err)
	}
}

func joinAs(t *testing.T, ctx context.Context, e *edge, token string, tag byte) *mediaPeer {
	t.Helper()
	c, w := dialCtl(t, ctx, e, token)
	if w.str("type") != "welcome" {
		t.Fatalf("welcome: %v", w)
	}
	if r := c.request(t, map[string]any{"type": "join"}); r.str("type") != "ack" {
		t.Fatalf("join: %v", r)
	}
	return newMediaPeer(t, c, tag)
}

// TestReturnVideoAndStage: the master teaches through the control channel;
// two classrooms publish camera+mic and watch. The master receives both
// classrooms; a classroom invited on stage reaches the other classroom and
// stops reaching it when sent back; a screen share added mid-class reaches
// the classrooms by renegotiation; a muted classroom's audio stops.
func TestReturnVideoAndStage(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createClass(t, ctx, "Geography 8", 2)
	a, b := s.Classrooms[0], s.Classrooms[1]
	srcA, srcB := "classroom:"+a, "classroom:"+b

	master := joinAs(t, ctx, e, s.Tokens.Master, 'M')
	master.publish(ctx)
	master.subscribe(ctx)
	roomA := joinAs(t, ctx, e, s.Tokens.Classrooms[a].Terminal, 'A')
	roomA.publish(ctx)
	roomA.subscribe(ctx)
	roomB := joinAs(t, ctx, e, s.Tokens.Classrooms[b].Terminal, 'B')
	roomB.publish(ctx)
	roomB.subscribe(ctx)

	waitFor(t, 15*time.Second, "the master to receive both classrooms and both classrooms the lesson", func() bool {
		return master.count(srcA+"/video") > 50 && master.count(srcB+"/video") > 50 &&
			master.count(srcA+"/audio") > 10 && master.count(srcB+"/audio") > 10 &&
			roomA.count("master/video") > 50 && roomB.count("master/video") > 50 && roomA.count("master/audio") > 10
	})
	if n := roomB.count(srcA + "/video"); n != 0 {
		t.Errorf("classroom B received %d packets of A before A was on stage", n)
	}
	if n := roomA.count(srcA + "/video"); n != 0 {
		t.Errorf("classroom A received its own camera back (%d packets)", n)
	}
	if st := master.c.lastState(); st == nil || st.str("session_state") != "live" {
		t.Errorf("the master publishing did not start the session: %v", st)
	}

	// A on stage: B (and only B) now receives A, by renegotiation.
	if r := master.c.request(t, map[string]any{"type": "stage", "classroom_id": a, "on": true}); r.str("type") != "ack" {
		t.Fatalf("stage: %v", r)
	}
	waitFor(t, 10*time.Second, "classroom B to receive A on stage", func() bool {
		return roomB.count(srcA+"/video") > 50 && roomB.count(srcA+"/audio") > 10
	})
	if n := roomA.count(srcA + "/video"); n != 0 {
		t.Errorf("classroom A on stage received itself (%d packets)", n)
	}
	// The master mutes A: A's audio stops everywhere, video goes on.
	if r := master.c.request(t, map[string]any{"type": "mute", "classroom_id": a, "muted": true}); r.str("type") != "ack" {
		t.Fatalf("mute: %v", r)
	}
	time.Sleep(700 * time.Millisecond) // the forwarder re-reads the mute twice a second
	audio0 := roomB.count(srcA + "/audio")
	if d, sent := gainKey(roomB, srcA+"/video", roomA, 50); d < sent/2 {
		t.Errorf("A's video to B while muted: %d packets of the %d A sent meanwhile", d, sent)
	}
	if d := roomB.count(srcA+"/audio") - audio0; d > 2 {
		t.Errorf("muted classroom A's audio still reached B: %d packets", d)
	}

	// Back from stage: B stops receiving A.
	if r := master.c.request(t, map[string]any{"type": "stage", "classroom_id": a, "on": false}); r.str("type") != "ack" {
		t.Fatalf("stage back: %v", r)
	}
	time.Sleep(time.Second)
	v1 := roomB.count(srcA + "/video")
	time.Sleep(time.Second)
	if d := roomB.count(srcA+"/video") - v1; d > 2 {
		t.Errorf("B still received %d packets of A after it left the stage", d)
	}
	if d, sent := gainKey(roomB, "master/video", master, 50); d < sent/2 {
		t.Errorf("B's lesson after the stage change: %d packets of the %d the master sent meanwhile", d, sent)
	}

	// Screen share added mid-class: the master renegotiates its publish
	// connection; the classrooms are offered the new track.
	master.addTrack(ctx, "screen")
	master.negotiatePublish(ctx)
	waitFor(t, 10*time.Second, "both classrooms to receive the screen share", func() bool {
		return countTracks(roomA, "master/video") == 2 && countTracks(roomB, "master/video") == 2
	})
	for _, p := range []*mediaPeer{master, roomA, roomB} {
		if p.bad.Load() != 0 {
			t.Errorf("peer %c received %d packets that differ from what was sent", p.tag, p.bad.Load())
		}
	}
}

// gainKey waits until from has sent at least n more video packets (about
// half a second; at most 5 s, as a loaded machine starves the sender) and
// says how many packets of key p received meanwhile, and how many from sent.
func gainKey(p *mediaPeer, key string, from *mediaPeer, n int64) (got, sent int64) {
	r0, s0 := p.count(key), from.sentVideo.Load()
	for end := time.Now().Add(5 * time.Second); from.sentVideo.Load()-s0 < n && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	sent = from.sentVideo.Load() - s0
	// What is in flight when the count is taken arrives a moment later.
	time.Sleep(100 * time.Millisecond)
	return p.count(key) - r0, sent
}

// countTracks counts the receiving transceivers of p's subscribe
// connection with a live track of this stream and kind.
func countTracks(p *mediaPeer, key string) int {
	n := 0
	for _, tr := range p.sub.GetTransceivers() {
		r := tr.Receiver()
		if r == nil || r.Track() == nil {
			continue
		}
		if r.Track().StreamID()+"/"+r.Track().Kind().String() == key && tr.Direction() != webrtc.RTPTransceiverDirectionInactive {
			n++
		}
	}
	return n
}

// TestVanishedClassroomIsDropped: a classroom terminal that publishes
// through the control channel loses power (its media socket goes silent,
// its WebSocket gives no goodbye): within seconds the master stops
// receiving it and the class state shows it no longer publishing.
func TestVanishedClassroomIsDropped(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createClass(t, ctx, "Civics 9", 1)
	cid := s.Classrooms[0]
	master := joinAs(t, ctx, e, s.Tokens.Master, 'M')
	master.subscribe(ctx)

	// The terminal's media goes through a socket the test can silence.
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	room := joinAs(t, ctx, e, s.Tokens.Classrooms[cid].Terminal, 'R')
	pc, err := mediatest.VanishingAPI(t, udp).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	room.pub = pc
	sendCtx, stop := context.WithCancel(ctx)
	defer stop()
	room.addTrack(sendCtx, "camera")
	room.negotiatePublish(ctx)
	waitFor(t, 10*time.Second, "the master to receive the classroom", func() bool { return master.count("classroom:"+cid+"/video") > 50 })
	waitFor(t, 5*time.Second, "the state to show the classroom publishing", func() bool { return publishing(master.c.lastState(), cid) })

	_ = udp.Close() // power cut: no DTLS close, no WebSocket close
	gone := time.Now()
	waitFor(t, 15*time.Second, "the state to show the classroom no longer publishing", func() bool { return !publishing(master.c.lastState(), cid) })
	t.Logf("vanished classroom's media dropped %v after it went silent", time.Since(gone).Round(100*time.Millisecond))
	n := master.count("classroom:" + cid + "/video")
	time.Sleep(time.Second)
	if d := master.count("classroom:"+cid+"/video") - n; d != 0 {
		t.Errorf("master still received %d packets of the vanished classroom", d)
	}
}

func publishing(st msg, cid string) bool {
	if st == nil {
		return false
	}
	parts, _ := st["participants"].([]any)
	for _, p := range parts {
		m, _ := p.(map[string]any)
		if m["classroom_id"] == cid && m["role"] == "terminal" && m["publishing"] == true {
			return true
		}
	}
	return false
}

// TestHTTPRoles: the HTTP side of the same rule — each role's token is
// refused, with a JSON error, for what it may not do.
func TestHTTPRoles(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createClass(t, ctx, "History 9", 1)
	cid := s.Classrooms[0]
	roles := map[string]string{
		"master":    s.Tokens.Master,
		"assistant": s.Tokens.Classrooms[cid].Assistant,
		"terminal":  s.Tokens.Classrooms[cid].Terminal,
		"observer":  s.Tokens.Observer,
		"cascade":   s.Tokens.Cascade,
	}
	offer := []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")
	type call struct{ method, path, ctype string }
	calls := map[string]call{
		"start":        {"POST", "/api/v1/sessions/" + s.ID + "/start", ""},
		"end":          {"POST", "/api/v1/sessions/" + s.ID + "/end", ""},
		"whip":         {"POST", "/whip/" + s.ID, "application/sdp"},
		"list":         {"GET", "/api/v1/sessions", ""},
		"create":       {"POST", "/api/v1/sessions", "application/json"},
		"set upstream": {"PUT", "/api/v1/sessions/" + s.ID + "/upstream", "application/json"},
	}
	forbidden := map[string][]string{
		"master":    {"list", "create", "set upstream"},
		"assistant": {"start", "end", "whip", "list", "create", "set upstream"},
		"terminal":  {"start", "end", "whip", "list", "create", "set upstream"},
		"observer":  {"start", "end", "whip", "list", "create", "set upstream"},
		"cascade":   {"start", "end", "list", "create", "set upstream"},
	}
	for role, names := range forbidden {
		for _, name := range names {
			c := calls[name]
			body := []byte(`{"title":"x"}`)
			if c.ctype == "application/sdp" {
				body = offer
			}
			resp, b := e.Do(t, ctx, c.method, c.path, roles[role], c.ctype, body)
			if (resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnauthorized) || !bytes.Contains(b, []byte(`"error"`)) {
				t.Errorf("%s %s: %d %s, want 401/403 with an error", role, name, resp.StatusCode, b)
			}
		}
	}
	// Nothing happened: the session is still "created".
	if _, b := e.Do(t, ctx, "GET", "/api/v1/sessions/"+s.ID, e.admin, "", nil); !bytes.Contains(b, []byte(`"state":"created"`)) {
		t.Errorf("session after refused calls: %s", b)
	}
}
