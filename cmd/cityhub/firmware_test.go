package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/firmware/bundle"
)

// TestFirmwareChannelIsMounted publishes a bundle through the real cityhub
// and finds it listed; the catalogue routes keep working beside it.
func TestFirmwareChannelIsMounted(t *testing.T) {
	dir := t.TempDir()
	hub := filepath.Join(dir, "hub")
	_, pubPath, err := bundle.GenerateKey(filepath.Join(hub, "firmware", "release-keys"), nil)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := bundle.LoadPrivateKey(strings.TrimSuffix(pubPath, ".pub") + ".key")
	payload := filepath.Join(dir, "payload")
	os.MkdirAll(payload, 0o755)
	os.WriteFile(filepath.Join(payload, "edged"), []byte("bin"), 0o755)
	bpath := filepath.Join(dir, "fw.bundle")
	if _, err := bundle.Create(bundle.Build{Dir: payload, Product: "campusedge", Target: "linux-amd64", Version: "1.0.0", Entry: "edged"}, priv, bpath); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-data", hub, "-listen", "127.0.0.1:0"}, &bytes.Buffer{}, &bytes.Buffer{}, func(a, _ net.Addr) { addrc <- a })
	}()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a.String()
	case <-time.After(5 * time.Second):
		t.Fatal("hub did not start")
	}
	tok, _ := os.ReadFile(filepath.Join(hub, "firmware", "publish-token"))
	body, _ := os.ReadFile(bpath)
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/firmware/releases?channel=beta&rollout=10", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("publish: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	for _, p := range []string{"/api/v1/firmware/releases", "/api/v1/catalog"} {
		resp, err := staffGet(t, hub, base+p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v", p, err)
		}
		resp.Body.Close()
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d", code)
	}
}
