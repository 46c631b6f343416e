package classroom_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/browsertest"
)

// screenshotsEnv, when set to 1, makes TestClassroomExperienceInChromium
// write its screenshots to docs/screenshots (committed, linked from the
// README) instead of the test's temp dir.
const screenshotsEnv = "CAMPUSEDGE_SCREENSHOTS"

func navigate(t *testing.T, tab context.Context, url string) {
	t.Helper()
	sctx, c := context.WithTimeout(tab, 15*time.Second)
	defer c()
	if err := chromedp.Do(sctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
}

// pairPage opens the classroom page of e in tab at its LAN address, checks
// it is a secure context, and pairs it with a fresh code for classroom id,
// as the school's admin would with the code the console shows.
func pairPage(t *testing.T, ctx context.Context, e *edge, tab context.Context, id string) {
	t.Helper()
	resp, body := e.Do(t, ctx, "POST", "/api/v1/classrooms/"+id+"/pairing-codes", e.admin, "", nil)
	var pc struct{ Code string }
	if err := json.Unmarshal(body, &pc); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("pairing code: %d %s", resp.StatusCode, body)
	}
	navigate(t, tab, e.url+"/classroom.html")
	browsertest.RequireSecureLAN(tab, t)
	browserPoll(tab, t, "pairing form", `!document.getElementById("pair").hidden`)
	browserEval[bool](tab, t, `document.getElementById("pair-code").value = `+jsString(pc.Code)+`; document.getElementById("pair-go").click(); true`)
}

