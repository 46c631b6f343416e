package console_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/cmd/edged/appliance/appliancetest"
	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/logtest"
)

// TestConsoleInChromium drives the real console page in headless Chromium
// against an in-process edged and a real classterm binary: sign-in (wrong
// and right token), classroom creation, pairing code, and the live
// online/offline state of the terminal over the console's WebSocket.
func TestConsoleInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	// Everything below is bounded by this context; the test stays well
	// under a minute even when a step hangs.
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()

	// Logs of everything the test starts go into buffers, never through t
	// from callbacks or goroutines, and are shown only when the test fails.
	var edgeLog, termLog logtest.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("edged log:\n%s", edgeLog.String())
			t.Logf("classterm log:\n%s", termLog.String())
		}
	})

	classterm := buildClassterm(ctx, t)

	// edged, in-process, on a LAN address over HTTPS.
	cfg := appliancetest.Config(t)
	logger := slog.New(slog.NewTextHandler(&edgeLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	edge := startLANEdge(ctx, t, cfg, logger)
	edgeURL, token := edge.url, edge.token

	br := browsertest.Start(ctx, t, browsertest.TrustPin(edge.pin))
	bctx, do := br.Context(), br.Do

	do("open the console", chromedp.Navigate(edgeURL+"/"))
	br.RequireSecureLAN()

	// A wrong token is refused with a visible message and no app.
	do("sign in with a wrong token",
		chromedp.SendKeys(chromedp.CSS("#token"), "not-the-admin-token"),
		chromedp.Click(chromedp.CSS(`#signin-form button[type="submit"]`)),
	)
	msg := poll[string](bctx, t, "sign-in error shown",
		`document.getElementById("signin-error").textContent || false`)
	if msg != "That token is not the admin token." {
		t.Errorf("sign-in error = %q, want the wrong-token message", msg)
	}
	if hidden := eval[bool](bctx, t, `document.getElementById("app").hidden`); !hidden {
		t.Error("app panel visible after a refused token")
	}

	// The right token opens the app and the live WebSocket.
	do("sign in with the admin token",
		// Paste over the wrong token, as the page tells admins to do.
		// (chromedp.Clear only resets the value attribute, which does not
		// empty an input that was typed into.)
		chromedp.SetValue(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS(`#signin-form button[type="submit"]`)),
	)
	poll[bool](bctx, t, "app shown and WebSocket live",
		`!document.getElementById("app").hidden && document.getElementById("signin").hidden &&
		 document.getElementById("link").textContent === "live"`)

	// Create a classroom through the form.
	do("add a classroom",
		chromedp.SendKeys(chromedp.CSS("#classroom-name"), "Grade 7 Class 2"),
		chromedp.SendKeys(chromedp.CSS("#classroom-room"), "R204"),
		chromedp.Click(chromedp.CSS(`#classroom-form button[type="submit"]`)),
	)
	classroomID := poll[string](bctx, t, "classroom row",
		`[...document.querySelectorAll("#classrooms tr[data-classroom]")]
		   .find((tr) => tr.cells[0].textContent === "R204" && tr.cells[1].textContent === "Grade 7 Class 2")
		   ?.dataset.classroom || false`)
	row := `tr[data-classroom=` + jsString(classroomID) + `]`

	// Ask for a pairing code and read it from the page.
	do("click New pairing code", chromedp.Click(chromedp.CSS("#classrooms "+row+" .pair-btn")))
	code := poll[string](bctx, t, "pairing code shown",
		`document.querySelector(`+jsString("#classrooms "+row+" span[data-code]")+`)?.dataset.code || false`)
	if !regexp.MustCompile(`^[0-9]{6}$`).MatchString(code) {
		t.Fatalf("pairing code %q is not 6 digits", code)
	}

	// The admin keeps working while someone walks to the terminal: adding
	// another classroom re-renders the table (so does any live event and
	// the 15 s refresh), and the code must stay on screen.
	do("add a second classroom",
		chromedp.SendKeys(chromedp.CSS("#classroom-name"), "Grade 8 Class 1"),
		chromedp.SendKeys(chromedp.CSS("#classroom-room"), "R205"),
		chromedp.Click(chromedp.CSS(`#classroom-form button[type="submit"]`)),
	)
	poll[bool](bctx, t, "second classroom row",
		`[...document.querySelectorAll("#classrooms tr[data-classroom]")].some((tr) => tr.cells[0].textContent === "R205")`)
	if still := eval[string](bctx, t, `document.querySelector(`+jsString("#classrooms "+row+" span[data-code]")+`)?.dataset.code ?? ""`); still != code {
		t.Errorf("pairing code on screen after another classroom was added = %q, want %q", still, code)
	}

	// The real terminal agent pairs with that code and stays connected,
	// over HTTPS, trusting the edge CA as a device that installed it does.
	term := exec.CommandContext(ctx, classterm, "-data", t.TempDir(), "-edge", edgeURL, "-pair", code, "-name", "lab-pc-1")
	term.Env = append(os.Environ(), "SSL_CERT_FILE="+edge.caFile)
	term.Stdout = &termLog
	term.Stderr = &termLog
	term.WaitDelay = 5 * time.Second
	if err := term.Start(); err != nil {
		t.Fatal(err)
	}
	// termExited is closed when classterm has exited; termErr is then set.
	termExited := make(chan struct{})
	var termErr error
	go func() { termErr = term.Wait(); close(termExited) }()
	defer func() {
		_ = term.Process.Kill() // no-op error once it has exited
		<-termExited
	}()
	m := waitLog(ctx, t, &termLog, regexp.MustCompile(`msg=paired terminal=(\S+) classroom=(\S+)`), termExited)
	terminalID := m[1]
	if m[2] != classroomID {
		t.Errorf("classterm paired into classroom %s, want %s", m[2], classroomID)
	}
	waitLog(ctx, t, &termLog, regexp.MustCompile(`msg=connected `), termExited)

	trow := `tr[data-terminal=` + jsString(terminalID) + `]`
	termState := `document.querySelector(` + jsString("#terminals "+trow+" .state") + `)?.textContent`
	onlineCount := `document.querySelector(` + jsString("#classrooms "+row) + `)?.cells[2].textContent`
	poll[bool](bctx, t, "terminal shown online",
		termState+` === "online" && `+onlineCount+` === "1"`)
	// The terminal's classroom by name, with its room code.
	if room := eval[string](bctx, t, `document.querySelector(`+jsString("#terminals "+trow)+`).cells[1].textContent`); room != "Grade 7 Class 2 · R204" {
		t.Errorf("terminal row classroom = %q, want Grade 7 Class 2 · R204", room)
	}

	// Kill the agent: the edge sees the closed TCP connection at once and
	// the page must follow without a reload.
	if err := term.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-termExited
	if termErr == nil {
		t.Error("classterm exited cleanly after SIGKILL?")
	}
	poll[bool](bctx, t, "terminal shown offline",
		termState+` === "offline" && `+onlineCount+` === "0"`)

	if thrown := strings.Join(br.Exceptions(), "\n"); thrown != "" {
		t.Errorf("uncaught exceptions in the page:\n%s", thrown)
	}
}

// poll waits until the JavaScript expression is truthy in the page and
// returns its value; it fails the test after 10 s.
func poll[T any](ctx context.Context, t *testing.T, what, expr string) T {
	t.Helper()
	const within = 10 * time.Second
	pctx, cancel := context.WithTimeout(ctx, within+2*time.Second)
	defer cancel()
	v, err := chromedp.Run(pctx, chromedp.Poll[T](expr, chromedp.WithPollingTimeout(within), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		defer dcancel()
		dom, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("%s: %v\npage text:\n%s", what, err, dom)
	}
	return v
}

// eval evaluates the expression once.
func eval[T any](ctx context.Context, t *testing.T, expr string) T {
	t.Helper()
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ectx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// jsString quotes s as a JavaScript (JSON) string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// buildClassterm builds cmd/classterm from this module into a temp dir.
func buildClassterm(ctx context.Context, t *testing.T) string {
	t.Helper()
	bins, err := bintest.Build(ctx, t.TempDir(), bintest.BuildOptions{}, bintest.Cmd("classterm"))
	if err != nil {
		t.Fatal(err)
	}
	return bins[0]
}

// waitLog waits until b matches re, the process exits, or ctx ends.
func waitLog(ctx context.Context, t *testing.T, b *logtest.Buffer, re *regexp.Regexp, exited <-chan struct{}) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if m := re.FindStringSubmatch(b.String()); m != nil {
			return m
		}
		select {
		case <-b.Changed():
		case <-exited:
			if m := re.FindStringSubmatch(b.String()); m != nil {
				return m
			}
			t.Fatalf("classterm exited before logging %v", re)
		case <-ctx.Done():
			t.Fatalf("no log line %v: %v", re, ctx.Err())
		}
	}
}
