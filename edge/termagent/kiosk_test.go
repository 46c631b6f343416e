package termagent

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/remote"

	"github.com/campusedge/campusedge/classroom/pages"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/console"
	"github.com/campusedge/campusedge/edge/pairing/pairingtest"
)

// needChromium skips without Chromium, except under CI=true (see
// edge/browsertest: a page check that silently skips in CI never runs).
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(DefaultChromium); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium is required in CI: %v", err)
		}
		t.Skipf("chromium not installed (%v)", err)
	}
}

// tokenSeen records the bearer tokens the classroom page polls with.
type tokenSeen struct {
	mu   sync.Mutex
	hits map[string]int
}

func (s *tokenSeen) count(tok string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[tok]
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// The kiosk launcher starts real Chromium on the classroom page of a TLS
// edge it trusts only by the pin; the page comes up paired as this
// terminal (it polls the edge with the terminal's token as its HttpOnly
// screen cookie, from a secure context, with the fragment gone), and a killed browser comes back.
func TestKioskComesUpPairedAndIsRestarted(t *testing.T) {
	needChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	seen := &tokenSeen{hits: map[string]int{}}
	e := pairingtest.Start(t, pairingtest.Options{Console: pages.With(console.Handler()), Wrap: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/v1/classroom/current" {
				// The page holds the terminal's token as its HttpOnly
				// screen cookie (api.ScreenCookie), set from the fragment.
				if c, err := r.Cookie(api.ScreenCookie); err == nil {
					seen.mu.Lock()
					seen.hits[c.Value]++
					seen.mu.Unlock()
				}
			}
			h.ServeHTTP(w, r)
		})
	}})
	st, err := Pair(ctx, e.URL, e.PairingCode(t), "board-1", "test")
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	pids := make(chan int, 4)
	k := &Kiosk{Log: quietLog(), OnStart: func(pid int) { pids <- pid }, Options: KioskOptions{
		EdgeURL: st.EdgeURL, Pin: st.EdgePin, Token: st.Token, DataDir: data, GrantMedia: true,
		Extra: []string{"--headless", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1"},
	}}
	kctx, kcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- k.Run(kctx) }()
	defer func() {
		kcancel()
		if err := <-done; err != nil {
			t.Errorf("kiosk run: %v", err)
		}
	}()

	first := <-pids
	waitFor(t, ctx, "the kiosk page to poll the edge with the terminal's token", func() bool { return seen.count(st.Token) > 0 })
	if fi, err := os.Stat(filepath.Join(data, KioskStartFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("start page: %v", err)
	}
	if cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(first) + "/cmdline"); strings.Contains(string(cmdline), st.Token) {
		t.Fatal("the credential is on Chromium's command line")
	}
	checkPage(t, ctx, data, e.URL, st.Token)

	// Killed: restarted, and the page comes back paired.
	before := seen.count(st.Token)
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case second := <-pids:
		if second == first {
			t.Fatal("same pid after restart")
		}
	case <-ctx.Done():
		t.Fatal("Chromium was not restarted")
	}
	waitFor(t, ctx, "the restarted page to poll again", func() bool { return seen.count(st.Token) > before+1 })
}

// checkPage attaches to the kiosk browser through its DevTools port: the
// classroom tab has no fragment left, and the page's origin is a secure
// context holding the terminal's token.
func checkPage(t *testing.T, ctx context.Context, data, edgeURL, token string) {
	t.Helper()
	var port []byte
	waitFor(t, ctx, "DevToolsActivePort", func() bool {
		b, err := os.ReadFile(filepath.Join(data, "kiosk-profile", "DevToolsActivePort"))
		port = b
		return err == nil && strings.Count(string(b), "\n") >= 1
	})
	lines := strings.SplitN(strings.TrimSpace(string(port)), "\n", 2)
	actx, acancel := remote.NewAllocator(ctx, "ws://127.0.0.1:"+lines[0]+lines[1], remote.NoModifyURL)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	var classroomURL string
	waitFor(t, ctx, "the classroom tab without its fragment", func() bool {
		targets, err := chromedp.Targets(bctx)
		if err != nil {
			return false
		}
		for _, ti := range targets {
			if ti.Type == "page" && strings.HasPrefix(ti.URL, edgeURL+"/classroom.html") {
				classroomURL = ti.URL
				return !strings.Contains(ti.URL, "#")
			}
		}
		return false
	})
	type pageState struct {
		Secure  bool   `json:"secure"`
		Storage int    `json:"storage"` // items in localStorage: none, the token is an HttpOnly cookie
		Cookie  string `json:"cookie"`  // what scripts see of the cookies: not the screen's
		Status  string `json:"status"`
		Media   bool   `json:"media"`
	}
	if _, err := chromedp.Run(bctx, chromedp.Navigate(edgeURL+"/classroom.html")); err != nil {
		t.Fatalf("second tab (classroom tab at %s): %v", classroomURL, err)
	}
	// The origin holds the terminal's token only as the HttpOnly cookie
	// (the poll counter above sees it arrive with each poll).
	var got pageState
	waitFor(t, ctx, "the classroom tab", func() bool {
		var err error
		got, err = chromedp.Run(bctx, chromedp.Evaluate[pageState](`({secure: window.isSecureContext, storage: localStorage.length, cookie: document.cookie, status: document.getElementById("status").textContent, media: !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia)})`))
		return err == nil
	})
	if !got.Secure || got.Storage != 0 || strings.Contains(got.Cookie, "campusedge") || !got.Media {
		t.Fatalf("classroom origin: %+v (want secure, nothing in storage, no script-readable credential, media devices)", got)
	}
}
