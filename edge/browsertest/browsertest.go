// Package browsertest starts real headless Chromium for the project's page
// tests (console panels, teacher and classroom pages), with the flags
// ../shared/FIELD-NOTES.md verified on these machines, so that every page
// test runs the browser the same way and a new one is a few lines. It is a
// test helper: only _test.go files import it.
//
// Without Chromium a test is skipped, except under CI=true, where it fails:
// a page check that silently skips in CI is a check that never runs.
package browsertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromiumPath is Debian's real binary: the /usr/bin/chromium wrapper
// breaks here (its /dev/shm check) and adds extensions.
const ChromiumPath = "/usr/lib/chromium/chromium"

// Step and poll deadlines: generous, because a loaded CI machine renders
// slowly; they bound a hung page, they do not measure it.
const (
	StepTimeout = 10 * time.Second
	PollTimeout = 12 * time.Second
)

// Browser is one headless Chromium for one test.
type Browser struct {
	t   testing.TB
	ctx context.Context

	mu         sync.Mutex
	log        bytes.Buffer // Chromium's output and chromedp's log
	page       bytes.Buffer // the pages' console
	exceptions []string     // uncaught exceptions in any page
}

// Write collects Chromium's output (chromedp.CombinedOutput).
func (b *Browser) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.Write(p)
}

func (b *Browser) logf(f string, a ...any) { _, _ = fmt.Fprintf(b, f+"\n", a...) }

// Option changes how Chromium is started. Without options it starts as
// it always has: trusting no certificate but the system's.
type Option func(*options)

type options struct {
	pins  []string
	flags []string
}

// Flag adds --name=value after the verified flags, for a test that needs
// one more: e.g. host-resolver-rules "MAP edge.school.test 127.0.0.1" to
// load a page from a name Chromium does not treat as a secure context.
func Flag(name, value string) Option {
	return func(o *options) { o.flags = append(o.flags, "--"+name+"="+value) }
}

// TrustPin makes Chromium accept a certificate chain whose key has this
// pin (base64 SHA-256 of the DER SubjectPublicKeyInfo, as
// certs.Manager.Pin returns it) without any CA installed: the way
// classterm -kiosk starts the classroom page, and the way page tests trust
// an in-process edge.
func TrustPin(pin string) Option {
	return func(o *options) { o.pins = append(o.pins, pin) }
}

// Require checks that Chromium is installed, skipping t (or failing it
// under CI=true) when it is not. Allocator calls it; a test that starts
// Chromium itself (in another network namespace) calls it first.
func Require(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium is required in CI: %v (apt-get install chromium)", err)
		}
		t.Skipf("chromium not installed (%v)", err)
	}
}

// disableFeatures is chromedp's default --disable-features list plus
// WebRtcHideLocalIpsWithMdns: setting the flag replaces chromedp's value,
// and with mDNS-hidden local addresses a page's candidates on lo or a LAN
// address would be .local names the edge cannot resolve.
const disableFeatures = "Translate,BlinkGenPropertyTrees,WebRtcHideLocalIpsWithMdns"

// Flags are the verified command-line flags (without the program name) for
// a Chromium that keeps its profile in userDataDir, for a test that starts
// the binary itself, e.g. in another network namespace with
// --remote-debugging-port added. Allocator starts Chromium with the same.
func Flags(userDataDir string, opts ...Option) []string {
	var o options
	for _, f := range opts {
		f(&o)
	}
	flags := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--no-default-browser-check",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
		"--allow-loopback-in-peer-connection",
		"--autoplay-policy=no-user-gesture-required",
		// Keep a tab that is not in front decoding video.
		"--disable-background-timer-throttling", "--disable-renderer-backgrounding",
		"--disable-backgrounding-occluded-windows",
		"--disable-features=" + disableFeatures,
		"--user-data-dir=" + userDataDir,
	}
	if len(o.pins) > 0 {
		flags = append(flags, "--ignore-certificate-errors-spki-list="+strings.Join(o.pins, ","))
	}
	return append(flags, o.flags...)
}

