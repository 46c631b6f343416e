package classroom_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/browsertest"
)

// TestCrossOriginRefusedInChromium: an admin signed in to the console in
// Chromium (LAN address, HTTPS) visits another site's page — same host,
// another port, so the browser counts it the same site and does send the
// SameSite=Strict cookie — which posts a form to the edge to create an
// admin account and fires a no-cors fetch to create a classroom. The
// edge's Origin check refuses both (403 cross_origin) and nothing is
// created; the same change from the edge's own page succeeds. A request
// without the cookie, from a browser that never signed in, gets 401.
func TestCrossOriginRefusedInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	e := startLANEdge(t, ctx)

	// The other site: HTTPS on another port of the same LAN address.
	var attackPage string
	att := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, attackPage)
	}))
	ln, err := net.Listen("tcp", browsertest.LANAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	att.Listener = ln
	att.StartTLS()
	defer att.Close()
	sum := sha256.Sum256(att.Certificate().RawSubjectPublicKeyInfo)
	attPin := base64.StdEncoding.EncodeToString(sum[:])
	// A form post (text/plain bodies make JSON) and a no-cors fetch with the cookie.
	attackPage = `<!doctype html><html><body>
<form id="f" method="POST" action="` + e.url + `/api/v1/staff" enctype="text/plain">
<input type="hidden" name='{"id":"evil.admin","name":"Evil","roles":["admin"],"password":"evil-password","x":"' value='"}'>
</form>
<script>
fetch("` + e.url + `/api/v1/classrooms", {method: "POST", mode: "no-cors", credentials: "include", headers: {"Content-Type": "text/plain"}, body: JSON.stringify({name: "Evil room", room_code: "EVIL"})})
  .finally(() => document.getElementById("f").submit());
</script></body></html>`

	browser := browsertest.Start(ctx, t, browsertest.TrustPin(e.tls.Pin), browsertest.TrustPin(attPin))
	admin := browser.Context()
	// The admin signs in to the console with the admin token (first sign-in).
	navigate(t, admin, e.url+"/")
	browsertest.RequireSecureLAN(admin, t)
	browserEval[bool](admin, t, `document.getElementById("token").value = `+jsString(e.admin)+`; document.querySelector('#signin-form button[type="submit"]').click(); true`)
	browserPoll(admin, t, "console open", `!document.getElementById("app").hidden`)
	// The cookie works for the edge's own page (so the refusals below are the Origin check's).
	if got := awaitInt(admin, t, `fetch("/api/v1/staff", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({id: "own.page", name: "Own Page", roles: ["teacher"]})}).then(r => r.status)`); got != http.StatusCreated {
		t.Fatalf("same-origin create with the cookie: %d", got)
	}

	// The other site's page: its form lands on the edge's answer.
	navigate(t, admin, att.URL+"/")
	pollThroughNavigation(admin, t, "the form post answered", `location.href.startsWith(`+jsString(e.url)+`) && document.body.innerText.includes("error")`)
	body := browserEval[string](admin, t, `document.body.innerText`)
	if !strings.Contains(body, "cross_origin") {
		t.Errorf("the cross-origin form post got %q, want a cross_origin refusal", body)
	}
	var staffList struct {
		Staff []struct{ ID string } `json:"staff"`
	}
	getJSON(t, ctx, e, "/api/v1/staff", &staffList)
	for _, p := range staffList.Staff {
		if p.ID == "evil.admin" {
			t.Error("the cross-origin form post created an admin account")
		}
	}
	var rooms struct {
		Classrooms []struct{ RoomCode string } `json:"classrooms"`
	}
	getJSON(t, ctx, e, "/api/v1/classrooms", &rooms)
	for _, c := range rooms.Classrooms {
		if c.RoomCode == "EVIL" {
			t.Error("the cross-origin fetch created a classroom")
		}
	}

	// A browser that never signed in: no cookie, 401.
	fresh, fcancel := chromedp.NewContext(admin, chromedp.WithNewBrowserContext())
	defer fcancel()
	if err := chromedp.Do(fresh); err != nil {
		t.Fatal(err)
	}
	navigate(t, fresh, e.url+"/")
	for _, call := range []string{`fetch("/api/v1/staff").then(r => r.status)`,
		`fetch("/api/v1/classrooms", {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"}).then(r => r.status)`} {
		if got := awaitInt(fresh, t, call); got != http.StatusUnauthorized {
			t.Errorf("%s without the cookie: %d, want 401", call, got)
		}
	}
	// Signed out, the admin's browser is refused too.
	navigate(t, admin, e.url+"/")
	browserPoll(admin, t, "console open again", `!document.getElementById("app").hidden`)
	browserEval[bool](admin, t, `document.getElementById("signout").click(); true`)
	browserPoll(admin, t, "signed out", `!document.getElementById("signin").hidden`)
	waitFor(t, 5*time.Second, "the signed-out cookie refused", func() bool {
		return awaitInt(admin, t, `fetch("/api/v1/staff").then(r => r.status)`) == http.StatusUnauthorized
	})
}

// awaitInt evaluates a promise of a number in tab and returns its value.
func awaitInt(tab context.Context, t *testing.T, promise string) int {
	t.Helper()
	browserEval[bool](tab, t, `window.__awaited = undefined; (`+promise+`).then(v => window.__awaited = v, e => window.__awaited = -1); true`)
	browserPoll(tab, t, "promise settled", `window.__awaited !== undefined`)
	return browserEval[int](tab, t, `window.__awaited`)
}

// pollThroughNavigation is browserPoll for a page that navigates on its
// own: an evaluation that meets the old page going away is tried again.
func pollThroughNavigation(tab context.Context, t *testing.T, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ectx, cancel := context.WithTimeout(tab, 2*time.Second)
		ok, err := chromedp.Run(ectx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within 20 s", what)
}
