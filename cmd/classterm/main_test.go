package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/console"
	"github.com/campusedge/campusedge/edge/pairing/pairingtest"
	"github.com/campusedge/campusedge/edge/termagent"
)

// syncBuf collects a child's output.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "classterm")
	out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build classterm: %v\n%s", err, out)
	}
	return bin
}

// The real binary: -pair through a key-substituting proxy fails with the
// interception message; -pair straight to the edge with -kiosk pairs,
// pins the key, brings up the classroom page paired, and SIGTERM stops
// classterm and its browser.
func TestClasstermPairAndKiosk(t *testing.T) {
	if _, err := os.Stat(termagent.DefaultChromium); err != nil && os.Getenv("CI") != "true" {
		t.Skipf("chromium not installed (%v)", err)
	}
	bin := build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var mu sync.Mutex
	polled := map[string]bool{}
	e := pairingtest.Start(t, pairingtest.Options{Console: console.Handler(), Wrap: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/v1/classroom/current" {
				mu.Lock()
				polled[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")] = true
				mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	}})
	code := e.PairingCode(t)

	proxyURL, proxyPin := pairingtest.Proxy(t, e.URL)
	var out syncBuf
	cmd := exec.CommandContext(ctx, bin, "-data", t.TempDir(), "-edge", proxyURL, "-pair", code)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err == nil || !strings.Contains(out.String(), "intercepting") || !strings.Contains(out.String(), proxyPin) {
		t.Fatalf("pairing through the proxy: %v\n%s", err, out.String())
	}

	data := t.TempDir()
	out = syncBuf{}
	cmd = exec.CommandContext(ctx, bin, "-data", data, "-edge", e.URL, "-pair", code, "-name", "board-1", "-kiosk",
		"-kiosk-flag=--headless", "-kiosk-flag=--no-sandbox", "-kiosk-flag=--disable-gpu", "-kiosk-flag=--use-fake-device-for-media-stream")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var st termagent.State
	for {
		var err error
		if st, err = termagent.LoadState(data); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("never paired:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if st.EdgePin != e.Pin() || st.EdgeURL != e.URL {
		t.Fatalf("state: %+v", st)
	}
	for {
		mu.Lock()
		ok := polled[st.Token]
		mu.Unlock()
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the kiosk page never polled as this terminal:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("classterm after SIGTERM: %v\n%s", err, out.String())
	}
	for _, want := range []string{"kiosk: Chromium running", "kiosk: Chromium stopped", st.EdgePin} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, out.String())
		}
	}
	if ps, _ := exec.Command("pgrep", "-f", filepath.Join(data, "kiosk-profile")).Output(); len(ps) > 0 {
		t.Fatalf("Chromium processes left after SIGTERM: %s", ps)
	}
}
