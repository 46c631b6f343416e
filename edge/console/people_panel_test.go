package console_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/cmd/edged/appliance/appliancetest"
	"github.com/campusedge/campusedge/edge/browsertest"
)

// TestPeoplePanelInChromium: the first sign-in uses the admin token; the
// admin creates their own account and a teacher in the People panel,
// signs out and back in as themselves (the token no longer needed); a
// teacher signing in to the console is pointed to the teacher page; the
// admin sees the teacher's sign-in in "Signed in now" and signs it out,
// after which the teacher's browser is refused; the audit log shows it
// all; no page keeps a credential in web storage, and the session cookie
// is invisible to scripts.
func TestPeoplePanelInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cfg := appliancetest.Config(t)
	edge := startLANEdge(ctx, t, cfg, nil)

	br := browsertest.Start(ctx, t, browsertest.TrustPin(edge.pin))
	admin := br.Context()
	br.Do("open the console", chromedp.Navigate(edge.url+"/"))
	br.RequireSecureLAN()
	br.Do("first sign-in with the token", chromedp.SetValue(chromedp.CSS("#token"), edge.token), chromedp.Click(chromedp.CSS("#signin-token")))
	poll[bool](admin, t, "console open", `!document.getElementById("app").hidden`)

	create := func(id, name, role, secret string) {
		t.Helper()
		eval[bool](admin, t, `(() => {
		  document.getElementById("staff-clear").click();
		  document.getElementById("staff-id").value = `+js(id)+`;
		  document.getElementById("staff-name").value = `+js(name)+`;
		  for (const i of document.querySelectorAll(".staff-role")) i.checked = i.value === `+js(role)+`;
		  document.getElementById("staff-password").value = `+js(secret)+`;
		  document.getElementById("staff-form").requestSubmit(); return true; })()`)
		poll[bool](admin, t, id+" listed", `(() => { const r = document.querySelector('#staff-list tr[data-staff=`+js(id)+`]'); return !!r && r.children[2].textContent === `+js(role)+`; })()`)
	}
	create("li.admin", "Li Admin", "admin", "admin-password-1")
	create("wang.li", "王丽", "teacher", "246810")
	if c := eval[string](admin, t, `document.querySelector('#staff-list tr[data-staff="wang.li"]').children[4].textContent`); c != "pin" {
		t.Errorf("wang.li's credential shows %q, want pin", c)
	}

	// Sign out; sign in as oneself.
	br.Do("sign out", chromedp.Click(chromedp.CSS("#signout")))
	poll[bool](admin, t, "signed out", `!document.getElementById("signin").hidden && document.getElementById("app").hidden`)
	eval[bool](admin, t, `document.getElementById("token").value = ""; document.getElementById("signin-id").value = "li.admin"; document.getElementById("signin-password").value = "admin-password-1"; document.getElementById("signin-form").requestSubmit(); true`)
	poll[bool](admin, t, "signed in as li.admin", `!document.getElementById("app").hidden && document.getElementById("who").textContent === "Li Admin"`)

	// The teacher, in another browser context, signs in to the console.
	teacher, tcancel := chromedp.NewContext(admin, chromedp.WithNewBrowserContext())
	defer tcancel()
	if err := chromedp.Do(teacher, chromedp.Navigate(edge.url+"/")); err != nil {
		t.Fatal(err)
	}
	eval[bool](teacher, t, `document.getElementById("signin-id").value = "wang.li"; document.getElementById("signin-password").value = "246810"; document.getElementById("signin-form").requestSubmit(); true`)
	poll[bool](teacher, t, "teacher pointed to the teacher page", `!document.getElementById("signin-other").hidden && document.getElementById("signin-who").textContent === "王丽" && document.getElementById("app").hidden`)
	for name, tab := range map[string]context.Context{"admin": admin, "teacher": teacher} {
		if !eval[bool](tab, t, `localStorage.length === 0 && sessionStorage.length === 0 && !document.cookie.includes("campusedge")`) {
			t.Errorf("%s's browser keeps a credential where scripts can read it", name)
		}
	}
	// The admin sees the teacher signed in and signs them out.
	poll[bool](admin, t, "teacher in Signed in now", `[...document.querySelectorAll("#signin-list tr")].some(r => r.textContent.includes("wang.li"))`)
	eval[bool](admin, t, `[...document.querySelectorAll("#signin-list tr")].find(r => r.textContent.includes("wang.li")).querySelector("button").click(); true`)
	poll[bool](admin, t, "teacher gone from Signed in now", `![...document.querySelectorAll("#signin-list tr")].some(r => r.textContent.includes("wang.li"))`)
	poll[bool](teacher, t, "the revoked browser refused", `(() => { if (window.st === undefined) { window.st = 0; fetch("/api/v1/auth/me").then(r => window.st = r.status); } return window.st === 401; })()`)

	// The audit log.
	eval[bool](admin, t, `document.dispatchEvent(new Event("ce-signed-in")); true`)
	poll[bool](admin, t, "audit log", `["signin", "staff.create", "signout", "signin.revoke"].every(a => !!document.querySelector('#audit-list tr[data-audit="' + a + '"]'))`)
	text := eval[string](admin, t, `document.getElementById("audit-list").innerText`)
	if !strings.Contains(text, "li.admin") || !strings.Contains(text, "(admin token)") {
		t.Errorf("audit log lacks the actors:\n%s", text)
	}
}

func js(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}
