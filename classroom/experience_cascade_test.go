package classroom_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/browsertest"
)

// TestClassroomPageSurvivesCascadeCut: a master teacher's page at school A
// (real Chromium camera) teaches a classroom page at school B through the
// cascade (B pulls the lesson over a cut-able "WAN"). When the WAN is cut
// the classroom page shows the banner while its hand and its assistant's
// quiz (pushed from the assistant's page) keep working; when the WAN returns the lesson comes back and the
// banner goes, with nobody touching the page.
func TestClassroomPageSurvivesCascadeCut(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	// Both schools' pages are at LAN addresses over HTTPS; the browser
	// trusts each edge's key. The WAN between the edges is the relay below,
	// reaching A's plain HTTP side from loopback, as before (cascade over
	// TLS is not part of this test).
	a := startLANEdge(t, ctx)
	b := startLANEdge(t, ctx)
	sa := a.createSession(t, ctx, "City lesson")
	sb := b.createClass(t, ctx, "City lesson at B", 1)
	cid := sb.Classrooms[0]
	wan := startWAN(t, a.tls.URL[len("https://"):])

	browser := browsertest.Start(ctx, t, browsertest.TrustPin(a.tls.Pin), browsertest.TrustPin(b.tls.Pin))
	teacher := browser.Context()
	room := browser.Tab(true)

	// The master teaches at A from a link with the session's master token.
	navigate(t, teacher, a.url+"/teacher.html#session="+sa.ID+"&master="+url.QueryEscape(sa.Tokens.Master))
	browsertest.RequireSecureLAN(teacher, t)
	browserPoll(teacher, t, "teacher publishing at A", `window.teacher.published === true`)

	// B takes the lesson from A over the WAN.
	req, _ := json.Marshal(map[string]any{
		"url": "https://" + wan.addr + "/whep/" + sa.ID, "token": sa.Tokens.Cascade, "pin": a.tls.Pin,
		"ice_servers":          []map[string]any{{"urls": []string{wan.turnURL}, "username": "edge-b", "credential": "wan-secret"}},
		"ice_transport_policy": "relay",
	})
	if resp, rb := b.Do(t, ctx, "PUT", "/api/v1/sessions/"+sb.ID+"/upstream", b.admin, "application/json", req); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PUT upstream: %d %s", resp.StatusCode, rb)
	}

	// B's classroom page, paired once, joins by itself and shows the lesson.
	pairPage(t, ctx, b, room, cid)
	browserPoll(room, t, "joined at B", `window.room.published === true && !!window.room.state && window.room.state.session_state === "live"`)
	browserPoll(room, t, "decoding the lesson from A", `(window.room.conn.videoStats().then(f => window.vf = f), !!window.vf && window.vf.master > 0)`)
	if !browserEval[bool](room, t, `document.getElementById("banner").hidden`) {
		t.Fatal("banner shown while the lesson arrives")
	}

	// Cut the WAN: the banner; the local class goes on.
	wan.cut.Store(true)
	cutAt := time.Now()
	browserPoll(room, t, "feed-lost banner at B", `!document.getElementById("banner").hidden`)
	t.Logf("banner %v after the WAN cut", time.Since(cutAt).Round(100*time.Millisecond))
	browserEval[bool](room, t, `document.getElementById("hand").click(); true`)
	browserPoll(room, t, "hand raised at B during the cut", `document.getElementById("hand").dataset.raised === "yes"`)
	// The assistant at B, on a phone by the big screen's code, pushes
	// the room's own quiz: the big screen shows the question, the
	// assistant answers for the room and sees the results.
	if resp, body := b.Do(t, ctx, "POST", "/api/v1/staff", b.admin, "application/json", []byte(`{"id":"b.assist","name":"Assistant at B","roles":["assistant"],"password":"assist-pass-b"}`)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("staff: %d %s", resp.StatusCode, body)
	}
	phone := browser.Tab(true)
	code := browserEval[string](room, t, `document.getElementById("assistant-code").textContent`)
	navigate(t, phone, b.url+"/assistant.html#code="+code)
	browserEval[bool](phone, t, `document.getElementById("a-id").value = "b.assist"; document.getElementById("a-password").value = "assist-pass-b"; document.getElementById("a-signin").click(); true`)
	browserPoll(phone, t, "assistant in B's class during the cut", `document.getElementById("status").textContent === "in class"`)
	browserEval[bool](phone, t, `document.getElementById("aq-prompt").value = "Local question"; document.getElementById("aq-options").value = "yes, no"; document.getElementById("aq-push").click(); true`)
	browserPoll(room, t, "the assistant's quiz on B's big screen", `document.getElementById("quiz-prompt").textContent === "Local question" && document.querySelectorAll("#quiz-options li").length === 2`)
	browserPoll(phone, t, "the assistant's quiz on the phone", `document.querySelectorAll("#quiz-options button").length === 2`)
	browserEval[bool](phone, t, `document.querySelectorAll("#quiz-options button")[0].click(); true`)
	browserPoll(phone, t, "results at B during the cut", `!!document.querySelector("#room-results .accuracy") && document.querySelector("#room-results .accuracy").textContent.startsWith("1 answered · 1 correct")`)

	// Restore: the lesson comes back and the banner goes by itself.
	wan.cut.Store(false)
	restored := time.Now()
	browserPoll(room, t, "banner gone after the WAN returned", `document.getElementById("banner").hidden`)
	t.Logf("banner gone %v after the WAN returned", time.Since(restored).Round(100*time.Millisecond))
	if errs := browserEval[string](room, t, `JSON.stringify(window.room.errors)`); errs != "[]" {
		t.Errorf("classroom page errors: %s", errs)
	}
}
