package console_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/cmd/edged/appliance/appliancetest"
	"github.com/campusedge/campusedge/edge/browsertest"
)

// TestHTTPSPanelInChromium: the console's HTTPS panel, opened over HTTPS at
// a LAN address, shows the certificate the browser was given (the edge's
// own CA, its key pin, the LAN address among its names), offers the CA for
// download as the file a device installs, and gives the instructions per
// kind of device; the "open it over HTTPS" warning stays hidden.
func TestHTTPSPanelInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	cfg := appliancetest.Config(t)
	edge := startLANEdge(ctx, t, cfg, nil)

	br := signIn(ctx, t, edge)
	bctx := br.Context()
	poll[bool](bctx, t, "HTTPS panel filled",
		`!document.getElementById("app").hidden && document.querySelector('#tls-panel [data-tls="pin"]').textContent !== ""`)

	field := func(k string) string {
		return eval[string](bctx, t, `document.querySelector('#tls-panel [data-tls="`+k+`"]').textContent`)
	}
	if got := field("pin"); got != edge.pin {
		t.Errorf("panel pin %q, want the served key's %q", got, edge.pin)
	}
	if got := field("source"); !strings.Contains(got, "own CA") {
		t.Errorf("panel source %q, want the edge's own CA", got)
	}
	if got := field("names"); !strings.Contains(got, browsertest.LANAddr) {
		t.Errorf("panel names %q lack the LAN address %s", got, browsertest.LANAddr)
	}
	if got := field("ca_fingerprint"); len(got) != 95 {
		t.Errorf("panel CA fingerprint %q, want SHA-256 as 32 colon-separated bytes", got)
	}
	if eval[bool](bctx, t, `!document.getElementById("tls-plain").hidden`) {
		t.Error("the plain-HTTP warning shows on an HTTPS page")
	}
	if n := eval[int](bctx, t, `document.querySelectorAll("#tls-ca details li").length`); n < 4 {
		t.Errorf("%d device instructions, want Windows, Android, ChromeOS/Linux, iPad and kiosk", n)
	}
	// The download link serves the CA as a certificate a device installs.
	dl := poll[string](bctx, t, "CA download",
		`(() => { if (!window.caDL) { window.caDL = "…"; const a = document.querySelector('#tls-ca a[download]');
		  fetch(a.href).then(async r => { window.caDL = r.headers.get("Content-Type") + "|" + (await r.text()); }); }
		  return window.caDL === "…" ? false : window.caDL; })()`)
	if !strings.HasPrefix(dl, "application/x-x509-ca-cert|-----BEGIN CERTIFICATE-----") {
		t.Errorf("CA download: %.80q", dl)
	}
}
