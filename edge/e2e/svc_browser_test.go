//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/netnstest"
)

// strictSVC enforces what measures the machine as much as the edge: the
// LAN classroom at the camera's full 1280 px (the teacher's browser drops
// its top spatial layer while it is short of CPU), and the thin classroom
// decoding a new frame in every second of the watch.
var strictSVC = flag.Bool("svc.strict", false, "TestTeacherPublishesSVCThinClassroom: the LAN classroom at 1280 px and the thin one decoding every second")

// TestTeacherPublishesSVCThinClassroom: the teacher page in Chromium, over
// HTTPS at the edge's LAN address, publishes its camera as ONE VP9
// encoding with scalabilityMode L3T3_KEY (the edge's welcome says svc);
// its getStats() shows that one outbound encoding. Two classroom screens
// watch: one on the LAN as it is, one behind a 500 kbit/s link (tbf on its
// bridge port). The edge forwards each the spatial and temporal layers its
// link carries, from the one stream: the thin classroom keeps decoding at
// a lower resolution (inbound frameWidth), the LAN classroom at a higher
// one.
func TestTeacherPublishesSVCThinClassroom(t *testing.T) {
	ctx, cancel, hosts := browserLAN(t, 4, 170*time.Second)
	defer cancel()
	a, b, thinHost, lanHost := hosts[0], hosts[1], hosts[2], hosts[3]
	if err := thinHost.Shape(thinLink); err != nil {
		t.Fatalf("shape the thin classroom's link: %v", err)
	}

	se := startSchoolEdge(t, ctx, a, b, "-log-level", "debug")
	pin, admin, home, api := se.pin, se.admin, se.home, se.api
	screens := map[string]context.Context{}
	for _, r := range []struct {
		name, code string
		host       *netnstest.Netns
	}{{"七年级(2)班", "7-2", thinHost}, {"七年级(3)班", "7-3", lanHost}} {
		var room struct{ ID, Name string }
		api.call(t, ctx, "POST", "/api/v1/classrooms", map[string]string{"name": r.name, "room_code": r.code}, http.StatusCreated, &room)
		var pc struct{ Code string }
		api.call(t, ctx, "POST", "/api/v1/classrooms/"+room.ID+"/pairing-codes", nil, http.StatusCreated, &pc)
		screen := startClassroomScreen(t, ctx, r.host, pin, pc.Code)
		pagePoll(t, screen, r.name+" paired and waiting", `window.room.paired === true`)
		requireSecureAt(t, screen, edgeHost)
		screens[r.code] = screen
	}
	thin, lan := screens["7-2"], screens["7-3"]

	teacherBrowser := startChromiumIn(t, ctx, b, []string{"HOME=" + home}, "")
	teacher := newTab(t, teacherBrowser)
	navigateTab(t, teacher, "https://"+edgeHTTPS+"/teacher.html")
	requireSecureAt(t, teacher, edgeHost)
	// What this Chromium encodes: the page sends L3T3_KEY when it can,
	// else L3T3 (layers.js, findSVC: getCapabilities, else Media
	// Capabilities).
	mctx, mcancel := context.WithTimeout(teacher, 5*time.Second)
	modes, err := chromedp.Run(mctx, chromedp.Evaluate[string](`window.LAYERS.svcFound.then(() => window.LAYERS.svc + " " + window.LAYERS.svcMode)`, chromedp.EvalAwaitPromise))
	mcancel()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(modes, "L3T3") {
		t.Fatalf("this Chromium encodes no VP9 L3T3 (%q): the page cannot send SVC", modes)
	}
	pageEval[bool](t, teacher, `document.getElementById("admin").value = `+jsQuote(admin)+`; document.getElementById("load").click(); true`)
	pagePoll(t, teacher, "both classrooms listed", `document.querySelectorAll(".room").length === 2`)
	pageEval[bool](t, teacher, `document.getElementById("class-title").value = "分层 · SVC"; document.getElementById("start").click(); true`)
	pagePoll(t, teacher, "teacher publishing", `window.teacher.published === true`)
	if got := pageEval[string](t, teacher, `window.teacher.conn.welcome.svc + " " + window.LAYERS.sent.camera + " " + window.LAYERS.svcMode`); !strings.HasPrefix(got, "true svc L3T3") {
		t.Fatalf("welcome.svc, how the camera was sent and its mode: %q, want \"true svc L3T3…\"", got)
	}
	// One outbound video encoding: VP9, with the scalability mode, framing.
	pagePoll(t, teacher, "one outbound VP9 encoding with L3T3, encoding frames",
		`(outboundLayers(window.teacher.conn.pub).then(l => window.ol = l), !!window.ol && window.ol.length === 1 && window.ol[0].frames > 0)`)
	var out []struct {
		RID, Codec, Scalability string
		Frames, Width, Height   int
	}
	if err := json.Unmarshal([]byte(pageEval[string](t, teacher, `JSON.stringify(window.ol)`)), &out); err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || !strings.EqualFold(out[0].Codec, "video/VP9") || !strings.HasPrefix(out[0].Scalability, "L3T3") {
		t.Fatalf("teacher's outbound video %+v, want one VP9 encoding with scalabilityMode L3T3(_KEY)", out)
	}
	t.Logf("teacher's outbound video: %+v (the page found %s)", out, modes)

	// Each classroom: frames decoded and the width of the lesson's video.
	type view struct{ Frames, Width int }
	sample := func(tab context.Context, who string) view {
		sctx, cancel := context.WithTimeout(tab, 5*time.Second)
		defer cancel()
		js := `(async () => { const c = window.room.conn; const o = {Frames: 0, Width: 0}; if (!c || !c.sub) return JSON.stringify(o);
			for (const r of (await c.sub.getStats()).values()) if (r.type === "inbound-rtp" && r.kind === "video" && c.streamOfTrack[r.trackIdentifier] === "master") { o.Frames += r.framesDecoded || 0; o.Width = Math.max(o.Width, r.frameWidth || 0); }
			return JSON.stringify(o); })()`
		s, err := chromedp.Run(sctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("%s classroom's stats: %v", who, err)
		}
		var v view
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for who, tab := range map[string]context.Context{"thin": thin, "LAN": lan} {
		pagePoll(t, tab, who+" classroom decoding the lesson", `!!window.room.conn && (window.room.conn.videoStats().then(f => window.vf = f), !!window.vf && window.vf.master > 0)`)
	}
	// The LAN classroom climbs (a probe per layer, a keyframe per spatial
	// layer up, and the teacher's browser adds its upper spatial layers
	// only as its own estimate grows): wait for it to pass the lowest
	// spatial layer (-svc.strict: to reach the top).
	var lanView, thinView view
	lanMax := 0
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		lanView = sample(lan, "LAN")
		lanMax = max(lanMax, lanView.Width)
		if lanView.Width > 320 && (!*strictSVC || lanView.Width >= 1280) {
			break
		}
	}
	if lanMax <= 320 {
		t.Fatalf("the LAN classroom's video was at most %d px wide in 60 s: it never got above the lowest spatial layer (edge links: %s)", lanMax, linksLine(t, ctx, b))
	}
	// Watch both: the thin one keeps decoding, at its lower layer.
	const watched = 15 * time.Second
	prevThin, prevLAN := sample(thin, "thin"), sample(lan, "LAN")
	var thinPer, lanPer []int
	var thinWidths, lanWidths []int
	stalls := 0
	for end := time.Now().Add(watched); time.Now().Before(end); {
		time.Sleep(time.Second)
		thinView, lanView = sample(thin, "thin"), sample(lan, "LAN")
		thinPer, lanPer = append(thinPer, thinView.Frames-prevThin.Frames), append(lanPer, lanView.Frames-prevLAN.Frames)
		thinWidths, lanWidths = append(thinWidths, thinView.Width), append(lanWidths, lanView.Width)
		if thinView.Frames <= prevThin.Frames {
			stalls++
		}
		prevThin, prevLAN = thinView, lanView
	}
	t.Logf("thin classroom (%s): frames per second %v, width %v", thinLink, thinPer, thinWidths)
	t.Logf("LAN classroom: frames per second %v, width %v", lanPer, lanWidths)
	t.Logf("edge: %s", linksLine(t, ctx, b))
	if stalls >= len(thinPer) {
		t.Errorf("the classroom behind %s decoded nothing in %v: %v", thinLink, watched, thinPer)
	}
	if *strictSVC && stalls > 0 {
		t.Errorf("the classroom behind %s decoded no new frame in %d of %d seconds: %v", thinLink, stalls, len(thinPer), thinPer)
	}
	if sum(lanPer) == 0 {
		t.Errorf("the LAN classroom stopped decoding: %v", lanPer)
	}
	// The thin classroom's usual width against the widest the LAN one
	// got: on this shared machine under load the LAN classroom's own
	// link reads as lossy for seconds (CPU starvation of its browser;
	// docs/BENCHMARKS.md, "Chromium on a thin link") and the chooser
	// moves it down a while; -svc.strict requires the top layer at the
	// end.
	if usual, most := mode(thinWidths), max(lanMax, slices.Max(lanWidths)); usual == 0 || usual >= most {
		t.Errorf("widths: thin classroom mostly %d px, LAN classroom at most %d px; want the thin one on a lower spatial layer", usual, most)
	}
	if *strictSVC && lanView.Width < 1280 {
		t.Errorf("the LAN classroom at %d px, want the top spatial layer (1280)", lanView.Width)
	}
	for who, tab := range map[string]context.Context{"teacher": teacher, "thin classroom": thin, "LAN classroom": lan} {
		expr := `JSON.stringify(window.room.errors)`
		if who == "teacher" {
			expr = `JSON.stringify(window.teacher.errors)`
		}
		if errs := pageEval[string](t, tab, expr); errs != "[]" {
			t.Errorf("%s page errors: %s", who, errs)
		}
	}
}

// mode is the most common of xs (the largest of equals).
func mode(xs []int) int {
	n := map[int]int{}
	best := 0
	for _, x := range xs {
		n[x]++
		if n[x] > n[best] || n[x] == n[best] && x > best {
			best = x
		}
	}
	return best
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// linksLine is the edge's per-layer subscriber counts from /metrics, for
// the log.
func linksLine(t *testing.T, ctx context.Context, from *netnstest.Netns) string {
	metrics := string(httpGetIn(t, ctx, from, "http://"+edgeHTTP+"/metrics"))
	var parts []string
	for _, m := range regexp.MustCompile(`(?m)^campusedge_live_(?:layer_subscribers|svc_subscribers)\{[^}]*\} [0-9.]+$`).FindAllString(metrics, -1) {
		parts = append(parts, m)
	}
	return strings.Join(parts, "; ")
}
