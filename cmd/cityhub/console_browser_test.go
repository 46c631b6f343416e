package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/console"
	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/sync/schooldata"
)

// shot captures the page; CAMPUSEDGE_SCREENSHOTS=1 writes it to
// docs/screenshots.
func shot(t *testing.T, br *browsertest.Browser, name string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(br.Context(), 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
	if err != nil || len(png) < 1000 {
		t.Fatalf("screenshot %s: %d bytes, %v", name, len(png), err)
	}
	if os.Getenv("CAMPUSEDGE_SCREENSHOTS") == "1" {
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "screenshots", name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func jsStr(s string) string { b, _ := json.Marshal(s); return string(b) }

// TestCityConsoleInChromium drives the city console in headless Chromium
// over HTTPS at a LAN address against a real cityhub (run, as main runs
// it): a city admin signs in, adds two schools and issues a token (shown
// with its QR code); a real edge (bbolt, outbox, uplink) enrols with the
// token read off the page, syncs, and shows online; a roster import
// previews with its row errors and no Apply, then the fixed file previews,
// applies and reaches the edge; a catalogue item gets a subject and grade;
// a school admin of the other school sees neither the first school nor its
// edge, and the API refuses it too.
func TestCityConsoleInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	browsertest.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	data := t.TempDir()
	media := t.TempDir()
	os.WriteFile(filepath.Join(media, "fractions.mp4"), []byte("lesson bytes"), 0o600)
	if code, _, errs := cli(ctx, "-data", data, "import", media); code != 0 {
		t.Fatalf("catalogue import: %s", errs)
	}
	// A signed firmware bundle to publish once the hub runs.
	_, pubPath, err := bundle.GenerateKey(filepath.Join(data, "firmware", "release-keys"), nil)
	if err != nil {
		t.Fatal(err)
	}
	fwKey, _ := bundle.LoadPrivateKey(strings.TrimSuffix(pubPath, ".pub") + ".key")
	payload := filepath.Join(t.TempDir(), "payload")
	os.MkdirAll(payload, 0o755)
	os.WriteFile(filepath.Join(payload, "edged"), []byte("bin"), 0o755)
	fwBundle := filepath.Join(t.TempDir(), "fw.bundle")
	if _, err := bundle.Create(bundle.Build{Dir: payload, Product: "campusedge", Target: "linux-amd64", Version: "1.1.0", Entry: "edged"}, fwKey, fwBundle); err != nil {
		t.Fatal(err)
	}
	h := runHub(ctx, t, data, browsertest.LANListen)
	mustCLI := h.cli
	t.Setenv("CITYHUB_PASSWORD", "ada's long password")
	mustCLI("account", "add", "ada", "city_admin")
	pin := mustCLI("tls-pin")
	base := h.base()

	br := browsertest.Start(ctx, t, browsertest.TrustPin(pin))
	br.Do("open the console", chromedp.Navigate(base+"/console/"))
	br.RequireSecureLAN()
	if hidden := br.Poll("plain-HTTP warning", `String(document.getElementById("plain-http").hidden)`); hidden != "true" {
		t.Error("the plain-HTTP warning shows over HTTPS")
	}
	signIn := func(user, pw string) {
		br.Do("sign in as "+user, chromedp.SetValue(chromedp.CSS("#user"), user), chromedp.SetValue(chromedp.CSS("#password"), pw),
			chromedp.Click(chromedp.CSS(`#signin-form button[type="submit"]`)))
		br.Poll("signed in as "+user, `!document.getElementById("app").hidden && document.getElementById("who").textContent`)
	}
	signIn("ada", "ada's long password")

	// Schools.
	for _, s := range [][2]string{{"north", "North Middle School"}, {"south", "South Primary"}} {
		br.Do("add school "+s[0], chromedp.SetValue(chromedp.CSS("#school-code"), s[0]), chromedp.SetValue(chromedp.CSS("#school-name"), s[1]),
			chromedp.Click(chromedp.CSS(`#school-form button`)))
		br.Poll("school "+s[0]+" listed", `document.querySelector('#schools tr[data-school="`+s[0]+`"]') ? "y" : ""`)
	}

	// Token with its QR code.
	br.Do("tokens tab", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="tokens"]`)))
	br.Poll("school choices", `document.querySelector('#token-school option[value="north"]') ? "y" : ""`)
	br.Do("issue a token for north", chromedp.SetValue(chromedp.CSS("#token-school"), "north"), chromedp.Click(chromedp.CSS(`#token-form button`)))
	tok := br.Poll("token shown", `(() => { const q = document.getElementById("token-qr");
		return q.complete && q.naturalWidth >= 200 ? document.getElementById("token-out").textContent : ""; })()`)
	if !strings.HasSuffix(tok, "~"+pin) {
		t.Fatalf("token %q does not carry the hub's pin %s", tok, pin)
	}
	br.Poll("token listed", `document.querySelectorAll("#tokens tr").length === 1 ? "y" : ""`)
	shot(t, br, "city-tokens.png")

	// A real edge enrols with the token from the page and syncs.
	edge := enrolEdge(ctx, t, base, tok)
	key, ob, enr := edge.key, edge.ob, edge.enr
	var roster []byte
	var rmu sync.Mutex
	up := edge.uplink(base, 0, func(_ *bolt.Tx, kind string, d []byte) error {
		rmu.Lock()
		defer rmu.Unlock()
		if kind == schooldata.KindRoster {
			roster = bytes.Clone(d)
		}
		return nil
	})
	ob.Append(ctx, "attendance.mark", []byte(`{"s":"s1"}`))
	if _, err := up.SendOnce(ctx, enr); err != nil {
		t.Fatal(err)
	}
	br.Do("edges tab", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="edges"]`)))
	br.Poll("edge online", `(() => { const r = document.querySelector('#edges [data-edge="`+key.EdgeID()+`"]');
		return r && r.dataset.health === "ok" ? r.innerText : ""; })()`)
	shot(t, br, "city-edges.png")
	// 中文: the edge's catalogues and loader (/i18n.js); choosing reloads
	// the page, the session stays.
	setLang := func(tag string) {
		// SetValue fires the menu's change event: the page reloads in tag.
		br.Do("switch to "+tag, chromedp.SetValue(chromedp.CSS("#lang select.lang-switch"), tag))
		br.PollAcrossReload("page in "+tag, `window.i18n && i18n.lang === "`+tag+`" && document.documentElement.lang === "`+tag+`" && !document.getElementById("app").hidden && window.cityTabDone ? "y" : ""`)
	}
	setLang("zh-CN")
	br.Do("edges tab in Chinese", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="edges"]`)))
	br.Poll("edges in Chinese", `window.cityTabDone === "edges" && document.querySelector('#edges [data-edge] .pill').textContent === "在线" ? "y" : ""`)
	en, _ := console.Catalogue("en")
	zh, _ := console.Catalogue("zh-CN")
	if bad := br.Poll("English left on the page", `JSON.stringify(`+browsertest.Untranslated(en, zh, []string{"English", "north", "South Primary", "North Middle School"})+`)`); bad != "[]" {
		t.Errorf("edges panel in zh-CN: English strings visible: %s", bad)
	}
	shot(t, br, "city-edges-zh.png")
	// Import row errors in Chinese too.
	br.Do("imports tab in Chinese", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="imports"]`)))
	br.Poll("import school choices", `document.querySelector('#import-school option[value="north"]') ? "y" : ""`)
	br.Do("preview a bad roster in Chinese", chromedp.SetValue(chromedp.CSS("#import-school"), "north"),
		chromedp.SetValue(chromedp.CSS("#import-csv"), "student_id,name,homeroom,groups\ns1,Wang Fang,7A,math-1\ns 2,Li Lei,7A,\ns3,,7B,\n"),
		chromedp.Click(chromedp.CSS("#import-preview")))
	zhErrs := br.Poll("row errors in Chinese", `document.querySelectorAll("#import-errors tr").length === 2 ? document.getElementById("import-errors").innerText : ""`)
	if !strings.ContainsAny(zhErrs, "应须是") {
		t.Errorf("row errors in zh-CN are not in Chinese: %q", zhErrs)
	}
	shot(t, br, "city-import-errors-zh.png")
	setLang("en")
	br.Do("edges tab in English", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="edges"]`)))
	br.Poll("edges in English", `document.querySelector('#edges [data-edge] .pill') && document.querySelector('#edges [data-edge] .pill').textContent === "online" ? "y" : ""`)

	// Roster import: errors first, then the fixed file.
	br.Do("imports tab", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="imports"]`)))
	br.Poll("import school choices", `document.querySelector('#import-school option[value="north"]') ? "y" : ""`)
	br.Do("preview a bad roster", chromedp.SetValue(chromedp.CSS("#import-school"), "north"),
		chromedp.SetValue(chromedp.CSS("#import-csv"), "student_id,name,homeroom,groups\ns1,Wang Fang,7A,math-1\ns 2,Li Lei,7A,\ns3,,7B,\n"),
		chromedp.Click(chromedp.CSS("#import-preview")))
	errs := br.Poll("row errors shown", `document.querySelectorAll("#import-errors tr").length === 2 ? document.getElementById("import-errors").innerText : ""`)
	if !strings.Contains(errs, "3") || !strings.Contains(errs, "4") {
		t.Errorf("row errors %q do not name rows 3 and 4", errs)
	}
	if disabled := br.Poll("apply state", `String(document.getElementById("import-apply").disabled)`); disabled != "true" {
		t.Error("Apply is enabled for a file with row errors")
	}
	shot(t, br, "city-import-errors.png")
	br.Do("preview the fixed roster", chromedp.SetValue(chromedp.CSS("#import-csv"), "student_id,name,homeroom,groups\ns1,Wang Fang,7A,math-1\ns2,Li Lei,7A,\ns3,Han Meimei,7B,\n"),
		chromedp.Click(chromedp.CSS("#import-preview")))
	br.Poll("preview without errors", `!document.getElementById("import-apply").disabled && document.querySelectorAll('#import-diff tr[data-op="add"]').length === 3 ? "y" : ""`)
	br.Do("apply", chromedp.Click(chromedp.CSS("#import-apply")))
	br.Poll("applied", `document.getElementById("import-result").className === "ok" ? "y" : ""`)
	if err := up.PullOnce(ctx); err != nil {
		t.Fatal(err)
	}
	// The applied roster downloads from the panel's export link.
	exported := br.Poll("roster export", `(() => { if (!window.exp) { window.exp = "…"; fetch(document.querySelector('#exports a[data-export="roster"]').href)
		.then(async (r) => { window.exp = r.status + " " + r.headers.get("Content-Type") + " " + await r.text(); }); }
		return window.exp === "…" ? "" : window.exp; })()`)
	if !strings.HasPrefix(exported, "200 text/csv") || !strings.Contains(exported, "Han Meimei") {
		t.Errorf("roster export from the Imports panel: %.200s", exported)
	}
	var r schooldata.Roster
	rmu.Lock()
	_ = json.Unmarshal(roster, &r)
	rmu.Unlock()
	if len(r.Students) != 3 || r.Students[2].Name != "Han Meimei" {
		t.Fatalf("the edge's roster after apply: %+v", r)
	}

	// Catalogue: subject and grade.
	br.Do("catalogue tab", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="catalog"]`)))
	br.Poll("item listed", `document.querySelector("#catalog tr[data-item]") ? "y" : ""`)
	br.Do("edit the item", chromedp.SetValue(chromedp.CSS(`#catalog input[data-field="subject"]`), "math"),
		chromedp.SetValue(chromedp.CSS(`#catalog input[data-field="grade"]`), "5"),
		chromedp.Click(chromedp.CSS(`#catalog button`)))
	br.Poll("item saved", `(() => { if (!window.itemCheck) { window.itemCheck = "…"; fetch("/api/v1/admin/catalog").then(r => r.json()).then(j => { window.itemCheck = j.items[0].subject + "/" + j.items[0].grade; }); }
		return window.itemCheck === "math/5" ? "y" : (window.itemCheck === "…" ? "" : (window.itemCheck = "", "")); })()`)

	// Firmware: a release on beta at the first wave, the real edge reporting
	// it runs it; the city admin advances a wave, then stops the rollout.
	plain := "http://" + h.plain.String()
	pubTok, _ := os.ReadFile(filepath.Join(data, "firmware", "publish-token"))
	staffTok, _ := os.ReadFile(filepath.Join(data, "staff-token"))
	post := func(url, tok, ctype string, body []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("POST %s: %s", url, resp.Status)
		}
	}
	fwBody, _ := os.ReadFile(fwBundle)
	post(plain+"/api/v1/firmware/releases?channel=beta&rollout=1", string(pubTok), "application/octet-stream", fwBody)
	check, _ := json.Marshal(map[string]string{"edge_id": key.EdgeID(), "school": "north", "product": "campusedge", "target": "linux-amd64", "channel": "beta", "version": "1.1.0", "state": "idle"})
	post(plain+"/api/v1/firmware/check", string(staffTok), "application/json", check)
	br.Do("firmware tab", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="firmware"]`)))
	row := `document.querySelector('#firmware tr[data-release="linux-amd64/1.1.0"]')`
	if got := br.Poll("release at wave 1", `(() => { const r = `+row+`; return r && r.dataset.rollout === "1" ? r.innerText : ""; })()`); !strings.Contains(got, "1 / 1") {
		t.Errorf("release row %q lacks the edge's progress 1 / 1", got)
	}
	br.Do("advance a wave", chromedp.Click(chromedp.CSS(`#firmware tr[data-release="linux-amd64/1.1.0"] button[data-act="next"]`)))
	br.Poll("release at wave 5", `(() => { const r = `+row+`; return r && r.dataset.rollout === "5" ? "y" : ""; })()`)
	shot(t, br, "city-firmware.png")
	br.Do("stop the rollout", chromedp.Click(chromedp.CSS(`#firmware tr[data-release="linux-amd64/1.1.0"] button[data-act="stop"]`)))
	br.Poll("release stopped", `(() => { const r = `+row+`; return r && r.dataset.rollout === "0" && !r.querySelector('button[data-act="stop"]') ? "y" : ""; })()`)
	// The channel itself answers with the stopped rollout.
	resp, err := staffGet(t, data, plain+"/api/v1/firmware/releases")
	if err != nil {
		t.Fatal(err)
	}
	var rels struct {
		Releases []struct {
			Version string `json:"version"`
			Rollout int    `json:"rollout_percent"`
		} `json:"releases"`
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_ = json.Unmarshal(raw, &rels)
	if len(rels.Releases) != 1 || rels.Releases[0].Version != "1.1.0" || rels.Releases[0].Rollout != 0 {
		t.Errorf("the release channel after stop: %s", raw)
	}

	// A school admin of south sees south only.
	t.Setenv("CITYHUB_PASSWORD", "bo's long password")
	mustCLI("account", "add", "-school", "south", "bo", "school_admin")
	br.Do("sign out", chromedp.Click(chromedp.CSS("#signout")))
	br.Poll("signed out", `!document.getElementById("signin").hidden ? "y" : ""`)
	signIn("bo", "bo's long password")
	br.Poll("schools of bo", `document.querySelectorAll("#schools tr").length === 1 && document.querySelector('#schools tr[data-school="south"]') ? "y" : ""`)
	br.Do("edges tab as bo", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="edges"]`)))
	br.Poll("no edge of north", `document.getElementById("edges-summary").textContent !== "" && document.querySelectorAll("#edges [data-edge]").length === 0 ? "y" : ""`)
	if hidden := br.Poll("accounts tab hidden", `String(document.querySelector('#tabs button[data-tab="accounts"]').hidden)`); hidden != "true" {
		t.Error("a school admin sees the staff accounts tab")
	}
	got := br.Poll("API refuses north", `(() => { if (!window.northCheck) { window.northCheck = "…";
		Promise.all([fetch("/api/v1/admin/edges?school=north"), fetch("/api/v1/admin/schools/north/tokens")]).then(rs => { window.northCheck = rs.map(r => r.status).join(","); }); }
		return window.northCheck === "…" ? "" : window.northCheck; })()`)
	if got != "404,404" {
		t.Errorf("school admin of south asking for north: %s, want 404,404", got)
	}
	shot(t, br, "city-school-admin.png")
	if ex := br.Exceptions(); len(ex) > 0 {
		t.Errorf("page exceptions: %q", ex)
	}
}
