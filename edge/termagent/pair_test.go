package termagent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/ctlwire"
	"github.com/campusedge/campusedge/edge/pairing/pairingtest"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Pairing through a real TLS edge works, keeps the edge's pin in a 0600
// terminal.json, and the agent then connects over wss with that pin.
func TestPairOverTLSStoresPinAndConnects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := pairingtest.Start(t, pairingtest.Options{})
	e.PairingCode(t) // a second open code: the edge offers several shares
	code := e.PairingCode(t)
	st, err := Pair(ctx, e.URL, code, "board-1", "test")
	if err != nil {
		t.Fatalf("pair: %v", err)
	}
	if st.EdgePin != e.Pin() || st.EdgeURL != e.URL || st.EdgeID != "edge-test-01" || st.Token == "" || st.ClassroomID == "" {
		t.Fatalf("state after pairing: %+v (edge pin %s)", st, e.Pin())
	}
	dir := t.TempDir()
	if err := SaveState(dir, st); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, StateFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("terminal.json: %v %v", fi.Mode(), err)
	}
	back, err := LoadState(dir)
	if err != nil || back != st {
		t.Fatalf("reload: %+v %v", back, err)
	}
	if _, err := Pair(ctx, e.URL, code, "again", "test"); err == nil || !strings.Contains(err.Error(), "pairing_code_used") {
		t.Fatalf("reused code: %v", err)
	}

	welcomed := make(chan ctlwire.Welcome, 1)
	a := &Agent{State: st, DataDir: dir, Name: "board-1", Version: "test", Log: quietLog(),
		OnConnected: func(w ctlwire.Welcome) {
			select {
			case welcomed <- w:
			default:
			}
		}}
	actx, acancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	select {
	case w := <-welcomed:
		if w.TerminalID != st.TerminalID {
			t.Fatalf("welcome for %s", w.TerminalID)
		}
	case <-ctx.Done():
		t.Fatal("agent never connected over wss")
	}
	acancel()
	<-done
}

// A device that terminates TLS with its own key and forwards everything:
// pairing fails with a message that names the interception, and the edge
// counts the exchange as a wrong try.
func TestPairThroughKeySubstitutingProxyFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := pairingtest.Start(t, pairingtest.Options{})
	code := e.PairingCode(t)
	proxyURL, proxyPin := pairingtest.Proxy(t, e.URL)
	_, err := Pair(ctx, proxyURL, code, "board-1", "test")
	var ie *InterceptError
	if !errors.As(err, &ie) {
		t.Fatalf("pairing through the proxy: %v, want InterceptError", err)
	}
	if ie.SeenPin != proxyPin || ie.EdgePin != e.Pin() {
		t.Fatalf("pins in the error: seen %s edge %s; want %s %s", ie.SeenPin, ie.EdgePin, proxyPin, e.Pin())
	}
	msg := err.Error()
	for _, want := range []string{"pairing failed", proxyPin, "intercepting", "trusted network"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if n, _ := e.Fleet.WrongPairingTries(); n != 1 {
		t.Fatalf("edge counted %d wrong tries, want 1", n)
	}
	// The code is not spent: the same code pairs directly.
	if _, err := Pair(ctx, e.URL, code, "board-1", "test"); err != nil {
		t.Fatalf("direct pairing after the intercepted try: %v", err)
	}
}

func TestPairWrongCodeCountsAndLocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := pairingtest.Start(t, pairingtest.Options{})
	code := e.PairingCode(t)
	wrong := []byte(code)
	wrong[0] = '0' + (wrong[0]-'0'+1)%10
	for i := range 3 {
		_, err := Pair(ctx, e.URL, string(wrong), "x", "test")
		var pe *PairError
		if !errors.As(err, &pe) || pe.Code != "pairing_code_wrong" || !strings.Contains(err.Error(), e.Pin()) {
			t.Fatalf("wrong try %d: %v", i+1, err)
		}
	}
	// This device now backs off (the right code from another device would
	// still pair: edge/e2e TestPairingWithRealClassterm).
	_, err := Pair(ctx, e.URL, string(wrong), "x", "test")
	if err == nil || !strings.Contains(err.Error(), "pairing_backoff") {
		t.Fatalf("4th wrong try: %v", err)
	}
	if _, err := Pair(ctx, e.URL, code, "x", "test"); err == nil || !strings.Contains(err.Error(), "pairing_backoff") {
		t.Fatalf("right code from the backing-off device: %v", err)
	}
	if _, err := Pair(ctx, e.URL, "12ab", "x", "test"); err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Fatalf("malformed code: %v", err)
	}
	if _, err := Pair(ctx, strings.Replace(e.URL, "https://127.0.0.1", "http://10.9.9.9", 1), code, "x", "test"); err == nil || !strings.Contains(err.Error(), "https") {
		t.Fatalf("http to a LAN address: %v", err)
	}
}

// After pairing, an edge that shows another key is refused with an error
// that tells the admin to re-pair; the agent never says hello to it.
func TestChangedEdgeKeyRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := pairingtest.Start(t, pairingtest.Options{})
	st, err := Pair(ctx, e.URL, e.PairingCode(t), "board-1", "test")
	if err != nil {
		t.Fatal(err)
	}
	newPin := e.NewKey(t)
	errs := make(chan error, 16)
	connected := make(chan struct{}, 1)
	a := &Agent{State: st, DataDir: t.TempDir(), Name: "board-1", Version: "test", Log: quietLog(),
		OnConnected: func(ctlwire.Welcome) { connected <- struct{}{} },
		OnDisconnected: func(err error) {
			select {
			case errs <- err:
			default:
			}
		}}
	actx, acancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	select {
	case err := <-errs:
		var pe *PinMismatchError
		if !errors.As(err, &pe) || pe.Want != st.EdgePin || pe.Got != newPin {
			t.Fatalf("connection error: %v, want PinMismatchError", err)
		}
		if !strings.Contains(err.Error(), "pair again") {
			t.Fatalf("error does not say to re-pair: %v", err)
		}
	case <-connected:
		t.Fatal("the agent connected to an edge with another key")
	case <-ctx.Done():
		t.Fatal("no connection attempt")
	}
	// The firmware client is pinned too.
	res, err := a.HTTPClient().Get(e.URL + "/api/v1/edge")
	if err == nil {
		res.Body.Close()
		t.Fatal("pinned HTTP client accepted a changed key")
	}
	var pe *PinMismatchError
	if !errors.As(err, &pe) {
		t.Fatalf("HTTP client error: %v", err)
	}
	acancel()
	<-done
}

func TestHTTPSURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://10.0.0.1:9443/":  "https://10.0.0.1:9443",
		"http://10.0.0.1:8080":    "https://10.0.0.1:8443",
		"http://edge.local:8080/": "https://edge.local:8443",
		"http://127.0.0.1:8080":   "http://127.0.0.1:8080",
		"http://[::1]:8080":       "http://[::1]:8080",
	} {
		if got, err := HTTPSURL(in, 0); err != nil || got != want {
			t.Errorf("HTTPSURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if got, _ := HTTPSURL("http://10.0.0.1:8080", 9000); got != "https://10.0.0.1:9000" {
		t.Errorf("TXT port: %q", got)
	}
	if _, err := HTTPSURL("ftp://x", 0); err == nil {
		t.Error("ftp accepted")
	}
}
