package classroom_test

import (
	"context"
	"math"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/browsertest"
)

// replayWatchJS plays src in a <video> and notes every frame Chromium
// presents (its media time) and how long the playback took.
const replayWatchJS = `
window.replayAll = function (src) {
  const v = document.createElement("video");
  v.muted = true;
  v.src = src;
  window.rep = { errors: [], times: [], ended: false, started: 0, took: 0 };
  v.onerror = () => window.rep.errors.push(v.error ? v.error.code + " " + v.error.message : "error");
  v.onplaying = () => { if (!window.rep.started) window.rep.started = performance.now(); };
  v.onended = () => { window.rep.ended = true; window.rep.took = (performance.now() - window.rep.started) / 1000; };
  const onFrame = (now, meta) => {
    if (window.rep.times.length < 20000) window.rep.times.push(meta.mediaTime);
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
  document.body.appendChild(v);
  window.vid = v;
  v.play().catch((e) => window.rep.errors.push("play: " + e));
};
`

// TestKill9RecordingReplaysInChromium: a teacher's Chromium publishes its
// camera to the real edged at the LAN address over HTTPS; mid-lesson edged
// is killed with SIGKILL and restarted on the same data dir and ports, the
// page publishes again, and the session ends. A fresh page plays the
// recorded lesson from /media/{id} from start to end: Chromium presents
// frames all through part 1 and then all through part 2, the playback
// takes about the recorded media's length (the downtime is not in it), and
// the recording status shows the two parts and one gap.
func TestKill9RecordingReplaysInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	e, p, start, browser := killableLANEdge(t, ctx)
	s := e.createSession(t, ctx, "化学 7 重启")

	tab := browser.Context()
	page := func() {
		navigate(t, tab, e.url+"/")
		browsertest.RequireSecureLAN(tab, t)
		browserEval[bool](tab, t, whipPublishJS+replayWatchJS+"; true")
	}
	publish := func() {
		browserEval[bool](tab, t, "whip("+jsString(s.ID)+", "+jsString(s.Tokens.Master)+"); true")
		browserPoll(tab, t, "the browser published", `window.pub && window.pub.state === "published"`)
	}
	page()
	publish()
	waitFor(t, 30*time.Second, "two seconds or more recorded", func() bool {
		st := e.recording(t, ctx, s.ID)
		return st.State == "failed" || st.State == "not_recorded" || st.VideoFrames >= 60
	})
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	killedAt := time.Now()
	start()
	// The page is still open; its connection died with edged. It
	// publishes again, as the teacher page's reconnect does.
	publish()
	var st recordingStatus
	waitFor(t, 30*time.Second, "two seconds or more of part 2", func() bool {
		st = e.recording(t, ctx, s.ID)
		return st.State == "failed" || st.State == "not_recorded" || st.VideoFrames >= 60
	})
	if st.State != "recording" || len(st.Parts) != 1 || st.Parts[0].Part != 2 {
		t.Fatalf("after the restart the recording is %+v", st)
	}
	if resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions/"+s.ID+"/end", e.admin, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("end: %d %s", resp.StatusCode, b)
	}
	waitFor(t, 20*time.Second, "the lesson in the catalogue", func() bool {
		st = e.recording(t, ctx, s.ID)
		return st.State == "done" || st.State == "failed"
	})
	l := st.Lesson
	if st.State != "done" || l == nil || len(l.Parts) != 2 || len(l.Gaps) != 1 {
		t.Fatalf("the recording: %+v, lesson %+v", st, l)
	}
	gapAt := l.Gaps[0].AtSeconds

	// A fresh page (a classroom that missed the class) plays it through.
	page()
	browserEval[bool](tab, t, "replayAll("+jsString("/media/"+l.MediaID)+"); true")
	browserPoll(tab, t, "the lesson starts playing", `window.vid.readyState >= 2 && window.vid.currentTime > 0.2`)
	dur := browserEval[float64](tab, t, "window.vid.duration")
	if math.Abs(dur-l.DurationSeconds) > 0.5 {
		t.Errorf("Chromium says the lesson lasts %.2f s; the edge says %.1f s", dur, l.DurationSeconds)
	}
	pctx, pc := context.WithTimeout(tab, time.Duration(l.DurationSeconds+20)*time.Second)
	defer pc()
	if _, err := chromedp.Run(pctx, chromedp.Poll[bool](`window.rep.ended`, chromedp.WithPollingTimeout(time.Duration(l.DurationSeconds+15)*time.Second), chromedp.WithPollingInterval(200*time.Millisecond))); err != nil {
		t.Fatalf("the lesson did not play to its end: %v (at %.2f of %.2f s)", err, browserEval[float64](tab, t, "window.vid.currentTime"), dur)
	}
	times := browserEval[[]float64](tab, t, "window.rep.times")
	took := browserEval[float64](tab, t, "window.rep.took")
	if errs := browserEval[string](tab, t, `window.rep.errors.join("; ")`); errs != "" {
		t.Errorf("the video element reported errors: %s", errs)
	}
	// Frames presented in part 1 and in part 2, each through its length:
	// no stretch of more than a second without a frame, in either part or
	// across the join.
	var in1, in2 int
	last, worst := 0.0, 0.0
	for _, mt := range times {
		if mt < gapAt {
			in1++
		} else {
			in2++
		}
		worst = math.Max(worst, mt-last)
		last = mt
	}
	worst = math.Max(worst, dur-last)
	if in1 < 30 || in2 < 30 || worst > 1.0 {
		t.Errorf("Chromium presented %d frames of part 1 (to %.2f s) and %d of part 2 (to %.2f s); longest stretch without a frame %.2f s", in1, gapAt, in2, dur, worst)
	}
	// Played from start to end in about the media's time: the downtime
	// (kill to the page publishing again) is not played.
	if took < dur-1 || took > dur+2.5 {
		t.Errorf("playing the %.2f s lesson took %.2f s", dur, took)
	}
	t.Logf("lesson %s: %.2f s (part 1 %.1f s, gap at %.1f s, %.1f s not recorded; edged down since %s), played in %.2f s, %d frames presented (%d, %d)",
		l.MediaID, dur, l.Parts[0].DurationSeconds, gapAt, l.Gaps[0].MissingSeconds, killedAt.Format("15:04:05.000"), took, len(times), in1, in2)
}
