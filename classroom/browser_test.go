package classroom_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/browsertest"
)

// classClientJS is a minimal class client written against docs/LIVE.md, as
// the classroom and teacher pages will be: hello, join, subscribe (answer
// every offer of the edge), publish the fake camera and mic, trickle ICE
// both ways after the SDP it belongs to.
const classClientJS = `
window.cls = async function (token, publish) {
  const st = { errors: [], offers: 0, streams: [], joined: false, published: false };
  window.st = st;
  const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/api/v1/ws");
  let n = 0;
  const pending = {};
  const send = (m) => { m.v = 1; ws.send(JSON.stringify(m)); };
  const req = (m) => new Promise((res) => { m.id = "r" + ++n; pending[m.id] = res; send(m); });
  const trickle = (pc, name, ready) => {
    const early = [];
    pc.onicecandidate = (e) => {
      if (!e.candidate) return;
      const m = { type: "candidate", pc: name, candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex };
      if (ready()) send(m); else early.push(m);
    };
    return () => early.splice(0).forEach(send);
  };
  const sub = new RTCPeerConnection();
  window.subPC = sub;
  let answered = false;
  const flushSub = trickle(sub, "subscribe", () => answered);
  sub.ontrack = (e) => {
    e.streams.forEach((s) => st.streams.includes(s.id) || st.streams.push(s.id));
    const el = document.createElement(e.track.kind);
    el.srcObject = new MediaStream([e.track]);
    el.muted = true;
    el.autoplay = true;
    document.body.appendChild(el);
    el.play().catch(() => {});
  };
  ws.onmessage = async (ev) => {
    const m = JSON.parse(ev.data);
    if (m.id && pending[m.id]) { const f = pending[m.id]; delete pending[m.id]; f(m); return; }
    if (m.type === "offer") {
      st.offers++;
      await sub.setRemoteDescription({ type: "offer", sdp: m.sdp });
      await sub.setLocalDescription(await sub.createAnswer());
      send({ type: "answer", pc: "subscribe", sdp: sub.localDescription.sdp });
      answered = true;
      flushSub();
    } else if (m.type === "error") st.errors.push(m.code + ": " + m.message);
    else if (m.type === "state") st.state = m;
  };
  await new Promise((res) => (ws.onopen = res));
  const w = await req({ type: "hello", token });
  if (w.type !== "welcome") { st.errors.push("hello: " + JSON.stringify(w)); return; }
  st.role = w.role;
  const j = await req({ type: "join", name: "chromium " + w.role });
  st.joined = j.type === "ack";
  if (publish) {
    const pc = new RTCPeerConnection();
    const media = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
    media.getTracks().forEach((t) => pc.addTrack(t, media));
    let sent = false;
    const flushPub = trickle(pc, "publish", () => sent);
    await pc.setLocalDescription(await pc.createOffer());
    const p = req({ type: "publish", sdp: pc.localDescription.sdp });
    sent = true;
    flushPub();
    const a = await p;
    if (a.type !== "answer") { st.errors.push("publish: " + JSON.stringify(a)); return; }
    await pc.setRemoteDescription({ type: "answer", sdp: a.sdp });
    st.published = true;
  }
  const s = await req({ type: "subscribe" });
  if (s.type !== "ack") st.errors.push("subscribe: " + JSON.stringify(s));
};
window.videoStats = async function () {
  let packets = 0, frames = 0;
  for (const r of (await window.subPC.getStats()).values()) {
    if (r.type === "inbound-rtp" && r.kind === "video") { packets += r.packetsReceived || 0; frames += r.framesDecoded || 0; }
  }
  window.vs = { packets, frames };
};
`

// TestClassInChromium: two real browsers run a class through the edge with
// the documented protocol: the master teacher's page publishes its camera
// (the lesson) and the classroom's page publishes its own; each decodes
// the other's video, with ICE trickled from the browser.
func TestClassInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e := startLANEdge(t, ctx)
	s := e.createClass(t, ctx, "Biology 8 with Chromium", 1)
	cid := s.Classrooms[0]

	browser := browsertest.Start(ctx, t, browsertest.TrustPin(e.tls.Pin))
	master := browser.Context()
	room := browser.Tab(false)

	// Pages on the edge's origin (the control channel accepts only its
	// own origin); the console page is as good as any.
	for name, tab := range map[string]context.Context{"master": master, "classroom": room} {
		sctx, c := context.WithTimeout(tab, 15*time.Second)
		if err := chromedp.Do(sctx, chromedp.Navigate(e.url+"/")); err != nil {
			c()
			t.Fatalf("%s tab: %v", name, err)
		}
		c()
		browsertest.RequireSecureLAN(tab, t)
		browserEval[bool](tab, t, classClientJS+"; true")
	}
	token, _ := json.Marshal(s.Tokens.Master)
	browserEval[bool](master, t, "cls("+string(token)+", true); true")
	token, _ = json.Marshal(s.Tokens.Classrooms[cid].Terminal)
	browserEval[bool](room, t, "cls("+string(token)+", true); true")

	for name, tab := range map[string]context.Context{"master": master, "classroom": room} {
		browserPoll(tab, t, name+" joined and published", `window.st && window.st.joined && window.st.published`)
	}
	// Each decodes the other's camera.
	for name, tab := range map[string]context.Context{"master": master, "classroom": room} {
		browserPoll(tab, t, name+" decoding video", `(window.videoStats(), window.vs && window.vs.frames > 10)`)
	}
	if got := browserEval[string](room, t, `window.st.streams.join(",")`); got != "master" {
		t.Errorf("the classroom page received streams %q, want the lesson (master) only", got)
	}
	if got := browserEval[string](master, t, `window.st.streams.join(",")`); got != "classroom:"+cid {
		t.Errorf("the master page received streams %q, want classroom:%s", got, cid)
	}
	for name, tab := range map[string]context.Context{"master": master, "classroom": room} {
		if errs := browserEval[string](tab, t, `window.st.errors.join("; ")`); errs != "" {
			t.Errorf("%s page got errors: %s", name, errs)
		}
	}
	if !strings.Contains(e.log.String(), "video/VP8") {
		t.Error("the edge log shows no VP8 track from the browsers")
	}
}

func browserEval[T any](ctx context.Context, t *testing.T, expr string) T {
	t.Helper()
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ectx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %.80s: %v", expr, err)
	}
	return v
}

// pageStateJS is what a failed poll prints: the live-class page's state
// and, on replay pages, the <video> element's, so a timeout says whether the
// media never loaded, loaded but did not decode, or decoded but stalled.
const pageStateJS = `JSON.stringify({st: window.st, vs: window.vs, pub: window.pub, rep: window.rep,
  vid: window.vid && {readyState: window.vid.readyState, networkState: window.vid.networkState,
    currentTime: window.vid.currentTime, duration: window.vid.duration, paused: window.vid.paused,
    error: window.vid.error && (window.vid.error.code + " " + window.vid.error.message),
    buffered: Array.from({length: window.vid.buffered.length}, (_, i) => [window.vid.buffered.start(i), window.vid.buffered.end(i)]),
    width: window.vid.videoWidth}})`

func browserPoll(ctx context.Context, t *testing.T, what, expr string) {
	t.Helper()
	const within = 20 * time.Second
	pctx, cancel := context.WithTimeout(ctx, within+2*time.Second)
	defer cancel()
	if _, err := chromedp.Run(pctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(within), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		defer dcancel()
		st, _ := chromedp.Run(dctx, chromedp.Evaluate[string](pageStateJS))
		t.Fatalf("%s: %v\npage state: %s", what, err, st)
	}
}
