package cache_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/browsertest"
)

// TestCachePanelInChromium drives the console's cache panel in real
// headless Chromium against a real edge and hub: search the catalogue,
// pin an item, and watch the prefetch finish in the panel.
func TestCachePanelInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	root := t.TempDir()
	h := newHub(t, filepath.Join(root, "hub"))
	items := importFiles(t, h, filepath.Join(root, "in"), map[string][]byte{"Fractions intro.mp4": randBytes(400_000), "Photosynthesis.mp4": randBytes(300_000)})
	e := startLANEdge(t, filepath.Join(root, "edge"), h.srv.URL)
	e.waitSynced(t, 2)

	br := browsertest.Start(ctx, t, browsertest.TrustPin(e.https.Pin))
	do, poll := br.Do, br.Poll

	do("open", chromedp.Navigate(e.url+"/"))
	br.RequireSecureLAN()
	do("sign in",
		chromedp.SetValue(chromedp.CSS("#token"), e.token),
		chromedp.Click(chromedp.CSS(`#signin-form button[type="submit"]`)))
	poll("catalogue listed", `document.querySelectorAll("#catalog-items tr").length === 2 ? "ok" : ""`)
	do("search", chromedp.SendKeys(chromedp.CSS("#catalog-search"), "fraction"))
	id := items["Fractions intro.mp4"].ID
	poll("search narrows to one", `(() => { const r = document.querySelectorAll("#catalog-items tr"); return r.length === 1 && r[0].dataset.id === "`+id+`" ? "ok" : ""; })()`)
	// Find and click in one evaluation: the panel redraws its rows as
	// progress arrives, and a node found in one call may be gone by the next.
	poll("pin", `(() => { const b = document.querySelector('#catalog-items tr[data-id="`+id+`"] button.cache-pin'); if (!b) return ""; b.click(); return "ok"; })()`)
	poll("prefetch shown done", `(() => { const r = document.querySelector('#cache-items tr[data-id="`+id+`"]'); return r && r.cells[3].textContent.startsWith("cached") && r.cells[2].textContent === "pinned" && document.getElementById("cache-overall").textContent.includes("1 of 1 items ready") ? "ok" : ""; })()`)
	if g, _, _ := h.count(id); g != 1 {
		t.Fatalf("hub saw %d GETs for the pinned item", g)
	}
	if exc := br.Exceptions(); len(exc) > 0 {
		t.Errorf("uncaught exceptions: %q", exc)
	}
}
