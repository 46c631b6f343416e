package cache_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

const chromiumPath = "/usr/lib/chromium/chromium"

// TestCachePanelInChromium drives the console's cache panel in real
// headless Chromium against a real edge and hub: search the catalogue,
// pin an item, and watch the prefetch finish in the panel.
func TestCachePanelInChromium(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium is required in CI: %v", err)
		}
		t.Skipf("chromium not installed: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	root := t.TempDir()
	h := newHub(t, filepath.Join(root, "hub"))
	items := importFiles(t, h, filepath.Join(root, "in"), map[string][]byte{"Fractions intro.mp4": randBytes(400_000), "Photosynthesis.mp4": randBytes(300_000)})
	e := startEdge(t, filepath.Join(root, "edge"), h.srv.URL)
	e.waitSynced(t, 2)

	var mu sync.Mutex
	var logs strings.Builder
	logf := func(f string, a ...any) { mu.Lock(); fmt.Fprintf(&logs, f+"\n", a...); mu.Unlock() }
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("browser log:\n%s", logs.String())
			mu.Unlock()
		}
	})
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()))
	allocCtx, allocCancel := chromedp.NewExecAllocator(ctx, opts...)
	defer allocCancel()
	bctx, bcancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(logf), chromedp.WithErrorf(logf))
	defer bcancel()
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	var excMu sync.Mutex
	var exceptions []string
	consoleDone := make(chan struct{})
	messages := chromedp.Console(bctx)
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() {
				excMu.Lock()
				exceptions = append(exceptions, m.String())
				excMu.Unlock()
			}
		}
	}()
	defer func() { bcancel(); <-consoleDone }()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, c := context.WithTimeout(bctx, 10*time.Second)
		defer c()
		if err := chromedp.Do(sctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	poll := func(what, expr string) string {
		t.Helper()
		pctx, c := context.WithTimeout(bctx, 12*time.Second)
		defer c()
		v, err := chromedp.Run(pctx, chromedp.Poll[string](expr, chromedp.WithPollingTimeout(10*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
		if err != nil {
			dctx, dc := context.WithTimeout(bctx, 2*time.Second)
			defer dc()
			dom, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("%s: %v\npage:\n%s", what, err, dom)
		}
		return v
	}

	do("open and sign in", chromedp.Navigate(e.url+"/"),
		chromedp.SetValue(chromedp.CSS("#token"), e.token),
		chromedp.Click(chromedp.CSS(`#signin-form button[type="submit"]`)))
	poll("catalogue listed", `document.querySelectorAll("#catalog-items tr").length === 2 ? "ok" : ""`)
	do("search", chromedp.SendKeys(chromedp.CSS("#catalog-search"), "fraction"))
	id := items["Fractions intro.mp4"].ID
	poll("search narrows to one", `(() => { const r = document.querySelectorAll("#catalog-items tr"); return r.length === 1 && r[0].dataset.id === "`+id+`" ? "ok" : ""; })()`)
	do("pin", chromedp.Click(chromedp.CSS(`#catalog-items tr[data-id="`+id+`"] button.cache-pin`)))
	poll("prefetch shown done", `(() => { const r = document.querySelector('#cache-items tr[data-id="`+id+`"]'); return r && r.cells[3].textContent.startsWith("cached") && r.cells[2].textContent === "pinned" && document.getElementById("cache-overall").textContent.includes("1 of 1 items ready") ? "ok" : ""; })()`)
	if g, _, _ := h.count(id); g != 1 {
		t.Fatalf("hub saw %d GETs for the pinned item", g)
	}
	excMu.Lock()
	defer excMu.Unlock()
	if len(exceptions) > 0 {
		t.Errorf("uncaught exceptions: %q", exceptions)
	}
}
