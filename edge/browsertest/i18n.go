package browsertest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/chromedp/chromedp"
)

// Untranslated returns a JS expression that evaluates, in a page, to the
// visible strings still in English: text of visible elements, and the
// placeholder, title and aria-label attributes and option texts, that equal
// a value of the English catalogue en whose translation in the page's
// catalogue tr differs (a value both catalogues share, like "HTTPS", is
// language-neutral), or that match such a value's template ("edge {id}"),
// except the strings in allow. A page in that language passes when the
// expression gives an empty array.
func Untranslated(en, tr map[string]string, allow []string) string {
	var exact []string
	var patterns []string
	letters := regexp.MustCompile(`[A-Za-z]{3,}`)
	vars := regexp.MustCompile(`\{\w+\}`)
	for k, v := range en {
		if tr[k] == v || strings.Contains(v, "<") || len(strings.TrimSpace(v)) < 2 {
			// Language-neutral; markup (its text nodes are checked one by
			// one); or a single letter (the marks P, L, A), which data such
			// as a slot or option letter may equal.
			continue
		}
		if !vars.MatchString(v) {
			exact = append(exact, strings.TrimSpace(v))
			continue
		}
		// A template is checked only when its literal text says something
		// in English; "{pupil}: {status}" would match anything.
		lit := vars.ReplaceAllString(v, "")
		if !letters.MatchString(lit) {
			continue
		}
		parts := vars.Split(v, -1)
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		patterns = append(patterns, "^"+strings.TrimSpace(strings.Join(parts, "[^]*?"))+"$")
	}
	ex, _ := json.Marshal(exact)
	pa, _ := json.Marshal(patterns)
	al, _ := json.Marshal(allow)
	return `(() => {
  const exact = new Set(` + string(ex) + `), allow = new Set(` + string(al) + `);
  const patterns = ` + string(pa) + `.map((p) => new RegExp(p));
  const english = (s) => { s = s.trim(); return s !== "" && !allow.has(s) && (exact.has(s) || patterns.some((r) => r.test(s))); };
  const visible = (e) => e && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== "hidden";
  const out = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    if (visible(n.parentElement) && english(n.textContent)) out.push(n.textContent.trim());
  }
  for (const e of document.querySelectorAll("[placeholder],[title],[aria-label],option")) {
    if (!visible(e) && e.tagName !== "OPTION") continue;
    for (const v of [e.getAttribute("placeholder"), e.getAttribute("title"), e.getAttribute("aria-label"), e.tagName === "OPTION" ? e.textContent : null]) {
      if (v && english(v)) out.push(v.trim());
    }
  }
  if (english(document.title)) out.push(document.title);
  return out;
})()`
}

// Screenshot saves a full-page PNG of the browser's page as dir/name.png
// (dir is created). Page tests take one per page and language, into
// docs/screenshots when CAMPUSEDGE_SCREENSHOTS=1, else a temporary
// directory.
func (b *Browser) Screenshot(dir, name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}
