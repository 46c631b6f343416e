package classroom_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/browsertest"
)

// insecureHost is a name Chromium does not treat as potentially
// trustworthy (unlike 127.0.0.1 and localhost), mapped to the loopback
// edge: a page loaded through it over plain HTTP is not a secure context,
// exactly as at http://<LAN address> in a school.
const insecureHost = "edge.school.test"

// TestInsecureContextMessageInChromium: the teacher and classroom pages,
// loaded over plain HTTP from a non-secure origin, say in the page itself
// that camera and microphone need HTTPS, name this page's HTTPS address as a
// link and how to trust the edge; "Start class" there throws nothing,
// creates no session and leaves the page at setup.
func TestInsecureContextMessageInChromium(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	if resp, b := e.Do(t, ctx, "POST", "/api/v1/classrooms", e.admin, "application/json", []byte(`{"name":"Room 7A","room_code":"7A"}`)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("classroom: %d %s", resp.StatusCode, b)
	}
	// The HTTPS port the pages must name: the edge's https_port, 8443 when
	// it reports none.
	httpsPort := 8443
	if resp, b := e.Do(t, ctx, "GET", "/api/v1/edge", "", "", nil); resp.StatusCode == http.StatusOK {
		var info struct {
			HTTPSPort int `json:"https_port"`
		}
		if err := json.Unmarshal(b, &info); err == nil && info.HTTPSPort > 0 {
			httpsPort = info.HTTPSPort
		}
	}
	port := mustURL(t, e.url).Port()
	pageBase := "http://" + insecureHost + ":" + port // keep: the LAN/HTTPS move changes this line
	httpsBase := "https://" + insecureHost + ":" + strconv.Itoa(httpsPort)

	b := browsertest.Start(ctx, t, browsertest.Flag("host-resolver-rules", "MAP "+insecureHost+" 127.0.0.1"))
	tab := b.Context()

	// shown is the HTTPS link's text once the message box is visible.
	const shown = `(() => {
	  const box = document.getElementById("media-help"), a = document.getElementById("https-link");
	  if (!box || box.hidden || !a || box.getBoundingClientRect().height === 0) return "";
	  return a.textContent;
	})()`

	for _, page := range []string{"/teacher.html", "/classroom.html"} {
		navigate(t, tab, pageBase+page)
		// Not vacuous: this must really be a non-secure context.
		if secure := browserEval[bool](tab, t, `window.isSecureContext`); secure {
			t.Fatalf("%s%s is a secure context; the test proves nothing", pageBase, page)
		}
		if has := browserEval[bool](tab, t, `navigator.mediaDevices !== undefined`); has {
			t.Fatalf("%s%s has navigator.mediaDevices in a non-secure context", pageBase, page)
		}
		want := httpsBase + page
		if got := b.Poll(page+": the HTTPS message", shown); got != want {
			t.Errorf("%s names %q, want %q", page, got, want)
		}
		if href := browserEval[string](tab, t, `document.getElementById("https-link").href`); !strings.HasPrefix(href, want) {
			t.Errorf("%s: link goes to %q, want %q", page, href, want)
		}
		text := browserEval[string](tab, t, `document.getElementById("media-help").innerText`)
		for _, must := range []string{"HTTPS", "install the school's CA certificate from the console (Settings → HTTPS) or ask the IT admin"} {
			if !strings.Contains(text, must) {
				t.Errorf("%s: the message lacks %q:\n%s", page, must, text)
			}
		}
	}

	// The classroom page still goes on without a camera; the teacher page
	// must not start a class it cannot teach.
	navigate(t, tab, pageBase+"/teacher.html")
	b.Poll("the teacher page's message", shown)
	// Signing in over plain HTTP does not hold: the session cookie is
	// Secure, so the browser drops it, and the page says where to go.
	b.Do("sign in", chromedp.SetValue(chromedp.CSS("#admin"), e.admin), chromedp.Click(chromedp.CSS("#load")))
	if got := b.Poll("sign-in refused over HTTP", `document.getElementById("setup-error").textContent`); !strings.Contains(got, "HTTPS") {
		t.Errorf("sign-in over plain HTTP says %q, want it to point to HTTPS", got)
	}
	b.Do("start the class", chromedp.Click(chromedp.CSS("#start")))
	errText := b.Poll("the start refused in the page", `document.getElementById("setup-error").textContent`)
	if !strings.Contains(errText, "not started") {
		t.Errorf("setup error %q does not say the class was not started", errText)
	}
	state := browserEval[string](tab, t, `JSON.stringify({setup: !document.getElementById("setup").hidden, live: !document.getElementById("live").hidden, conn: !!teacher.conn, session: teacher.sessionId})`)
	if state != `{"setup":true,"live":false,"conn":false,"session":""}` {
		t.Errorf("after Start without a secure context the page is %s, want it still at setup", state)
	}
	if ex := b.Exceptions(); len(ex) > 0 {
		t.Errorf("uncaught exceptions: %v", ex)
	}
	resp, body := e.Do(t, ctx, "GET", "/api/v1/sessions", e.admin, "", nil)
	var list struct {
		Sessions []json.RawMessage `json:"sessions"`
	}
	if err := json.Unmarshal(body, &list); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("sessions: %d %s", resp.StatusCode, body)
	}
	if len(list.Sessions) != 0 {
		t.Errorf("Start without a secure context created %d session(s) on the edge: %s", len(list.Sessions), body)
	}
}
