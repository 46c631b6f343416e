package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/sync/hubtls"
)

// TestConsoleSyncPanel drives the console's sync panel in real headless
// Chromium against real edged and cityhub binaries: the panel shows
// not_enrolled, refuses a wrong token with the hub's reason, enrols with the
// right one, then shows the link up and the backlog drained.
func TestConsoleSyncPanel(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	hubDir, edgeDir := filepath.Join(dir, "hub"), filepath.Join(dir, "edge")
	cli(t, "cityhub", "-data", hubDir, "school", "add", "s9", "No. 9 School")
	tok := strings.TrimSpace(cli(t, "cityhub", "-data", hubDir, "enrol-token", "s9"))
	_, hubURL := start(t, "cityhub", "-data", hubDir, "-listen", "127.0.0.1:0")
	edge := startLANEdged(t, "-data", edgeDir, "-mdns=false", "-cloud", hubURL, "-school", "s9")
	url := edge.url
	admin := adminToken(t, edgeDir)

	br := browsertest.Start(ctx, t, browsertest.TrustPin(edge.pin))
	br.Do("open the console", chromedp.Navigate(url+"/"))
	br.RequireSecureLAN()
	bctx := br.Context()
	js := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	do := func(expr string) {
		t.Helper()
		if _, err := chromedp.Run(bctx, chromedp.Evaluate[any](expr)); err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
	}
	poll := func(what, expr string) {
		t.Helper()
		br.Poll(what, "("+expr+`) ? "ok" : ""`)
	}
	do(`document.getElementById("token").value = ` + js(admin) + `; document.getElementById("signin-form").requestSubmit(); true`)
	poll("panel shows not_enrolled", `document.getElementById("sync-link").dataset.link === "not_enrolled" && !document.getElementById("sync-enrol").hidden`)
	do(`document.getElementById("sync-token").value = "not-a-token"; document.getElementById("sync-enrol").requestSubmit(); true`)
	poll("wrong token refused with the hub's reason", `document.getElementById("sync-enrol-error").textContent.includes("invalid_token")`)
	do(`document.getElementById("sync-token").value = ` + js(tok) + `; document.getElementById("sync-enrol").requestSubmit(); true`)
	poll("link up after enrolment", `document.getElementById("sync-link").dataset.link === "up" && document.getElementById("sync-enrol").hidden`)
	// Enrolled, the edge soon serves the certificate the city CA signed
	// for its LAN address; this client stands for a city-managed device
	// that trusts the city root as well as the edge's own CA.
	cityRoot, err := os.ReadFile(filepath.Join(hubDir, hubtls.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	client := edge.trustAlso(t, cityRoot)
	for i := range 5 {
		req, _ := http.NewRequest(http.MethodPost, url+"/api/v1/sync/records", strings.NewReader(fmt.Sprintf(`{"kind":"session.log","payload":{"i":%d}}`, i)))
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("append: %v %v", err, resp)
		}
		resp.Body.Close()
	}
	// Six: the five appended here and the audit log's entry for the
	// admin's sign-in to this console, which goes to the city too.
	poll("panel shows the records sent and nothing waiting", `document.querySelector('[data-sync="sent"]').textContent.startsWith("6 records") && document.querySelector('[data-sync="backlog"]').textContent === "0" && document.querySelector('[data-sync="school"]').textContent === "s9"`)
}
