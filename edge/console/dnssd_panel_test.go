package console_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/cmd/edged/appliance/appliancetest"
	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/netnstest"
)

// TestDiscoveryPanelInChromium: with -dns-zone and a real BIND taking the
// edge's signed updates, the console's discovery panel (opened over HTTPS
// at a LAN address) shows the zone, the published records, when they were
// last confirmed and no error, the zone-file snippet to add by hand, and
// two QR codes that load as images: the edge's HTTPS address and the
// classroom page with the pairing code typed into the panel (full-width
// digits included).
func TestDiscoveryPanelInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	const secret = "c2VjcmV0LWZvci10aGUtY2FtcHVzZWRnZS10ZXN0cyE="
	netnstest.StartBINDHere(t, []string{"127.0.0.1"},
		[]netnstest.TSIGSecret{{Name: "campusedge-key", Algorithm: "hmac-sha256", Secret: secret}},
		[]netnstest.BINDZone{{Name: "school.test", UpdateKey: "campusedge-key",
			Body: "$TTL 30\n@ IN SOA ns.school.test. admin.school.test. 1 60 60 600 30\n@ IN NS ns.school.test.\nns IN A 127.0.0.1\n"}})
	keyFile := filepath.Join(t.TempDir(), "edge.key")
	if err := os.WriteFile(keyFile, []byte(`key "campusedge-key" { algorithm hmac-sha256; secret "`+secret+`"; };`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cfg := appliancetest.Config(t)
	cfg.SchoolName = "第一中学"
	cfg.DNSZone, cfg.DNSServer, cfg.DNSTSIGKeyFile = "school.test.", "127.0.0.1", keyFile
	edge := startLANEdge(ctx, t, cfg, nil)

	br := signIn(ctx, t, edge)
	bctx := br.Context()
	// The panel refreshes every 15 s; the first update is confirmed within
	// milliseconds of start, so the first fill already shows it.
	poll[bool](bctx, t, "discovery panel shows confirmed records",
		`(() => { const c = document.querySelector("#dnssd-panel .dnssd-confirmed"); return !!c && c.textContent.includes("ago"); })()`)
	records := eval[string](bctx, t, `document.querySelector("#dnssd-panel .dnssd-records").textContent`)
	for _, want := range []string{"_campusedge._tcp.school.test.", "SRV", `"id=`, "campusedge.school.test.\t30\tIN\tA\t" + browsertest.LANAddr} {
		if !strings.Contains(records, want) {
			t.Errorf("published records lack %q:\n%s", want, records)
		}
	}
	if got := eval[string](bctx, t, `document.querySelector("#dnssd-panel table").textContent`); !strings.Contains(got, "Instance name第一中学") {
		t.Errorf("panel table lacks the readable instance name: %q", got)
	}
	if e := eval[string](bctx, t, `document.querySelector("#dnssd-panel .dnssd-error").textContent`); e != "—" {
		t.Errorf("error cell %q, want none", e)
	}
	if z := eval[string](bctx, t, `document.querySelector("#dnssd-panel .dnssd-zone").textContent`); !strings.Contains(z, "b._dns-sd._udp.school.test.") {
		t.Errorf("zone snippet: %q", z)
	}
	// The QR codes: the DNS name the school's DNS now has, which the
	// edge's certificate covers.
	imgs := poll[string](bctx, t, "QR codes loaded",
		`(() => { const i = [...document.querySelectorAll("#dnssd-panel .dnssd-links img")];
		  return i.length === 2 && i.every(x => x.complete && x.naturalWidth >= 200) ? i.map(x => x.alt).join("|") : false; })()`)
	u, _ := url.Parse(edge.url)
	base := "https://campusedge.school.test:" + u.Port() + "/"
	if imgs != "QR: "+base+"|QR: "+base+"classroom.html" {
		t.Errorf("QR codes for %q", imgs)
	}
	br.Do("type a pairing code in full-width digits", chromedp.SetValue(chromedp.CSS("#dnssd-pair"), "１２３４５６"),
		chromedp.Click(chromedp.CSS(`#dnssd-panel button`)))
	poll[bool](bctx, t, "classroom QR with the code",
		`[...document.querySelectorAll("#dnssd-panel .dnssd-links img")].some(x => x.alt.endsWith("classroom.html#pair=123456") && x.complete && x.naturalWidth > 0)`)

	// CAMPUSEDGE_SCREENSHOTS=1 writes the panel to docs/screenshots.
	sctx, scancel := context.WithTimeout(bctx, 10*time.Second)
	defer scancel()
	png, err := chromedp.Run(sctx, chromedp.Screenshot(chromedp.CSS("#dnssd-panel")))
	if err != nil || len(png) < 1000 {
		t.Fatalf("panel screenshot: %d bytes, %v", len(png), err)
	}
	if os.Getenv("CAMPUSEDGE_SCREENSHOTS") == "1" {
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "screenshots", "console-discovery.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
