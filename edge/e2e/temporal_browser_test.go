//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/netnstest"
)

// l1t3PublishJS: a teacher's own page on the edge's origin (as a school's
// portal or a tool like OBS would, by WHIP) signs in with the teacher's
// account, starts a session for the given classrooms and publishes the
// fake camera by WHIP as ONE VP8 encoding with scalabilityMode L1T3
// (three temporal layers, no simulcast, no SVC spatial layers).
// maxBitrate: the full frame rate needs more than a 500 kbit/s link
// carries beside audio, the half frame rate (temporal layers 0 and 1,
// ~60 % of the bits in libvpx's split) less.
const l1t3PublishJS = `
window.l1t3 = async function (id, password, classrooms) {
  window.pub = { state: "starting" };
  try {
    await ce.signIn({ id, password });
    const s = await ce.request("POST", "/api/v1/sessions", { body: { title: "物理 · 时间分层", classrooms } });
    window.pub.session = s.id;
    const pc = new RTCPeerConnection();
    window.pubPC = pc;
    const media = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720, frameRate: 30 }, audio: true });
    for (const t of media.getTracks()) {
      if (t.kind !== "video") { pc.addTransceiver(t, { direction: "sendonly", streams: [media] }); continue; }
      const tr = pc.addTransceiver(t, { direction: "sendonly", streams: [media], sendEncodings: [{ scalabilityMode: "L1T3", maxBitrate: 500000 }] });
      const all = RTCRtpReceiver.getCapabilities("video").codecs;
      tr.setCodecPreferences(all.filter((c) => /vp8/i.test(c.mimeType)).concat(all.filter((c) => !/vp8/i.test(c.mimeType))));
    }
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((res) => {
      if (pc.iceGatheringState === "complete") return res();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && res();
    });
    const r = await fetch("/whip/" + s.id, { method: "POST", headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + s.tokens.master }, body: pc.localDescription.sdp });
    const body = await r.text();
    if (r.status !== 201) { window.pub.state = "WHIP " + r.status + ": " + body; return; }
    // Chromium's estimate of its uplink starts at 300 kbit/s and grows
    // for ~30 s; a start at 600 (its own SDP parameter, in the answer it
    // applies) spares the test that wait. (x-google-min-bitrate did not
    // keep it from falling under -race.) The edge's answer is not
    // changed otherwise.
    await pc.setRemoteDescription({ type: "answer", sdp: body.replace(/^(a=fmtp:\d+ .*)$/gm, (l) => /apt=/.test(l) ? l : l + ";x-google-start-bitrate=600") });
    window.pub.state = "published";
  } catch (e) { window.pub.state = "error: " + e; }
};
true`

