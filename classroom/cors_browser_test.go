package classroom_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/certs"
)

// whipWHEPPageJS is a web WHIP/WHEP client as a page on another site would
// write it with nothing but the browser: fetch POST application/sdp with the
// bearer token (which needs the preflight), Location read from the answer
// (which needs Access-Control-Expose-Headers), DELETE at the end (a
// preflight on the resource). No trickle: it waits for ICE gathering and
// sends every candidate in the offer.
const whipWHEPPageJS = `
window.W = { errors: [] };
const gathered = (pc) => new Promise((res) => {
  if (pc.iceGatheringState === "complete") return res();
  pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && res();
  setTimeout(res, 5000);
});
async function exchange(pc, endpoint, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const res = await fetch(endpoint, { method: "POST", headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + token }, body: pc.localDescription.sdp });
  const body = await res.text();
  if (res.status !== 201) throw new Error(endpoint + ": " + res.status + " " + body);
  const loc = res.headers.get("Location");
  if (!loc) throw new Error(endpoint + ": Location is not readable from this origin");
  await pc.setRemoteDescription({ type: "answer", sdp: body });
  return new URL(loc, endpoint).href;
}
window.publish = async (edge, session, token) => {
  try {
    const media = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
    const pc = new RTCPeerConnection();
    media.getTracks().forEach((t) => pc.addTransceiver(t, { direction: "sendonly", streams: [media] }));
    W.pc = pc;
    W.resource = await exchange(pc, edge + "/whip/" + session, token);
  } catch (e) { W.errors.push("publish: " + e.message); }
};
window.watch = async (edge, session, token) => {
  try {
    const pc = new RTCPeerConnection();
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (e) => {
      if (e.track.kind !== "video") return;
      const v = document.createElement("video");
      v.muted = true; v.autoplay = true; v.playsInline = true;
      v.srcObject = new MediaStream([e.track]);
      document.body.append(v);
      v.play().catch(() => {});
    };
    W.pc = pc;
    W.resource = await exchange(pc, edge + "/whep/" + session, token);
  } catch (e) { W.errors.push("watch: " + e.message); }
};
window.framesDecoded = async () => {
  let f = 0;
  if (W.pc) for (const r of (await W.pc.getStats()).values()) if (r.type === "inbound-rtp" && r.kind === "video") f += r.framesDecoded || 0;
  W.frames = f;
  return f;
};
window.stop = async (token) => {
  try {
    const res = await fetch(W.resource, { method: "DELETE", headers: { Authorization: "Bearer " + token } });
    W.deleted = res.status;
  } catch (e) { W.errors.push("delete: " + e.message); W.deleted = -1; }
};
`

// TestCrossOriginWHIPWHEPInChromium is the must-show for CORS: pages
// served by another origin (a different port: another site, as far as the
// browser is concerned) publish the fake camera to a real edge with WHIP
// and watch it with WHEP in another tab, decoding video; both then end
// their resources with DELETE. Without the preflight answered the POST never
// leaves the browser; without the exposed Location the page cannot DELETE.
func TestCrossOriginWHIPWHEPInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	e := startLANEdge(t, ctx)
	s := e.createUnrecorded(t, ctx, "Cross-origin WHIP")

	// The other site: HTTPS on the same LAN host, another port (another
	// origin to the browser), with a certificate of its own.
	pages := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!doctype html><title>" + r.URL.Path + "</title><script>" + whipWHEPPageJS + "</script>"))
	}))
	ln, err := net.Listen("tcp", browsertest.LANListen)
	if err != nil {
		t.Fatal(err)
	}
	pages.Listener = ln
	pages.StartTLS()
	t.Cleanup(pages.Close)
	pageURL, edgeURL := pages.URL, e.url
	if pu, eu := mustURL(t, pageURL), mustURL(t, edgeURL); pu.Scheme+pu.Host == eu.Scheme+eu.Host {
		t.Fatalf("the page (%s) and the edge (%s) share an origin: the test would prove nothing", pageURL, edgeURL)
	}

	b := browsertest.Start(ctx, t, browsertest.TrustPin(e.tls.Pin), browsertest.TrustPin(certs.SPKIPin(pages.Certificate())))
	publisher := b.Context()
	viewer := b.Tab(false)
	navigate(t, publisher, pageURL+"/publish.html")
	navigate(t, viewer, pageURL+"/watch.html")
	b.RequireSecureLAN()

	browserEval[bool](publisher, t, "publish("+jsString(edgeURL)+", "+jsString(s.ID)+", "+jsString(s.Tokens.Master)+"); true")
	browserPoll(publisher, t, "the cross-origin WHIP publish", `W.resource !== undefined || W.errors.length > 0`)
	if errs := browserEval[string](publisher, t, `W.errors.join("; ")`); errs != "" {
		t.Fatalf("publisher page: %s", errs)
	}
	browserEval[bool](viewer, t, "watch("+jsString(edgeURL)+", "+jsString(s.ID)+", "+jsString(s.Tokens.Observer)+"); true")
	browserPoll(viewer, t, "the cross-origin WHEP watch", `W.resource !== undefined || W.errors.length > 0`)
	if errs := browserEval[string](viewer, t, `W.errors.join("; ")`); errs != "" {
		t.Fatalf("viewer page: %s", errs)
	}
	browserPoll(viewer, t, "the viewer tab decoding the published camera", `(framesDecoded(), W.frames > 10)`)

	// Both resources end from the page: DELETE is preflighted on the
	// resource URL taken from the exposed Location header.
	browserEval[bool](viewer, t, "stop("+jsString(s.Tokens.Observer)+"); true")
	browserPoll(viewer, t, "the WHEP DELETE", `W.deleted !== undefined`)
	browserEval[bool](publisher, t, "stop("+jsString(s.Tokens.Master)+"); true")
	browserPoll(publisher, t, "the WHIP DELETE", `W.deleted !== undefined`)
	for name, tab := range map[string]context.Context{"viewer": viewer, "publisher": publisher} {
		if got := browserEval[int](tab, t, `W.deleted`); got != http.StatusOK {
			t.Errorf("%s page DELETE: %d (errors: %s)", name, got, browserEval[string](tab, t, `W.errors.join("; ")`))
		}
	}
	if ex := b.Exceptions(); len(ex) > 0 {
		t.Errorf("uncaught exceptions in the pages: %v", ex)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
