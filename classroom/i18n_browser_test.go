package classroom_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/console"
)

// noEmoji is true when no visible text of the page is an emoji: icons are
// inline SVG, which a classroom PC without an emoji font draws too.
const noEmoji = `!/\p{Extended_Pictographic}/u.test(document.body.innerText)`

// TestLivePagesSpeakChinese walks the teacher page, a classroom's big
// screen and the assistant's page in a Chromium whose language is
// Chinese, at the edge's LAN address over HTTPS, with a Chinese school's
// data (初一(3)班 in room 301, a Uyghur pupil's name), and fails on any
// visible string still the English catalogue's and on any emoji. A quiz
// is typed on the teacher page as a Chinese input method types it — full-
// width commas — and reaches the big screen as three options. Screenshots
// of each page in zh-CN and en go to docs/screenshots with
// CAMPUSEDGE_SCREENSHOTS=1.
func TestLivePagesSpeakChinese(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	en, err := console.Catalogue("en")
	if err != nil {
		t.Fatal(err)
	}
	zh, err := console.Catalogue("zh-CN")
	if err != nil {
		t.Fatal(err)
	}
	untranslated := browsertest.Untranslated(en, zh, []string{"English"})
	e := startLANEdge(t, ctx)

	resp, body := e.Do(t, ctx, "POST", "/api/v1/classrooms", e.admin, "application/json", []byte(`{"name":"初一(3)班教室","room_code":"301","homeroom":"初一(3)班"}`))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("classroom: %d %s", resp.StatusCode, body)
	}
	var room struct{ ID string }
	_ = json.Unmarshal(body, &room)
	if resp, body := e.Do(t, ctx, "PUT", "/api/v1/attendance/roster", e.admin, "text/csv",
		[]byte("\ufeff学号,姓名,班级\r\n20250301,阿依古丽·吐尔逊,初一(3)班\r\n20250302,王芳,初一(3)班\r\n")); resp.StatusCode != http.StatusOK {
		t.Fatalf("roster: %d %s", resp.StatusCode, body)
	}
	for _, p := range []string{
		`{"id":"li.laoshi","name":"李老师","roles":["teacher"],"password":"shuxue-chuyi-3"}`,
		`{"id":"chen.jing","name":"陈静","roles":["assistant"],"classrooms":["` + room.ID + `"],"pin":"135790"}`,
	} {
		if resp, body := e.Do(t, ctx, "POST", "/api/v1/staff", e.admin, "application/json", []byte(p)); resp.StatusCode != http.StatusCreated {
			t.Fatalf("staff: %d %s", resp.StatusCode, body)
		}
	}

	browser := browsertest.Start(ctx, t, browsertest.TrustPin(e.tls.Pin), browsertest.Flag("lang", "zh-CN"), browsertest.Flag("accept-lang", "zh-CN,zh"))
	teacher := browser.Context()
	screen, phone := browser.Tab(true), browser.Tab(true)
	walk := func(tab context.Context, page string) {
		t.Helper()
		if bad := browserEval[[]string](tab, t, untranslated); len(bad) > 0 {
			t.Errorf("%s: English strings visible in zh-CN: %q", page, bad)
		}
		if !browserEval[bool](tab, t, noEmoji) {
			t.Errorf("%s: an emoji is visible", page)
		}
	}
	shot := func(tab context.Context, name string) {
		t.Helper()
		dir := t.TempDir()
		if os.Getenv(screenshotsEnv) == "1" {
			dir = filepath.Join("..", "docs", "screenshots")
		}
		sctx, c := context.WithTimeout(tab, 10*time.Second)
		defer c()
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The big screen, paired once with a code.
	_, body = e.Do(t, ctx, "POST", "/api/v1/classrooms/"+room.ID+"/pairing-codes", e.admin, "", nil)
	var pc struct{ Code string }
	if err := json.Unmarshal(body, &pc); err != nil {
		t.Fatal(err)
	}
	navigate(t, screen, e.url+"/classroom.html")
	browsertest.RequireSecureLAN(screen, t)
	browserPoll(screen, t, "pairing form in Chinese", `window.i18n && i18n.lang === "zh-CN" && !document.getElementById("pair").hidden && document.getElementById("pair-go").textContent === "配对"`)
	walk(screen, "classroom page, pairing")
	browserEval[bool](screen, t, `document.getElementById("pair-code").value = `+jsString(pc.Code)+`; document.getElementById("pair-go").click(); true`)
	browserPoll(screen, t, "paired", `document.getElementById("status").textContent === "现在没有课" && document.getElementById("room-name").textContent === "初一(3)班教室"`)
	walk(screen, "classroom page, waiting")

	// The teacher signs in and starts a class.
	navigate(t, teacher, e.url+"/teacher.html")
	browsertest.RequireSecureLAN(teacher, t)
	browserPoll(teacher, t, "teacher page in Chinese", `window.i18n && i18n.lang === "zh-CN" && document.getElementById("start").textContent === "开始上课" && document.getElementById("class-title").value === "课堂"`)
	walk(teacher, "teacher page, sign-in")
	shot(teacher, "teacher-signin-zh-CN")
	browserEval[bool](teacher, t, `document.getElementById("t-id").value = "li.laoshi"; document.getElementById("t-password").value = "shuxue-chuyi-3"; document.getElementById("load").click(); true`)
	browserPoll(teacher, t, "classrooms listed", `document.querySelectorAll(".room").length === 1 && document.getElementById("who").textContent === "李老师"`)
	browserEval[bool](teacher, t, `document.getElementById("class-title").value = "数学：分数的大小"; document.getElementById("start").click(); true`)
	browserPoll(teacher, t, "teacher publishing", `window.teacher.published === true`)
	browserPoll(screen, t, "big screen in the class", `window.room.published === true && document.getElementById("status").dataset.state === "live"`)

	// A raised hand: an SVG icon on both pages, no emoji.
	browserEval[bool](screen, t, `document.getElementById("hand").click(); true`)
	browserPoll(teacher, t, "hand on the teacher page", `document.querySelectorAll("#hands li svg.icon-hand").length === 1 && document.querySelector("#tile-`+room.ID+` .hand").dataset.raised === "yes"`)
	browserPoll(screen, t, "hand up on the big screen", `document.getElementById("hand").dataset.raised === "yes" && document.getElementById("hand-text").textContent === "放下手" && !!document.querySelector("#hand svg.icon-hand")`)

	// A quiz typed as a Chinese input method types it: full-width commas.
	teacherDo := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, c := context.WithTimeout(teacher, 15*time.Second)
		defer c()
		if err := chromedp.Do(sctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	teacherDo("type a quiz",
		chromedp.SendKeys(chromedp.CSS("#q-prompt"), "哪个大？"),
		chromedp.SendKeys(chromedp.CSS("#q-options"), "1/2，1/3，一样大"),
		chromedp.SetValue(chromedp.CSS("#q-correct"), "1"),
		chromedp.Click(chromedp.CSS("#q-push")))
	browserPoll(screen, t, "the quiz's three options on the big screen",
		`[...document.querySelectorAll("#quiz-options li")].map((li) => li.textContent).join("|") === "1/2|1/3|一样大" && document.getElementById("quiz-prompt").textContent === "哪个大？"`)
	if msg := browserEval[string](teacher, t, `document.getElementById("q-error").textContent`); msg != "" {
		t.Errorf("quiz refused: %s", msg)
	}
	browserPoll(teacher, t, "results drawn", `!!document.querySelector("#q-results .accuracy") && document.querySelector("#q-results .accuracy").textContent.startsWith("0 人作答")`)
	walk(teacher, "teacher page, live")
	walk(screen, "classroom page, live")
	shot(teacher, "teacher-zh-CN")
	shot(screen, "classroom-zh-CN")

	// The assistant's phone: sign in, the code from the big screen, the
	// roster by name with the class's name, marks in Chinese.
	code := browserEval[string](screen, t, `document.getElementById("assistant-code").textContent`)
	navigate(t, phone, e.url+"/assistant.html")
	browsertest.RequireSecureLAN(phone, t)
	browserPoll(phone, t, "assistant page in Chinese", `window.i18n && i18n.lang === "zh-CN" && document.getElementById("a-signin").textContent === "登录"`)
	walk(phone, "assistant page, sign-in")
	browserEval[bool](phone, t, `document.getElementById("a-id").value = "chen.jing"; document.getElementById("a-password").value = "135790"; document.getElementById("code").value = `+jsString(code)+`; document.getElementById("a-signin").click(); true`)
	browserPoll(phone, t, "roster by name", `[...document.querySelectorAll("#roster .roster-row .name")].map((n) => n.textContent).join("|") === "阿依古丽·吐尔逊|王芳" && document.querySelector("#roster p").textContent === "初一(3)班（2 人）"`)
	browserPoll(phone, t, "marks in Chinese", `[...document.querySelectorAll("#roster .roster-row")][0].querySelectorAll("button")[0].textContent === "到"`)
	browserPoll(phone, t, "the quiz on the assistant's page", `document.querySelectorAll("#quiz-options button").length === 3`)
	walk(phone, "assistant page, live")
	shot(phone, "assistant-zh-CN")

	// The same pages in English, chosen on each device and remembered.
	for name, tab := range map[string]context.Context{"teacher": teacher, "classroom": screen, "assistant": phone} {
		browserEval[bool](tab, t, `localStorage.setItem("campusedge.lang", "en"); true`)
		navigate(t, tab, e.url+"/"+name+".html")
		browserPoll(tab, t, name+" in English", `window.i18n && i18n.lang === "en" && document.documentElement.lang === "en"`)
	}
	browserPoll(screen, t, "big screen back in the class", `window.room.published === true`)
	shot(screen, "classroom-en")
	browserPoll(teacher, t, "teacher page signed in again", `document.getElementById("who").textContent === "李老师"`)
	shot(teacher, "teacher-en")
	shot(phone, "assistant-en")
}
