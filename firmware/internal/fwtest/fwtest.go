// Package fwtest holds helpers the firmware tests share: building the
// stand-in firmware, making keys and bundles of binaries, free ports.
package fwtest

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/firmware/bundle"
)

// Target is the target tests build bundles for.
const Target = runtime.GOOS + "-" + runtime.GOARCH

// BuildPayload builds the stand-in firmware into dir and returns its path.
func BuildPayload(dir string) (string, error) {
	bins, err := bintest.Build(context.Background(), dir, bintest.BuildOptions{}, bintest.Module+"/firmware/internal/fwtest/payload")
	if err != nil {
		return "", err
	}
	return bins[0], nil
}

// Keys is a release key pair.
type Keys struct {
	Priv    ed25519.PrivateKey
	Ring    *bundle.Keyring
	PubPath string
}

// NewKeys makes a key pair in dir.
func NewKeys(t testing.TB, dir string) Keys {
	t.Helper()
	privPath, pubPath, err := bundle.GenerateKey(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := bundle.LoadPrivateKey(privPath)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := bundle.LoadKeyring(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	return Keys{Priv: priv, Ring: ring, PubPath: pubPath}
}

// PayloadBundle bundles the payload binary as version with mode and
// returns the bundle's path.
func PayloadBundle(t testing.TB, k Keys, payloadBin, version, mode string) string {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(payloadBin)
	if err != nil {
		t.Fatal(err)
	}
	for n, c := range map[string][]byte{"payload": b, "version": []byte(version + "\n"), "mode": []byte(mode + "\n")} {
		perm := os.FileMode(0o644)
		if n == "payload" {
			perm = 0o755
		}
		if err := os.WriteFile(filepath.Join(dir, n), c, perm); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "payload-"+version+".bundle")
	if _, err := bundle.Create(bundle.Build{Dir: dir, Product: "campusedge", Target: Target, Version: version, Entry: "payload"}, k.Priv, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Get fetches url and returns the body, or "" with the error.
func Get(ctx context.Context, url string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return strings.TrimSpace(string(b)), err
}

// WaitFor polls f every 50 ms until it returns true or d passes.
func WaitFor(d time.Duration, f func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if f() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return f()
}
