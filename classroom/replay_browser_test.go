package classroom_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/browsertest"
)

// whipPublishJS publishes the fake camera and mic with WHIP (RFC 9725) from
// a page on the edge's origin, as a teacher's browser or OBS would.
const whipPublishJS = `
window.whip = async function (session, token, svc) {
  window.pub = { state: "starting" };
  try {
    const pc = new RTCPeerConnection();
    window.pubPC = pc;
    // svc: 720p as one VP9 encoding with three spatial and three
    // temporal layers, as the teacher page sends it (layers.js).
    const size = svc ? { width: 1280, height: 720 } : { width: 320, height: 240 };
    const media = await navigator.mediaDevices.getUserMedia({ video: size, audio: true });
    media.getTracks().forEach((t) => {
      if (!svc || t.kind !== "video") return pc.addTransceiver(t, { direction: "sendonly", streams: [media] });
      const tr = pc.addTransceiver(t, { direction: "sendonly", streams: [media], sendEncodings: [{ scalabilityMode: "L3T3_KEY" }] });
      const all = RTCRtpReceiver.getCapabilities("video").codecs;
      tr.setCodecPreferences(all.filter((c) => /vp9/i.test(c.mimeType)).concat(all.filter((c) => !/vp9/i.test(c.mimeType))));
    });
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((res) => {
      if (pc.iceGatheringState === "complete") return res();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && res();
    });
    const r = await fetch("/whip/" + session, { method: "POST", headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + token }, body: pc.localDescription.sdp });
    const body = await r.text();
    if (r.status !== 201) { window.pub.state = "WHIP " + r.status + ": " + body; return; }
    await pc.setRemoteDescription({ type: "answer", sdp: body });
    window.pub.state = "published";
  } catch (e) { window.pub.state = "error: " + e; }
};
window.replay = function (src) {
  const v = document.createElement("video");
  v.muted = true;
  v.src = src;
  window.rep = { errors: [], seeked: 0 };
  v.onerror = () => window.rep.errors.push(v.error ? v.error.code + " " + v.error.message : "error");
  v.onseeked = () => window.rep.seeked++;
  document.body.appendChild(v);
  window.vid = v;
  v.play().catch((e) => window.rep.errors.push("play: " + e));
};
`

// TestReplayInChromium: a lesson published from a real browser's camera
// (VP8 over WebRTC) is recorded; after the session ends the recording
// plays in a real Chromium <video> straight from /media/{id} (readyState
// reaches HAVE_CURRENT_DATA and currentTime advances), and seeking to a
// time mid-lesson lands there and plays on.
func TestReplayInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	checkReplay(t, false)
}

// TestReplaySVCInChromium: the same with the camera sent as the teacher
// page sends it where it can, one VP9 encoding with scalabilityMode
// L3T3_KEY: the recording (every spatial layer of each picture) plays and
// seeks, at the top layer's size.
func TestReplaySVCInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	if w := checkReplay(t, true); w != 1280 {
		t.Errorf("the SVC recording plays %d px wide, want the top spatial layer's 1280", w)
	}
}

// checkReplay publishes from Chromium by WHIP (svc: as VP9 L3T3_KEY),
// records, ends, replays and seeks; it returns the replayed video's width.
func checkReplay(t *testing.T, svc bool) int {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	e := startLANEdge(t, ctx)
	s := e.createSession(t, ctx, "Chemistry 7 replay")

	browser := browsertest.Start(ctx, t, browsertest.TrustPin(e.tls.Pin))
	tab := browser.Context()
	nav := func() {
		nctx, c := context.WithTimeout(tab, 15*time.Second)
		defer c()
		if err := chromedp.Do(nctx, chromedp.Navigate(e.url+"/")); err != nil {
			t.Fatalf("open the edge's page: %v", err)
		}
		browsertest.RequireSecureLAN(tab, t)
		browserEval[bool](tab, t, whipPublishJS+"; true")
	}
	nav()
	sid, _ := json.Marshal(s.ID)
	tok, _ := json.Marshal(s.Tokens.Master)
	browserEval[bool](tab, t, fmt.Sprintf("whip(%s, %s, %v); true", sid, tok, svc))
	browserPoll(tab, t, "the browser published", `window.pub && window.pub.state === "published"`)

	// About five seconds of lesson: enough for a keyframe request (every
	// 5 s) and a mid-lesson seek.
	var st recordingStatus
	waitFor(t, 30*time.Second, "five seconds of recorded video", func() bool {
		st = e.recording(t, ctx, s.ID)
		return st.State == "failed" || st.State == "not_recorded" || st.VideoFrames >= 150
	})
	if st.State != "recording" {
		t.Fatalf("recording: %+v", st)
	}
	if resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions/"+s.ID+"/end", e.admin, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("end: %d %s", resp.StatusCode, b)
	}
	waitFor(t, 15*time.Second, "the recording to be imported", func() bool {
		st = e.recording(t, ctx, s.ID)
		return st.State == "done" || st.State == "failed"
	})
	if st.State != "done" {
		t.Fatalf("recording: %+v", st)
	}

	// A fresh page (as a classroom that missed the class) replays it.
	nav()
	src, _ := json.Marshal("/media/" + st.MediaID)
	browserEval[bool](tab, t, "replay("+string(src)+"); true")
	browserPoll(tab, t, "the recording plays", `window.vid.readyState >= 2 && window.vid.currentTime > 0.5`)
	if d := browserEval[float64](tab, t, "window.vid.duration"); d < 3.5 || d > 30 {
		t.Errorf("the recording's duration in the browser is %.2f s; about 5 s were recorded", d)
	}
	browserEval[bool](tab, t, "window.vid.currentTime = 3.0; true")
	browserPoll(tab, t, "the seek to 3 s lands and plays on", `window.rep.seeked > 0 && window.vid.readyState >= 2 && window.vid.currentTime >= 3.0 && window.vid.currentTime < 4.5 && !window.vid.paused`)
	at := browserEval[float64](tab, t, "window.vid.currentTime")
	time.Sleep(700 * time.Millisecond)
	if later := browserEval[float64](tab, t, "window.vid.currentTime"); later <= at {
		t.Errorf("after the seek playback does not advance: %.2f then %.2f", at, later)
	}
	if errs := browserEval[string](tab, t, `window.rep.errors.join("; ")`); errs != "" {
		t.Errorf("the video element reported errors: %s", errs)
	}
	w := browserEval[int](tab, t, "window.vid.videoWidth")
	t.Logf("replayed %s: %d bytes, %d video frames, %d audio frames, %d px wide", st.MediaID, st.Bytes, st.VideoFrames, st.AudioFrames, w)
	return w
}