// TestChromiumL1T3TemporalLayersThinAndLAN: a Chromium publisher (the
// teacher, signed in with their own account, on a page at the edge's LAN
// address over HTTPS, host B) sends its camera by WHIP as one VP8
// encoding with scalabilityMode L1T3. Two classroom screens watch: one
// behind a 500 kbit/s link (host C), one on the LAN (host D). The edge
// forwards each the temporal layers its link carries from the one
// stream: the thin classroom keeps decoding every second at a lower frame
// rate (temporal layers 0–1), at the same picture size; the LAN
// classroom decodes every frame the camera sends.
func TestChromiumL1T3TemporalLayersThinAndLAN(t *testing.T) {
	ctx, cancel, hosts := browserLAN(t, 4, 150*time.Second)
	defer cancel()
	a, b, thinHost, lanHost := hosts[0], hosts[1], hosts[2], hosts[3]
	if err := thinHost.Shape(thinLink); err != nil {
		t.Fatalf("shape the thin classroom's link: %v", err)
	}

	se := startSchoolEdge(t, ctx, a, b, "-log-level", "debug")
	addTeacher(t, ctx, se.api)
	screens := map[string]context.Context{}
	var ids []string
	for _, r := range []struct {
		name, code string
		host       *netnstest.Netns
	}{{"八年级(1)班", "8-1", thinHost}, {"八年级(4)班", "8-4", lanHost}} {
		var room struct{ ID string }
		se.api.call(t, ctx, "POST", "/api/v1/classrooms", map[string]string{"name": r.name, "room_code": r.code}, http.StatusCreated, &room)
		ids = append(ids, room.ID)
		var pc struct{ Code string }
		se.api.call(t, ctx, "POST", "/api/v1/classrooms/"+room.ID+"/pairing-codes", nil, http.StatusCreated, &pc)
		screen := startClassroomScreen(t, ctx, r.host, se.pin, pc.Code)
		pagePoll(t, screen, r.name+" paired and waiting", `window.room.paired === true`)
		requireSecureAt(t, screen, edgeHost)
		screens[r.code] = screen
	}
	thin, lan := screens["8-1"], screens["8-4"]

	pub := newTab(t, startChromiumIn(t, ctx, b, []string{"HOME=" + se.home}, ""))
	navigateTab(t, pub, "https://"+edgeHTTPS+"/teacher.html")
	requireSecureAt(t, pub, edgeHost)
	pageEval[bool](t, pub, l1t3PublishJS)
	pageEval[bool](t, pub, fmt.Sprintf("l1t3(%s, %s, [%s, %s]); true", jsQuote(teacherID), jsQuote(teacherPassword), jsQuote(ids[0]), jsQuote(ids[1])))
	pagePoll(t, pub, "the teacher's page published by WHIP", `window.pub && window.pub.state !== "starting"`)
	if st := pageEval[string](t, pub, `window.pub.state`); st != "published" {
		t.Fatalf("WHIP publish: %s", st)
	}
	pagePoll(t, pub, "one outbound VP8 encoding with L1T3, encoding frames",
		`(outboundLayers(window.pubPC).then(l => window.ol = l), !!window.ol && window.ol.length === 1 && window.ol[0].frames > 0)`)
	if got := pageEval[string](t, pub, `window.ol[0].codec + " " + window.ol[0].scalability + " " + window.ol[0].rid`); !strings.EqualFold(strings.TrimSpace(got), "video/VP8 L1T3") {
		t.Fatalf("the teacher's outbound video is %q, want one VP8 encoding with scalabilityMode L1T3 and no rid", got)
	}

	// The browser's own estimate of its uplink starts low and grows: wait
	// for it to send about the encoding's maxBitrate, which the thin link
	// cannot carry at the full frame rate.
	for end := time.Now().Add(45 * time.Second); ; {
		st := pubStats(t, pub)
		if pageEval[float64](t, pub, `window.ps.kbps`) >= 400 {
			t.Logf("publisher at %s", st)
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the publisher's camera did not reach 400 kbit/s in 45 s: %s", st)
		}
	}
	for who, tab := range map[string]context.Context{"thin": thin, "LAN": lan} {
		pagePoll(t, tab, who+" classroom decoding the lesson", `!!window.room.conn && (window.room.conn.videoStats().then(f => window.vf = f), !!window.vf && window.vf.master > 0)`)
	}
	// The edge sees the temporal layers and sets each classroom's: the
	// thin one on the half-frame-rate rung, the LAN one on the full.
	halfAndFull := regexp.MustCompile(`(?s)campusedge_live_svc_subscribers\{spatial="0",temporal="1"\} 1\b.*campusedge_live_svc_subscribers\{spatial="0",temporal="2"\} 1\b`)
	var metrics string
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		metrics = linksLine(t, ctx, b)
		if halfAndFull.MatchString(metrics) {
			break
		}
		if time.Now().After(end) {
			st := pubStats(t, pub)
			if kbps := pageEval[int](t, pub, `window.ps.kbps`); kbps < minJudgedKbps {
				t.Skipf("the publisher's camera fell to %d kbit/s (%s), under the %d the thin link cannot carry at the full frame rate: the edge rightly gave both classrooms every frame (%s); the temporal split was not judged", kbps, st, minJudgedKbps, metrics)
			}
			t.Fatalf("in 30 s the edge did not put one classroom on temporal layer 1 and the other on 2: %s; publisher %s; thin classroom %+v; LAN classroom %+v",
				metrics, st, masterInbound(t, thin), masterInbound(t, lan))
		}
	}
	// Let the thin link's queue drain after the chooser's first moves,
	// then watch both, second by second.
	time.Sleep(3 * time.Second)
	one := func(tab context.Context) inbound {
		in := masterInbound(t, tab)
		if len(in) != 1 {
			t.Fatalf("classroom receives %d video tracks of the lesson, want 1: %+v", len(in), in)
		}
		return in[0]
	}
	encodedBefore, bytesBefore := encoded(t, pub)
	prevThin, prevLAN := one(thin), one(lan)
	firstThin, firstLAN := prevThin, prevLAN
	var thinPer, lanPer, thinW, lanW []int
	stalls := 0
	const seconds = 12
	for range seconds {
		time.Sleep(time.Second)
		th, la := one(thin), one(lan)
		thinPer, lanPer = append(thinPer, th.Frames-prevThin.Frames), append(lanPer, la.Frames-prevLAN.Frames)
		thinW, lanW = append(thinW, th.Width), append(lanW, la.Width)
		if th.Frames <= prevThin.Frames {
			stalls++
		}
		prevThin, prevLAN = th, la
	}
	encodedAfter, bytesAfter := encoded(t, pub)
	sent := float64(encodedAfter-encodedBefore) / seconds
	sentKbps := (bytesAfter - bytesBefore) * 8 / 1000 / seconds
	pubLine := pubStats(t, pub)
	thinFreezes, lanFreezes := prevThin.Freezes-firstThin.Freezes, prevLAN.Freezes-firstLAN.Freezes
	t.Logf("publisher encoded %.1f frames/s, %d kbit/s over the watch, now %s; thin classroom (%s): frames per second %v, width %v, %d freezes; LAN classroom: %v, width %v, %d freezes; edge: %s",
		sent, sentKbps, pubLine, thinLink, thinPer, thinW, thinFreezes, lanPer, lanW, lanFreezes, linksLine(t, ctx, b))

	thinRate, lanRate := float64(sum(thinPer))/seconds, float64(sum(lanPer))/seconds
	// Every second a new frame behind the thin link (-layers.strict: and
	// no freeze as Chromium counts them); by default one second without
	// is allowed on a loaded machine.
	allowed := 1
	if *strictThin {
		allowed = 0
		if thinFreezes > 0 {
			t.Errorf("the thin classroom froze %d times (Chromium's freezeCount): %v", thinFreezes, thinPer)
		}
	}
	if stalls > allowed {
		t.Errorf("the classroom behind %s decoded no new frame in %d of %d seconds: %v", thinLink, stalls, seconds, thinPer)
	}
	// Fewer frames behind the thin link, about half: temporal layers 0
	// and 1 of three — when the camera sent more than the link carries
	// at the full frame rate. Under -race on a loaded machine Chromium's
	// own uplink estimate falls (the slowed edge's feedback reads as
	// queueing) to ~200 kbit/s, the thin link then rightly gets every
	// frame, and the split cannot be judged: the test says so (SKIP),
	// it does not pass.
	judged := sentKbps >= minJudgedKbps
	if judged && (thinRate > 0.75*lanRate || thinRate < 0.25*lanRate) {
		t.Errorf("the thin classroom decoded %.1f frames/s and the LAN one %.1f: want about half (the lower temporal layers)", thinRate, lanRate)
	}
	// The LAN classroom gets the full frame rate the camera sends.
	if lanRate < 0.8*sent {
		t.Errorf("the LAN classroom decoded %.1f frames/s of the %.1f encoded", lanRate, sent)
	}
	// Temporal layers only: the same picture size (the encoder may
	// change it, for both at once: a few seconds to agree).
	same := false
	for end := time.Now().Add(5 * time.Second); !same && time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		th, la := one(thin), one(lan)
		same = th.Width > 0 && th.Width == la.Width
	}
	if !same {
		t.Errorf("widths: thin classroom %v, LAN classroom %v; want the same picture at fewer frames", thinW, lanW)
	}
	for who, tab := range map[string]context.Context{"thin classroom": thin, "LAN classroom": lan} {
		if errs := pageEval[string](t, tab, `JSON.stringify(window.room.errors)`); errs != "[]" {
			t.Errorf("%s page errors: %s", who, errs)
		}
	}
	if !judged {
		t.Skipf("the publisher sent %d kbit/s over the watch, under the %d the thin link cannot carry at the full frame rate: the temporal split was not judged", sentKbps, minJudgedKbps)
	}
}

