package console_test

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/cmd/edged/appliance/appliancetest"
	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/slot"
)

// provision installs and commits a bundle of version into a fresh slot
// root and returns the root and the public key path.
func provision(t *testing.T, version string) (root, pub string) {
	t.Helper()
	privPath, pub, err := bundle.GenerateKey(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := bundle.LoadPrivateKey(privPath)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "edged"), []byte("not run in this test"), 0o755)
	out := filepath.Join(t.TempDir(), "b")
	if _, err := bundle.Create(bundle.Build{Dir: dir, Product: "campusedge", Target: config.Defaults().FirmwareTarget, Version: version, Entry: "edged"}, priv, out); err != nil {
		t.Fatal(err)
	}
	ring, _ := bundle.LoadKeyring(pub)
	root = t.TempDir()
	be, _ := slot.NewDir(root)
	m := slot.NewManager(be, ring, 0)
	f, _ := os.Open(out)
	defer f.Close()
	r, err := bundle.Open(bufio.NewReader(f), ring, bundle.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.Install(context.Background(), r)
	if err == nil {
		err = m.Switch(s)
	}
	if err == nil {
		_, err = m.Commit(s)
	}
	if err != nil {
		t.Fatal(err)
	}
	return root, pub
}

// TestFirmwarePanelInChromium shows the firmware panel in real headless
// Chromium: the version of the active slot, the updater's state, and the
// answer to "Check now" on an edge with no city hub.
func TestFirmwarePanelInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	root, pub := provision(t, "0.4.2")
	cfg := appliancetest.Config(t)
	cfg.FirmwareRoot, cfg.FirmwareKeys = root, pub
	edge := startLANEdge(ctx, t, cfg, nil)

	br := signIn(ctx, t, edge)
	bctx, do := br.Context(), br.Do
	version := poll[string](bctx, t, "firmware version shown",
		`document.querySelector('#fw-status dd[data-field="version"]')?.textContent || false`)
	if version != "0.4.2" {
		t.Fatalf("panel shows version %q, want the active slot's 0.4.2", version)
	}
	if st := eval[string](bctx, t, `document.querySelector('#fw-status dd[data-field="state"]').textContent`); st != "no city hub" {
		t.Fatalf("state %q", st)
	}
	if sl := eval[string](bctx, t, `document.querySelector('#fw-status dd[data-field="slot"]').textContent`); sl != "a" {
		t.Fatalf("slot %q", sl)
	}
	do("check now", chromedp.Click(chromedp.CSS("#fw-check")))
	msg := poll[string](bctx, t, "check answer shown", `document.getElementById("fw-msg").textContent || false`)
	if !strings.Contains(msg, "no -cloud hub") {
		t.Fatalf("check answer %q", msg)
	}
}