// Allocator checks that Chromium is installed (skipping t, or failing it
// under CI=true) and returns an allocator context, bounded by ctx and
// cancelled in t.Cleanup, that starts it with the verified flags and writes
// its output to out. Tests that drive several tabs or browser contexts
// build them on it with chromedp.NewContext; Start is the one-tab case.
func Allocator(ctx context.Context, t testing.TB, out io.Writer, opts ...Option) context.Context {
	t.Helper()
	Require(t)
	// chromedp's defaults, then the verified flags (Flags) on top: one
	// list for both ways of starting Chromium.
	eopts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(ChromiumPath),
		chromedp.WindowSize(1280, 800),
		chromedp.CombinedOutput(out),
	)
	for _, f := range Flags(t.TempDir(), opts...) {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		if hasValue {
			eopts = append(eopts, chromedp.Flag(name, value))
		} else {
			eopts = append(eopts, chromedp.Flag(name, true))
		}
	}
	allocCtx, cancel := chromedp.NewExecAllocator(ctx, eopts...)
	t.Cleanup(cancel)
	return allocCtx
}

// Start launches Chromium for t, bounded by ctx, and stops it in
// t.Cleanup, logging its output if t failed. Pages may use the fake
// camera and microphone, and WebRTC works on loopback.
func Start(ctx context.Context, t testing.TB, opts ...Option) *Browser {
	t.Helper()
	b := &Browser{t: t}
	allocCtx := Allocator(ctx, t, b, opts...)
	bctx, bcancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(b.logf), chromedp.WithErrorf(b.logf))
	// The first Do starts the browser; its context must carry no per-step
	// timeout (ctx bounds the whole browser).
	if err := chromedp.Do(bctx); err != nil {
		bcancel()
		t.Fatalf("start chromium: %v\n%s", err, b.Log())
	}
	b.ctx = bctx
	consoleDone := make(chan struct{})
	messages := chromedp.Console(bctx)
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			fmt.Fprintf(&b.page, "%s (%s:%d)\n", m, m.URL, m.Line)
			if m.IsException() {
				b.exceptions = append(b.exceptions, m.String())
			}
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		bcancel()
		<-consoleDone
		if t.Failed() {
			b.mu.Lock()
			t.Logf("page console:\n%s\nchromium output and chromedp log:\n%s", b.page.String(), b.log.String())
			b.mu.Unlock()
		}
	})
	return b
}

// Context is the browser's context, for chromedp calls of the test's own.
func (b *Browser) Context() context.Context { return b.ctx }

// Tab opens another tab in the same Chromium, closed in t.Cleanup. An
// isolated tab has a browser context of its own (no shared cookies or
// storage): another device in the school — a classroom's big screen, an
// assistant's phone — rather than another tab of the teacher's browser.
func (b *Browser) Tab(isolated bool) context.Context {
	b.t.Helper()
	var opts []chromedp.ContextOption
	if isolated {
		opts = append(opts, chromedp.WithNewBrowserContext())
	}
	tab, cancel := chromedp.NewContext(b.ctx, opts...)
	b.t.Cleanup(cancel)
	// Opens it; no per-step timeout (the browser's context bounds it).
	if err := chromedp.Do(tab); err != nil {
		b.t.Fatalf("open a tab: %v\n%s", err, b.Log())
	}
	return tab
}

// Log is what Chromium and chromedp wrote so far.
func (b *Browser) Log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.String()
}

// Exceptions are the uncaught exceptions the pages threw so far.
func (b *Browser) Exceptions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.exceptions...)
}

// Do runs steps within StepTimeout and fails the test if one fails.
func (b *Browser) Do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// PollAcrossReload is Poll for a page that navigates meanwhile (a
// language switch reloads it): an evaluation that fails because the page
// is gone or not there yet is tried again rather than failing the test.
func (b *Browser) PollAcrossReload(what, expr string) string {
	b.t.Helper()
	deadline := time.Now().Add(PollTimeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		cancel()
		if err == nil && v != "" {
			return v
		}
		time.Sleep(100 * time.Millisecond)
	}
	return b.Poll(what, expr) // fails with the page's text
}

// Poll evaluates expr until it returns a non-empty string, and returns it;
// after PollTimeout the test fails with the page's text.
func (b *Browser) Poll(what, expr string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, PollTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Poll[string](expr, chromedp.WithPollingTimeout(PollTimeout-2*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		dctx, dcancel := context.WithTimeout(b.ctx, 2*time.Second)
		defer dcancel()
		page, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		b.t.Fatalf("%s: %v\npage:\n%s", what, err, page)
	}
	return v
}