// minJudgedKbps: below this the camera's full frame rate fits the 500
// kbit/s link beside audio, and which temporal layers a classroom gets
// says nothing about the edge.
const minJudgedKbps = 420

// encoded is the WHIP publisher's video frames encoded and bytes sent.
func encoded(t *testing.T, pub context.Context) (frames, bytes int) {
	t.Helper()
	ectx, cancel := context.WithTimeout(pub, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ectx, chromedp.Evaluate[string](`(async () => { for (const r of (await window.pubPC.getStats()).values()) if (r.type === "outbound-rtp" && r.kind === "video") return (r.framesEncoded || 0) + " " + (r.bytesSent || 0); return "0 0"; })()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("publisher's frames encoded: %v", err)
	}
	if _, err := fmt.Sscan(s, &frames, &bytes); err != nil {
		t.Fatalf("publisher's frames encoded %q: %v", s, err)
	}
	return frames, bytes
}

// pubStats is the WHIP publisher's outbound video now (frames/s, kbit/s
// sent over the last second, size, what limits it), for the log; the
// page keeps it in window.ps.
func pubStats(t *testing.T, pub context.Context) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(pub, 5*time.Second)
	defer cancel()
	js := `(async () => { const one = async () => { for (const r of (await window.pubPC.getStats()).values()) if (r.type === "outbound-rtp" && r.kind === "video") return r; return {}; };
		const a = await one(); await new Promise((r) => setTimeout(r, 1000)); const b = await one();
		window.ps = { fps: b.framesPerSecond || 0, kbps: Math.round(((b.bytesSent || 0) - (a.bytesSent || 0)) * 8 / 1000), width: b.frameWidth || 0, height: b.frameHeight || 0, limit: b.qualityLimitationReason || "" };
		return JSON.stringify(window.ps); })()`
	s, err := chromedp.Run(sctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("publisher's stats: %v", err)
	}
	return s
}
