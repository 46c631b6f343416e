package cache_test

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/metricstest"
)

// xssPage is what an attacker would put in the catalogue: script that,
// run on the console's origin, could read the admin token.
const xssPage = `<!doctype html><html><body><h1>Homework</h1>
<script>localStorage.setItem("xss", "script ran at " + location.href)</script>
<img src="x" onerror="localStorage.setItem('xss', 'onerror ran')">
</body></html>`

// TestCatalogueHTMLRunsNoScriptInTheConsole is the end of issue 14's XSS
// chain, now refused: an HTML file in the catalogue, and HTML bytes an
// enrolled edge declared as a PDF (the hub refuses text/html uploads, and
// refuses any upload without a credential: cmd/cityhub
// TestHubServesOnlyEnrolledEdgesAndStaff), clicked in the console in real
// Chromium at a LAN address over HTTPS: both are fetched, served as
// sandboxed attachments with nosniff, and no script runs on the console's
// origin.
func TestCatalogueHTMLRunsNoScriptInTheConsole(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	root := t.TempDir()
	h := newHub(t, filepath.Join(root, "hub"))
	items := importFiles(t, h, filepath.Join(root, "in"), map[string][]byte{
		"Homework page.html": []byte(xssPage + "<!-- html -->"),
		"Homework.pdf":       []byte(xssPage + "<!-- declared a PDF -->"),
	})
	e := startLANEdge(t, filepath.Join(root, "edge"), h.srv.URL)
	e.waitSynced(t, 2)

	// The headers, as any client sees them.
	for name, it := range items {
		req, _ := http.NewRequest("GET", e.url+"/media/"+it.ID, nil)
		resp, err := e.httpClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		hd := resp.Header
		if !strings.HasPrefix(hd.Get("Content-Disposition"), "attachment") || hd.Get("X-Content-Type-Options") != "nosniff" ||
			hd.Get("Content-Security-Policy") != "sandbox" || strings.Contains(hd.Get("Content-Type"), "html") {
			t.Fatalf("%s served with %v", name, hd)
		}
	}
	served := func() float64 {
		_, b := metricsText(t, e)
		return metricstest.Value(b, `campusedge_media_requests_total{outcome="hit"}`) + metricstest.Value(b, `campusedge_media_requests_total{outcome="miss"}`)
	}
	before := served()

	br := browsertest.Start(ctx, t, browsertest.TrustPin(e.https.Pin))
	do, poll := br.Do, br.Poll
	do("open", chromedp.Navigate(e.url+"/"))
	br.RequireSecureLAN()
	do("sign in",
		chromedp.SetValue(chromedp.CSS("#token"), e.token),
		chromedp.Click(chromedp.CSS(`#signin-form button[type="submit"]`)))
	poll("catalogue listed", `document.querySelectorAll("#catalog-items tr").length === 2 ? "ok" : ""`)
	for name, it := range items {
		poll("click "+name, `(() => { const a = document.querySelector('#catalog-items tr[data-id="`+it.ID+`"] a'); if (!a) return ""; if (a.target !== "_blank" || !a.rel.includes("noopener")) return "bad link"; a.click(); return "ok"; })()`)
	}
	// Both clicks fetched the item from the edge...
	deadline := time.Now().Add(15 * time.Second)
	for served()-before < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the clicks fetched %v items, want 2", served()-before)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // what would have run, has run
	// ...and nothing of them ran on the console's origin.
	ran := poll("read the console's storage", `"read:" + (localStorage.getItem("xss") || "")`)
	if ran != "read:" {
		t.Fatalf("a catalogue item ran script on the console's origin: %q", ran)
	}
	if exc := br.Exceptions(); len(exc) > 0 {
		t.Errorf("uncaught exceptions: %q", exc)
	}
}

// metricsText reads the edge's /metrics.
func metricsText(t *testing.T, e *edge) (*http.Response, []byte) {
	t.Helper()
	resp, err := e.httpClient().Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}
