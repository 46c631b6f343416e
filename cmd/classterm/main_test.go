package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/campusedge/campusedge/classroom/pages"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/certs/certstest"
	"github.com/campusedge/campusedge/edge/console"
	"github.com/campusedge/campusedge/edge/ctlwire"
	"github.com/campusedge/campusedge/edge/logtest"
	"github.com/campusedge/campusedge/edge/pairing/pairingtest"
	"github.com/campusedge/campusedge/edge/termagent"
)

func build(t *testing.T) string {
	t.Helper()
	bins, err := bintest.Build(context.Background(), t.TempDir(), bintest.BuildOptions{Race: true}, bintest.Cmd("classterm"))
	if err != nil {
		t.Fatal(err)
	}
	return bins[0]
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
	e := pairingtest.Start(t, pairingtest.Options{Console: pages.With(console.Handler()), Wrap: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/v1/classroom/current" {
				// The page sends the terminal's token as its HttpOnly
				// screen cookie, never from web storage.
				if c, err := r.Cookie(api.ScreenCookie); err == nil {
					mu.Lock()
					polled[c.Value] = true
					mu.Unlock()
				}
			}
			h.ServeHTTP(w, r)
		})
	}})
	code := e.PairingCode(t)

	proxyURL, proxyPin := pairingtest.Proxy(t, e.URL)
	out := &logtest.Buffer{}
	cmd := exec.CommandContext(ctx, bin, "-data", t.TempDir(), "-edge", proxyURL, "-pair", code)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err == nil || !strings.Contains(out.String(), "intercepting") || !strings.Contains(out.String(), proxyPin) {
		t.Fatalf("pairing through the proxy: %v\n%s", err, out.String())
	}

	data := t.TempDir()
	out = &logtest.Buffer{}
	cmd = exec.CommandContext(ctx, bin, "-data", data, "-edge", e.URL, "-pair", code, "-name", "board-1", "-kiosk",
		"-kiosk-flag=--headless", "-kiosk-flag=--no-sandbox", "-kiosk-flag=--disable-gpu", "-kiosk-flag=--use-fake-device-for-media-stream")
	cmd.Stdout, cmd.Stderr = out, out
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

// The real binary with -ca: a file that is not certificates stops it at
// start; a paired terminal refuses an edge whose certificate comes from
// another authority, logging what is wrong and what to do, and connects
// once the edge presents a certificate from the -ca root for its address.
func TestClasstermCA(t *testing.T) {
	bin := build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := certstest.NewCA(t, "Test city root")
	dir := t.TempDir()
	caFile := filepath.Join(dir, "city-root.pem")
	if err := os.WriteFile(caFile, root.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "key.pem")
	_ = os.WriteFile(keyFile, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
	out, err := exec.CommandContext(ctx, bin, "-data", t.TempDir(), "-ca", keyFile).CombinedOutput()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "-ca") || !strings.Contains(string(out), "never a key") {
		t.Fatalf("-ca with a key file: %v\n%s", err, out)
	}

	var welcomed sync.WaitGroup
	welcomed.Add(1)
	var once sync.Once
	up := websocket.Upgrader{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/ws" {
			http.NotFound(w, r)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		var hello ctlwire.Hello
		if ws.ReadJSON(&hello) != nil || hello.Token != "tok" {
			return
		}
		_ = ws.WriteJSON(ctlwire.Welcome{Header: ctlwire.New(ctlwire.TypeWelcome), Role: "terminal", EdgeID: "edge-ca-01", TerminalID: "t1", HeartbeatSeconds: 30})
		once.Do(welcomed.Done)
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	})
	srv := certstest.Serve(t, h, certstest.NewCA(t, "Some other CA").Good(t, "127.0.0.1"), nil)
	data := t.TempDir()
	// Paired earlier (the pin is of some key; -ca makes it irrelevant).
	if err := termagent.SaveState(data, termagent.State{EdgeURL: srv.URL, EdgePin: certs.SPKIPin(root.Good(t, "x").Leaf), EdgeID: "edge-ca-01", TerminalID: "t1", Token: "tok"}); err != nil {
		t.Fatal(err)
	}
	var log logtest.Buffer
	cmd := exec.CommandContext(ctx, bin, "-data", data, "-ca", caFile)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for !strings.Contains(log.String(), "signed by an authority this terminal does not trust") {
		select {
		case <-ctx.Done():
			t.Fatalf("no refusal of the unknown CA logged:\n%s", log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, want := range []string{"refusing the edge's certificate", `issued by \"Some other CA\"`, "Give -ca the root"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
	srv.Use(root.Good(t, "127.0.0.1"))
	ok := make(chan struct{})
	go func() { welcomed.Wait(); close(ok) }()
	select {
	case <-ok:
	case <-ctx.Done():
		t.Fatalf("classterm -ca never connected to the edge with a certificate from the city root:\n%s", log.String())
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("classterm after SIGTERM: %v\n%s", err, log.String())
	}
}