func screenshot(t *testing.T, tab context.Context, name string) {
	t.Helper()
	dir := t.TempDir()
	if os.Getenv(screenshotsEnv) == "1" {
		dir = filepath.Join("..", "docs", "screenshots")
	}
	sctx, c := context.WithTimeout(tab, 10*time.Second)
	defer c()
	png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if len(png) < 1000 {
		t.Fatalf("screenshot %s is %d bytes", name, len(png))
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func jsString(s string) string { b, _ := json.Marshal(s); return string(b) }

// bigScreenWatch, run in a big-screen page right after it loads, records
// every student name, id, mark or per-student answer that ever appears in
// its DOM — text, attributes, nodes that come and go between two polls —
// in window.leaks. The big screen is projected to the whole class.
func bigScreenWatch(forbidden []string) string {
	b, _ := json.Marshal(forbidden)
	return `(() => {
	  const bad = ` + string(b) + `;
	  window.leaks = [];
	  const scan = (s) => { if (!s) return; for (const w of bad) if (s.includes(w)) window.leaks.push(w); };
	  new MutationObserver((ms) => { for (const m of ms) {
	    for (const n of m.addedNodes) { scan(n.textContent); if (n.outerHTML) scan(n.outerHTML); }
	    if (m.type === "characterData") scan(m.target.data);
	    if (m.type === "attributes") scan(m.target.getAttribute(m.attributeName));
	  } }).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
	  scan(document.documentElement.outerHTML);
	  setInterval(() => { scan(document.documentElement.outerHTML); for (const i of document.querySelectorAll("input, select")) scan(i.value); }, 100);
	  return true;
	})()`
}

// TestClassroomExperienceInChromium is the browser test, in real
// headless Chromium with a real edge at a LAN address over HTTPS: the
// teacher signs in with their own account on the teacher page, creates and
// starts a class for two rooms and publishes; two paired classroom pages
// (big screens) join by themselves and decode the lesson; a raised hand
// reaches the teacher; a classroom on stage is seen by the other; an
// assistant teacher signs in on a third page by the code shown on room A's
// big screen, answers the quiz for the room and for a student, and marks
// attendance; the teacher's live results match; marks and answers are in
// the store; the master's feed stalling shows the banner and recovers; a
// classroom page closed mid-class is shown gone and its leave recorded. At
// no point does a big screen's DOM hold a student's name, id, mark or
// per-student answer, and no page keeps a credential in web storage.
func TestClassroomExperienceInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	e := startLANEdge(t, ctx)

	// Two classrooms whose room codes are homerooms of the roster.
	rooms := map[string]string{}
	for _, code := range []string{"7A", "7B"} {
		resp, b := e.Do(t, ctx, "POST", "/api/v1/classrooms", e.admin, "application/json", []byte(fmt.Sprintf(`{"name":"Room %s","room_code":"%s"}`, code, code)))
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("classroom: %d %s", resp.StatusCode, b)
		}
		var c struct{ ID string }
		_ = json.Unmarshal(b, &c)
		rooms[code] = c.ID
	}
	a, b := rooms["7A"], rooms["7B"]
	if resp, body := e.Do(t, ctx, "PUT", "/api/v1/attendance/roster", e.admin, "text/csv",
		[]byte("student_id,name,homeroom,groups\nstu-0001,Li Wei,7A,\nstu-0002,Wang Fang,7A,\nstu-0003,Zhang San,7B,\n")); resp.StatusCode != http.StatusOK {
		t.Fatalf("roster: %d %s", resp.StatusCode, body)
	}
	// What a big screen must never show.
	forbidden := []string{"Li Wei", "Wang Fang", "Zhang San", "stu-000", "mark-", "Answer saved", "data-student"}
	// The school's staff: a teacher and room A's assistant, each with their own account.
	for _, p := range []string{
		`{"id":"wang.li","name":"Wang Li","roles":["teacher"],"password":"teach-maths-7"}`,
		`{"id":"chen.jing","name":"Chen Jing","roles":["assistant"],"classrooms":["` + a + `"],"pin":"135790"}`,
	} {
		if resp, body := e.Do(t, ctx, "POST", "/api/v1/staff", e.admin, "application/json", []byte(p)); resp.StatusCode != http.StatusCreated {
			t.Fatalf("staff: %d %s", resp.StatusCode, body)
		}
	}

	browser := browsertest.Start(ctx, t, browsertest.TrustPin(e.tls.Pin))
	teacher := browser.Context()
	// Each page in its own browser context: two screens and the
	// assistant's phone, each with its own cookies.
	tabA, tabB, phone := browser.Tab(true), browser.Tab(true), browser.Tab(true)
	noStorage := `localStorage.length === 0 && sessionStorage.length === 0 && !document.cookie.includes("campusedge")`

	// Pair each classroom page once with a code, as a school would.
	for code, tab := range map[string]context.Context{"7A": tabA, "7B": tabB} {
		resp, body := e.Do(t, ctx, "POST", "/api/v1/classrooms/"+rooms[code]+"/pairing-codes", e.admin, "", nil)
		var pc struct{ Code string }
		if err := json.Unmarshal(body, &pc); err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("pairing code: %d %s", resp.StatusCode, body)
		}
		navigate(t, tab, e.url+"/classroom.html")
		browsertest.RequireSecureLAN(tab, t)
		browserEval[bool](tab, t, bigScreenWatch(forbidden))
		browserPoll(tab, t, "pairing form", `!document.getElementById("pair").hidden`)
		browserEval[bool](tab, t, `document.getElementById("pair-code").value = `+jsString(pc.Code)+`; document.getElementById("pair-go").click(); true`)
		browserPoll(tab, t, "paired "+code, `document.getElementById("status").textContent === "no class now" && /^[0-9]{6}$/.test(document.getElementById("assistant-code").textContent) && document.getElementById("assistant-qr").src.startsWith("data:image/png;base64,") && document.getElementById("room-name").textContent === "Room `+code+`"`)
		browserPoll(tab, t, code+" keeps no credential a script can read", noStorage)
	}

	// The teacher signs in with their own account and starts the class.
	navigate(t, teacher, e.url+"/teacher.html")
	browsertest.RequireSecureLAN(teacher, t)
	browserEval[bool](teacher, t, `document.getElementById("t-id").value = "wang.li"; document.getElementById("t-password").value = "teach-maths-7"; document.getElementById("load").click(); true`)
	browserPoll(teacher, t, "classrooms listed", `document.querySelectorAll(".room").length === 2 && document.getElementById("who").textContent === "Wang Li"`)
	browserEval[bool](teacher, t, `document.getElementById("class-title").value = "Maths 7 in Chromium"; document.getElementById("start").click(); true`)
	browserPoll(teacher, t, "teacher publishing", `window.teacher.published === true`)
	browserPoll(teacher, t, "the teacher page keeps no credential in storage", noStorage)
	var sess struct {
		Owner string `json:"owner"`
	}
	getJSON(t, ctx, e, "/api/v1/sessions/"+browserEval[string](teacher, t, `window.teacher.sessionId`), &sess)
	if sess.Owner != "wang.li" {
		t.Errorf("the session's owner is %q, want the signed-in teacher wang.li", sess.Owner)
	}

	// Both classroom pages join by themselves, publish, and decode the lesson.
	for name, tab := range map[string]context.Context{"A": tabA, "B": tabB} {
		browserPoll(tab, t, name+" joined and publishing", `window.room.published === true`)
		browserPoll(tab, t, name+" decoding the lesson", `(window.room.conn.videoStats().then(f => window.vf = f), !!window.vf && window.vf.master > 0)`)
	}
	browserPoll(teacher, t, "teacher decoding both classrooms",
		`(window.teacher.conn.videoStats().then(f => window.vf = f), !!window.vf && window.vf["classroom:`+a+`"] > 0 && window.vf["classroom:`+b+`"] > 0)`)

	// The assistant opens assistant.html on a phone, signs in with their
	// PIN and types the code room A's big screen shows.
	code := browserEval[string](tabA, t, `document.getElementById("assistant-code").textContent`)
	navigate(t, phone, e.url+"/assistant.html")
	browsertest.RequireSecureLAN(phone, t)
	browserEval[bool](phone, t, `document.getElementById("a-id").value = "chen.jing"; document.getElementById("a-password").value = "135790"; document.getElementById("code").value = `+jsString(code)+`; document.getElementById("a-signin").click(); true`)
	browserPoll(phone, t, "assistant in room A's class", `document.getElementById("status").textContent === "in class" && document.getElementById("room-name").textContent === "Room 7A"`)
	browserPoll(phone, t, "roster of 7A on the assistant's page", `document.querySelectorAll("#roster .roster-row").length === 2`)
	browserPoll(phone, t, "the assistant page keeps no credential in storage", noStorage)
	var audit struct {
		Entries []struct{ Actor, Action string }
	}
	getJSON(t, ctx, e, "/api/v1/audit", &audit)
	joined := false
	for _, a := range audit.Entries {
		joined = joined || a.Actor == "chen.jing" && a.Action == "assistant.join"
	}
	if !joined {
		t.Errorf("no assistant.join by chen.jing in the audit log: %+v", audit.Entries)
	}

	// A raised hand reaches the teacher page.
	browserEval[bool](tabA, t, `document.getElementById("hand").click(); true`)
	browserPoll(teacher, t, "hand on the teacher page", `document.querySelectorAll("#hands li").length === 1 && document.querySelector("#tile-`+a+` .hand").dataset.raised === "yes" && !!document.querySelector("#tile-`+a+` .hand svg.icon-hand")`)

	// Invited on stage, room A is seen by room B.
	browserEval[bool](teacher, t, `document.querySelector("#hands li button").click(); true`)
	browserPoll(tabB, t, "room B decoding room A on stage", `(window.room.conn.videoStats().then(f => window.vf = f), !!window.vf && window.vf["classroom:`+a+`"] > 0)`)
	browserPoll(teacher, t, "hand lowered by going on stage", `document.querySelectorAll("#hands li").length === 0`)

	// A quiz: both big screens show the question (no answer buttons);
	// room A's assistant answers B for the room (correct) and A for
	// student stu-0001. The teacher's live results match.
	browserEval[bool](teacher, t, `document.getElementById("q-prompt").value = "2 + 2 = ?"; document.getElementById("q-options").value = "3, 4, 5"; document.getElementById("q-correct").value = "2"; document.getElementById("q-push").click(); true`)
	for name, tab := range map[string]context.Context{"A": tabA, "B": tabB} {
		browserPoll(tab, t, "quiz on "+name, `document.querySelectorAll("#quiz-options li").length === 3 && !document.getElementById("quiz").hidden && document.querySelectorAll("#quiz button").length === 0`)
	}
	browserPoll(phone, t, "quiz on the assistant's page", `document.querySelectorAll("#quiz-options button").length === 3`)
	browserEval[bool](phone, t, `document.getElementById("student-pick").value = ""; document.querySelectorAll("#quiz-options button")[1].click(); true`)
	browserPoll(phone, t, "room answer sent", `document.getElementById("quiz-note").textContent === "Answer sent: B"`)
	browserEval[bool](phone, t, `document.getElementById("student-pick").value = "stu-0001"; document.querySelectorAll("#quiz-options button")[0].click(); true`)
	browserPoll(phone, t, "student answer saved", `document.getElementById("quiz-note").textContent === "Answer saved for Li Wei"`)
	browserPoll(teacher, t, "teacher's live results", `!!window.teacher.results && window.teacher.results.answered === 2 && window.teacher.results.correct === 1 && window.teacher.results.options.join() === "1,1,0" && document.querySelector("#q-results .accuracy").textContent.startsWith("2 answered · 1 correct · accuracy 50%")`)

	// The big screens show no results until the teacher reveals them,
	// then the class's (counts and accuracy, no names).
	if got := browserEval[string](tabA, t, `document.getElementById("room-results").textContent`); got != "" {
		t.Errorf("room A's big screen shows results before the reveal: %q", got)
	}
	browserEval[bool](teacher, t, `document.getElementById("q-reveal").click(); true`)
	for name, tab := range map[string]context.Context{"A": tabA, "B": tabB} {
		browserPoll(tab, t, "revealed results on "+name, `!!document.querySelector("#room-results .accuracy") && document.querySelector("#room-results .accuracy").textContent.startsWith("2 answered · 1 correct")`)
	}

	// The assistant marks the roster.
	browserEval[bool](phone, t, `document.querySelector('[data-student="stu-0001"] [data-status="present"]').click(); true`)
	browserPoll(phone, t, "stu-0001 marked", `document.querySelector('[data-student="stu-0001"] [data-status="present"]').className === "mark-present"`)
	browserEval[bool](phone, t, `document.querySelector('[data-student="stu-0002"] [data-status="late"]').click(); true`)
	browserPoll(phone, t, "stu-0002 marked", `document.querySelector('[data-student="stu-0002"] [data-status="late"]').className === "mark-late"`)

	// A screen share added mid-class reaches the rooms as a second video
	// track of the lesson (renegotiation on the same connection).
	browserEval[bool](teacher, t, `document.getElementById("share").click(); true`)
	browserPoll(teacher, t, "sharing the screen", `window.teacher.sharing === true`)
	browserPoll(tabA, t, "room A receives the screen", `document.querySelectorAll("#master-video video").length === 2`)

	// Back from the stage: room B stops showing room A.
	browserEval[bool](teacher, t, `document.querySelector("#tile-`+a+` .bar-top button").click(); true`)
	browserPoll(tabB, t, "room A off stage at B", `window.room.state.stage === "" && document.querySelectorAll("#onstage video").length === 0`)
	browserPoll(teacher, t, "stage button reads On stage", `document.querySelector("#tile-`+a+` .bar-top button").textContent === "On stage"`)

	// Mute from the teacher page: enforced by the edge, shown on the tile.
	browserEval[bool](teacher, t, `document.querySelector("#tile-`+b+` .bar-top button:last-child").click(); true`)
	browserPoll(teacher, t, "room B muted", `window.teacher.state.muted.includes("`+b+`") && document.querySelector("#tile-`+b+` .bar-top button:last-child").textContent === "Unmute"`)

	// Room A's control connection drops (not the end of the class): the page
	// joins again by itself and decodes the lesson again.
	browserEval[bool](tabA, t, `window.vf = null; window.room.conn.ws.close(); true`)
	browserPoll(tabA, t, "room A rejoined", `window.room.joins === 2 && window.room.published === true`)
	browserPoll(tabA, t, "room A decoding after rejoining", `(window.room.conn.videoStats().then(f => window.vf = f), !!window.vf && window.vf.master > 0)`)

	screenshot(t, teacher, "teacher.png")
	screenshot(t, tabA, "classroom.png")

	// The master's feed stalls (no frames, as when a cascade is cut): the
	// banner shows while hands keep working, and goes when frames return.
	browserEval[bool](teacher, t, `window.stalled = window.teacher.conn.pub.getSenders().filter(s => s.track && s.track.kind === "video").map(s => [s, s.track]); window.stalled.forEach(([s]) => s.replaceTrack(null)); true`)
	browserPoll(tabB, t, "feed-lost banner", `!document.getElementById("banner").hidden`)
	browserEval[bool](tabB, t, `document.getElementById("hand").click(); true`)
	browserPoll(teacher, t, "hand during the outage", `document.querySelectorAll("#hands li").length === 1`)
	browserEval[bool](phone, t, `document.getElementById("aq-prompt").value = "Which is a mammal?"; document.getElementById("aq-options").value = "whale, shark"; document.getElementById("aq-push").click(); true`)
	browserPoll(tabA, t, "the assistant's quiz on room A's big screen", `document.getElementById("quiz-prompt").textContent === "Which is a mammal?" && document.querySelectorAll("#quiz-options li").length === 2`)
	browserPoll(phone, t, "the assistant's quiz on the phone", `document.getElementById("quiz-prompt").textContent === "Which is a mammal?" && document.querySelectorAll("#quiz-options button").length === 2`)
	browserEval[bool](phone, t, `document.getElementById("student-pick").value = ""; document.querySelectorAll("#quiz-options button")[0].click(); true`)
	browserPoll(phone, t, "the assistant's results during the outage", `!!document.querySelector("#room-results .accuracy") && document.querySelector("#room-results .accuracy").textContent.startsWith("1 answered · 1 correct")`)
	if leaks := browserEval[string](tabB, t, `JSON.stringify([...new Set(window.leaks)])`); leaks != "[]" {
		t.Errorf("room B's big screen showed %s", leaks)
	}
	if !browserEval[bool](tabB, t, `!document.getElementById("banner").hidden`) {
		t.Error("the banner went away while the feed was still stalled")
	}
	browserEval[bool](teacher, t, `window.stalled.forEach(([s, track]) => s.replaceTrack(track)); true`)
	browserPoll(tabB, t, "banner gone after recovery", `document.getElementById("banner").hidden`)

	// Room B's page dies mid-class: gone on the teacher page within
	// seconds, and its leave is recorded.
	// The renderer is crashed, not closed politely: no leave, no page
	// unload handlers; the edge notices the connection end on its own.
	cctx, ccancel := context.WithTimeout(tabB, 2*time.Second)
	_ = chromedp.Do(cctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error { return tg.Call(ctx, "Page.crash", nil, nil) }))
	ccancel()
	closedAt := time.Now()
	ectx, ecancel := context.WithTimeout(tabB, 2*time.Second)
	if _, err := chromedp.Run(ectx, chromedp.Evaluate[int]("1")); err == nil {
		t.Fatal("room B's page still runs after Page.crash")
	}
	ecancel()
	browserPoll(teacher, t, "room B shown gone", `document.getElementById("tile-`+b+`").dataset.present === "no"`)
	if d := time.Since(closedAt); d > 10*time.Second {
		t.Errorf("room B shown gone after %v", d)
	}
	var att struct {
		Classrooms map[string]struct {
			Joins, Leaves int
			Marks         map[string]string
		}
	}
	waitFor(t, 10*time.Second, "room B's leave recorded", func() bool {
		getJSON(t, ctx, e, "/api/v1/sessions/"+browserEval[string](teacher, t, `window.teacher.sessionId`)+"/attendance", &att)
		return att.Classrooms[b].Leaves >= 1
	})
	if ca := att.Classrooms[a]; ca.Joins < 1 || ca.Marks["stu-0001"] != "present" || ca.Marks["stu-0002"] != "late" {
		t.Errorf("room A attendance %+v", ca)
	}
	var recs records
	getJSON(t, ctx, e, "/api/v1/sessions/"+browserEval[string](teacher, t, `window.teacher.sessionId`)+"/records?kind=quiz", &recs)
	answers := map[string]int{}
	for _, r := range recs.Records {
		if r.Kind == "quiz.answer" {
			answers[r.Classroom+"/"+r.Student]++
		}
	}
	// Room A's assistant answered the master's quiz for the room and for
	// stu-0001, and its own quiz for the room; room B's big screen answered nothing.
	if answers[a+"/"] != 2 || answers[b+"/"] != 0 || answers[a+"/stu-0001"] != 1 {
		t.Errorf("stored answers %v", answers)
	}
	// The teacher ends the class: the classroom page goes back to waiting.
	browserEval[bool](teacher, t, `document.getElementById("end").click(); true`)
	browserPoll(tabA, t, "room A waiting after the end", `document.getElementById("status").textContent === "no class now" && !document.getElementById("waiting").hidden && document.getElementById("live").hidden`)
	if errs := browserEval[string](teacher, t, `JSON.stringify(window.teacher.errors)`); errs != "[]" {
		t.Errorf("teacher page errors: %s", errs)
	}
	// The console's panel shows the session's attendance.
	navigate(t, teacher, e.url+"/")
	browserEval[bool](teacher, t, `document.getElementById("token").value = `+jsString(e.admin)+`; document.querySelector('#signin-form button[type="submit"]').click(); true`)
	browserPoll(teacher, t, "console attendance panel", `(() => { const r = document.querySelector('#attendance-panel tr[data-classroom="`+b+`"]'); return !!r && Number(r.children[3].textContent) >= 1 && r.children[1].textContent === "no"; })()`)
	for name, tab := range map[string]context.Context{"window.room": tabA, "window.assistant": phone} {
		errs := browserEval[string](tab, t, `JSON.stringify(`+name+`.errors)`)
		if errs != "[]" {
			t.Errorf("%s page errors: %s", name, errs)
		}
	}
	// From its first paint to the end of the class, room A's big screen
	// never held a student's name, id, mark or per-student answer.
	if leaks := browserEval[string](tabA, t, `JSON.stringify([...new Set(window.leaks)])`); leaks != "[]" {
		t.Errorf("room A's big screen showed %s", leaks)
	}
	if n := browserEval[int](tabA, t, `document.querySelectorAll("video").length`); n == 0 {
		t.Error("room A's page has no video: the DOM check watched an empty page")
	}
}
