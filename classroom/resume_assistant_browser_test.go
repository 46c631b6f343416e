package classroom_test

import (
	"context"
	"encoding/json"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/browsertest"
)

// TestAssistantPageResumesAfterKillInChromium: an assistant teacher's
// phone page (signed in with their own account, opened with the code on
// the big screen) has the roster marked and the room's own quiz open when
// the real edged is killed with SIGKILL and restarted on the same data dir
// and ports, as systemd would. The page comes back by itself, with the
// same code, and shows the roster with its marks and the open quiz as
// before; an answer after the restart is taken. The big screen shows the
// same code as before the restart.
func TestAssistantPageResumesAfterKillInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	e, p, start, browser := killableLANEdge(t, ctx, "-reconnect-grace", "15s")

	resp, b := e.Do(t, ctx, "POST", "/api/v1/classrooms", e.admin, "application/json", []byte(`{"name":"七年级（1）班","room_code":"7A"}`))
	var room struct{ ID string }
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &room) != nil {
		t.Fatalf("classroom: %d %s", resp.StatusCode, b)
	}
	if resp, body := e.Do(t, ctx, "PUT", "/api/v1/attendance/roster", e.admin, "text/csv",
		[]byte("student_id,name,homeroom,groups\nstu-0001,李伟,7A,\nstu-0002,王芳,7A,\n")); resp.StatusCode != http.StatusOK {
		t.Fatalf("roster: %d %s", resp.StatusCode, body)
	}
	if resp, body := e.Do(t, ctx, "POST", "/api/v1/staff", e.admin, "application/json",
		[]byte(`{"id":"chen.jing","name":"陈静","roles":["assistant"],"classrooms":["`+room.ID+`"],"pin":"135790"}`)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("staff: %d %s", resp.StatusCode, body)
	}
	e.createClassIn(t, ctx, "语文：静夜思", []string{room.ID})

	screen, phone := browser.Context(), browser.Tab(true)
	pairPage(t, ctx, e, screen, room.ID)
	browserPoll(screen, t, "the big screen in class with its assistant code", `window.room.joins >= 1 && /^[0-9]{6}$/.test(document.getElementById("assistant-code").textContent)`)
	code := browserEval[string](screen, t, `document.getElementById("assistant-code").textContent`)

	navigate(t, phone, e.url+"/assistant.html")
	browsertest.RequireSecureLAN(phone, t)
	browserEval[bool](phone, t, `document.getElementById("a-id").value = "chen.jing"; document.getElementById("a-password").value = "135790"; document.getElementById("code").value = `+jsString(code)+`; document.getElementById("a-signin").click(); true`)
	browserPoll(phone, t, "the assistant in the class with the roster", `window.assistant.link === "connected" && document.querySelectorAll("#roster .roster-row").length === 2`)
	browserEval[bool](phone, t, `document.querySelector('[data-student="stu-0001"] [data-status="present"]').click(); true`)
	browserPoll(phone, t, "stu-0001 marked present", `document.querySelector('[data-student="stu-0001"] [data-status="present"]').className === "mark-present"`)
	browserEval[bool](phone, t, `document.querySelector('[data-student="stu-0002"] [data-status="late"]').click(); true`)
	browserPoll(phone, t, "stu-0002 marked late", `document.querySelector('[data-student="stu-0002"] [data-status="late"]').className === "mark-late"`)
	browserEval[bool](phone, t, `document.getElementById("aq-prompt").value = "“床前明月光”的下一句？"; document.getElementById("aq-options").value = "疑是地上霜，举头望明月"; document.getElementById("aq-correct").value = "1"; document.getElementById("aq-push").click(); true`)
	browserPoll(phone, t, "the room's quiz on the phone", `document.querySelectorAll("#quiz-options button").length === 2`)

	// As the page would be after the restart: the same roster, marks and
	// quiz, on a connection made after it.
	restored := `window.assistant.reconnects >= 1 && window.assistant.link === "connected" && window.assistant.joins >= 2 &&
		document.querySelectorAll("#roster .roster-row").length === 2 &&
		document.querySelector('[data-student="stu-0001"] [data-status="present"]').className === "mark-present" &&
		document.querySelector('[data-student="stu-0002"] [data-status="late"]').className === "mark-late" &&
		!document.getElementById("quiz").hidden && document.getElementById("quiz-prompt").textContent === "“床前明月光”的下一句？" &&
		document.querySelectorAll("#quiz-options button").length === 2`
	// Nothing of it is shown from before: the quiz and roster are cleared
	// as the page would find them freshly opened.
	browserEval[bool](phone, t, `document.getElementById("quiz").hidden = true; document.getElementById("quiz-prompt").textContent = ""; document.getElementById("roster").textContent = ""; window.assistant.marks = {}; true`)
	killed := time.Now()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	p = start()
	for deadline := time.Now().Add(20 * time.Second); !browserEval[bool](phone, t, restored); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the assistant page not back with roster, marks and quiz 20 s after the restart: %s", browserEval[string](phone, t,
				`JSON.stringify({link: window.assistant.link, reconnects: window.assistant.reconnects, joins: window.assistant.joins, errors: window.assistant.errors, marks: window.assistant.marks, status: document.getElementById("status").textContent, rows: document.querySelectorAll("#roster .roster-row").length, quiz: document.getElementById("quiz-prompt").textContent, quizHidden: document.getElementById("quiz").hidden, roomError: document.getElementById("room-error").textContent})`))
		}
	}
	t.Logf("assistant page back with roster, marks and quiz %v after the kill", time.Since(killed).Round(100*time.Millisecond))
	browserEval[bool](phone, t, `document.getElementById("student-pick").value = "stu-0002"; document.querySelectorAll("#quiz-options button")[0].click(); true`)
	browserPoll(phone, t, "an answer after the restart saved", `document.getElementById("quiz-note").textContent.includes("王芳")`)
	browserPoll(screen, t, "the big screen back in class", `window.room.joins >= 2`)
	if got := browserEval[string](screen, t, `document.getElementById("assistant-code").textContent`); got != code {
		t.Errorf("the big screen shows code %q after the restart, want %q as before", got, code)
	}
	if errs := browserEval[string](phone, t, `window.assistant.errors.filter(e => !e.startsWith("connect:")).join("; ")`); errs != "" {
		t.Errorf("the assistant page got errors: %s", errs)
	}
}
