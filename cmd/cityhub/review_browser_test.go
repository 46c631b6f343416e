package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/cache"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/sync/uplink"
)

// TestUploadReviewBacklogAndHealthInChromium drives three panels of the
// city console in headless Chromium over HTTPS at a LAN address against a
// real cityhub, with a real edge (bbolt, outbox, uplink, and the edge's
// resource cache uploading over signed, pinned HTTPS):
//   - School uploads: two teacher uploads from the edge wait for review
//     and are not in the catalogue; the city admin publishes one with a
//     subject and grade (it enters the catalogue edges pull) and rejects
//     the other, which needs a reason; a school admin of another school
//     sees neither.
//   - Edges: the backlog the edge reports (30 records waiting) shows, and
//     drops to 0 once they are sent.
//   - Sync health: the records received, the sync error a stranger
//     caused, and the edge online are drawn from the store's series.
func TestUploadReviewBacklogAndHealthInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	browsertest.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	h := runHub(ctx, t, t.TempDir(), browsertest.LANListen, "-sync-health-every", "1s")
	t.Setenv("CITYHUB_PASSWORD", "ada's long password")
	h.cli("account", "add", "ada", "city_admin")
	h.cli("school", "add", "north", "北城中学")
	h.cli("school", "add", "south", "South Primary")
	t.Setenv("CITYHUB_PASSWORD", "bo's long password")
	h.cli("account", "add", "-school", "south", "bo", "school_admin")
	base := h.base()
	edge := enrolEdge(ctx, t, base, h.cli("enrol-token", "north"))
	up := edge.uplink(base, 0, nil)

	// Thirty records wait in the outbox; a pull tells the hub so.
	for i := 0; i < 30; i++ {
		if _, err := edge.ob.Append(ctx, "attendance.mark", []byte(`{"s":"s`+strconv.Itoa(i)+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := up.PullOnce(ctx); err != nil {
		t.Fatal(err)
	}

	// Two teacher uploads through the edge's own cache and uploader.
	if err := edge.db.Update(func(tx *bolt.Tx) error {
		if err := cache.Migrate(tx); err != nil {
			return err
		}
		return cache.MigratePolicy(tx)
	}); err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(cache.Config{DB: edge.db, DataDir: t.TempDir(), Hub: base, Client: uplink.SignedHubClient(edge.db, nil, edge.key),
		SyncInterval: time.Hour, UploadInterval: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cstop := context.WithCancel(ctx)
	c.Start(cctx)
	defer func() { cstop(); c.Close() }()
	good, err := c.AddLocal(ctx, strings.NewReader("%PDF-1.4 fractions worksheet"), 0, media.Item{Title: "分数练习（王老师）", MIME: "application/pdf"})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := c.AddLocal(ctx, strings.NewReader("%PDF-1.4 blurry scan"), 0, media.Item{Title: "扫描件", MIME: "application/pdf"})
	if err != nil {
		t.Fatal(err)
	}

	pin := h.cli("tls-pin")
	br := browsertest.Start(ctx, t, browsertest.TrustPin(pin))
	br.Do("open the console", chromedp.Navigate(base+"/console/"))
	br.RequireSecureLAN()
	signIn := func(user, pw string) {
		br.Do("sign in as "+user, chromedp.SetValue(chromedp.CSS("#user"), user), chromedp.SetValue(chromedp.CSS("#password"), pw),
			chromedp.Click(chromedp.CSS(`#signin-form button[type="submit"]`)))
		br.Poll("signed in as "+user, `!document.getElementById("app").hidden && document.getElementById("who").textContent`)
	}
	signIn("ada", "ada's long password")

	// Edges: the reported backlog.
	row := `document.querySelector('#edges [data-edge="` + edge.key.EdgeID() + `"] .backlog')`
	br.Do("edges tab", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="edges"]`)))
	if got := br.Poll("backlog of 30 shown", `(() => { const b = `+row+`; return b && b.textContent.startsWith("30,") ? b.textContent : ""; })()`); !strings.Contains(got, "oldest") {
		t.Errorf("backlog cell %q does not say how old the oldest record is", got)
	}
	shot(t, br, "city-edges-backlog.png")
	if _, err := up.SendOnce(ctx, edge.enr); err != nil {
		t.Fatal(err)
	}
	if err := up.PullOnce(ctx); err != nil { // reports the empty outbox
		t.Fatal(err)
	}
	br.Do("refresh edges", chromedp.Click(chromedp.CSS("#edges-refresh")))
	br.Poll("backlog drained", `(() => { const b = `+row+`; return b && b.textContent === "0" ? "y" : ""; })()`)

	// School uploads: both wait for review.
	br.Do("uploads tab", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="uploads"]`)))
	uploadRow := func(id string) string { return `#uploads tr[data-upload="` + id + `"]` }
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := br.Poll("uploads listed", `(document.querySelectorAll("#uploads tr[data-upload]").length + 1) + ""`)
		if n == "3" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s uploads awaiting review after 30 s, want 2", strconv.Itoa(mustAtoi(t, n)-1))
		}
		time.Sleep(200 * time.Millisecond)
		br.Do("reload the list", chromedp.SetValue(chromedp.CSS("#uploads-state"), "pending"),
			chromedp.Evaluate[chromedp.Void](`document.getElementById("uploads-state").dispatchEvent(new Event("change"))`))
	}
	if got := br.Poll("title shown", `document.querySelector('`+uploadRow(good.ID)+` input[data-field="title"]').value`); got != "分数练习（王老师）" {
		t.Errorf("title in the review row: %q", got)
	}
	if catalogHas(t, h, good.ID) || catalogHas(t, h, bad.ID) {
		t.Fatal("an upload awaiting review is in the catalogue edges pull")
	}
	br.Do("settle subject and grade", chromedp.SetValue(chromedp.CSS(uploadRow(good.ID)+` input[data-field="subject"]`), "数学"),
		chromedp.SetValue(chromedp.CSS(uploadRow(good.ID)+` input[data-field="grade"]`), "五年级"))
	shot(t, br, "city-uploads.png")
	br.Do("publish", chromedp.Click(chromedp.CSS(uploadRow(good.ID)+` button[data-act="publish"]`)))
	br.Poll("published row gone", `!document.querySelector('`+uploadRow(good.ID)+`') ? "y" : ""`)
	// A rejection without a reason is stopped on the page.
	br.Do("reject without a reason", chromedp.Click(chromedp.CSS(uploadRow(bad.ID)+` button[data-act="reject"]`)))
	br.Poll("reason asked", `(() => { const n = document.querySelector('`+uploadRow(bad.ID)+` .note'); return n ? n.textContent : ""; })()`)
	br.Do("reject with a reason", chromedp.SetValue(chromedp.CSS(uploadRow(bad.ID)+` input[data-field="reason"]`), "扫描太模糊，请重新上传"),
		chromedp.Click(chromedp.CSS(uploadRow(bad.ID)+` button[data-act="reject"]`)))
	br.Poll("rejected row gone", `!document.querySelector('`+uploadRow(bad.ID)+`') ? "y" : ""`)
	br.Do("show rejected", chromedp.SetValue(chromedp.CSS("#uploads-state"), "rejected"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("uploads-state").dispatchEvent(new Event("change"))`))
	if got := br.Poll("rejected listed with its reason", `(() => { const r = document.querySelector('`+uploadRow(bad.ID)+`'); return r ? r.innerText : ""; })()`); !strings.Contains(got, "扫描太模糊") || !strings.Contains(got, "ada") {
		t.Errorf("rejected row %q lacks the reason or the reviewer", got)
	}
	if !catalogHas(t, h, good.ID) || catalogHas(t, h, bad.ID) {
		t.Fatal("after review: the published upload is not in the catalogue, or the rejected one is")
	}
	// The catalogue edges pull carries the reviewer's fields.
	if it := catalogItem(t, h, good.ID); it.Subject != "数学" || it.Grade != "五年级" || it.Title != "分数练习（王老师）" {
		t.Errorf("published item %+v", it)
	}

	// Sync health: a stranger's unsigned sync call is an error; the 30
	// records and the edge online are in the series.
	if resp, err := http.Get("http://" + h.plain.String() + "/api/v1/sync/status"); err == nil {
		resp.Body.Close()
	}
	br.Do("health tab", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="health"]`)))
	deadline = time.Now().Add(20 * time.Second)
	for {
		got := br.Poll("charts drawn", `(() => { const c = (n) => document.querySelector('[data-chart="' + n + '"]');
			if (!c("records")) return "none";
			return [c("online").dataset.last, c("records").querySelector('path[data-series="records"]').dataset.points, c("errors").dataset.last].join("|"); })()`)
		parts := strings.Split(got, "|")
		sum := br.Poll("series totals", `(() => { if (!window.hsum) { window.hsum = "…"; fetch("/api/v1/admin/sync-health?hours=1").then(r => r.json()).then(j => {
			window.hsum = j.points.reduce((a, p) => a + p.records, 0) + "/" + j.points.reduce((a, p) => a + p.errors, 0); }); }
			const v = window.hsum; if (v !== "…") window.hsum = ""; return v === "…" ? "" : v; })()`)
		if len(parts) == 3 && parts[0] == "1 / 1" && parts[1] != "0" && sum != "" && !strings.HasPrefix(sum, "0/") && !strings.HasSuffix(sum, "/0") {
			if !strings.HasPrefix(sum, "30/") {
				t.Errorf("records in the series: %s, want 30", sum)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sync health after 20 s: charts %q, totals %q", got, sum)
		}
		time.Sleep(500 * time.Millisecond)
		br.Do("refresh health", chromedp.Click(chromedp.CSS("#health-refresh")))
	}
	shot(t, br, "city-sync-health.png")

	// A school admin of south sees no upload of north, nor its bytes.
	br.Do("sign out", chromedp.Click(chromedp.CSS("#signout")))
	br.Poll("signed out", `!document.getElementById("signin").hidden ? "y" : ""`)
	signIn("bo", "bo's long password")
	br.Do("uploads tab as bo", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="uploads"]`)))
	br.Poll("uploads of bo", `window.cityTabDone === "uploads" && document.getElementById("uploads-summary").textContent !== "" ? "y" : ""`)
	got := br.Poll("north's upload hidden from bo", `(() => { if (!window.boCheck) { window.boCheck = "…";
		Promise.all([fetch("/api/v1/admin/uploads"), fetch("/api/v1/admin/uploads/`+good.ID+`/content"), fetch("/api/v1/admin/sync-health")])
		.then(async ([l, c, hh]) => { window.boCheck = (await l.json()).uploads.length + "," + c.status + "," + hh.status; }); }
		return window.boCheck === "…" ? "" : window.boCheck; })()`)
	if got != "0,404,403" {
		t.Errorf("school admin of south: uploads listed, content, sync health = %s, want 0,404,403", got)
	}
	if hidden := br.Poll("health tab hidden", `String(document.querySelector('#tabs button[data-tab="health"]').hidden)`); hidden != "true" {
		t.Error("a school admin sees the sync health tab")
	}
	if ex := br.Exceptions(); len(ex) > 0 {
		t.Errorf("page exceptions: %q", ex)
	}
}

func mustAtoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// catalogItem is id as the hub's catalogue (what edges pull) has it; the
// zero item if it has none.
func catalogItem(t *testing.T, h *liveHub, id string) media.Item {
	t.Helper()
	resp, err := staffGet(t, h.data, "http://"+h.plain.String()+"/api/v1/catalog")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ch media.Changes
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &ch); err != nil {
		t.Fatalf("catalogue: %v %s", err, b)
	}
	for _, it := range ch.Items {
		if it.ID == id {
			return it
		}
	}
	return media.Item{}
}

func catalogHas(t *testing.T, h *liveHub, id string) bool {
	return catalogItem(t, h, id).ID == id
}
