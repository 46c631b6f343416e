// Package appliancetest starts a real edged in-process for a test: the
// composition root (appliance.Run) on a fresh data dir, with the address
// it bound, its HTTPS side (CA and key pin) and the admin token it wrote,
// stopped and checked when the test ends. Every test that needs a whole
// edge without building the binary starts it here, so a change to how
// edged starts is made once. It imports the composition root, so it lives
// under cmd/ and only tests import it.
package appliancetest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/cmd/edged/appliance"
	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/config"
)

// Deadlines for start and stop: generous, because a loaded machine starts
// slowly; they bound a hung edge, they do not measure it.
const (
	StartTimeout = 15 * time.Second
	StopTimeout  = 15 * time.Second
)

// Config is what tests start edged on: the embedded defaults with a fresh
// data dir, -listen 127.0.0.1:0 and no mDNS (nothing leaves loopback).
func Config(t testing.TB) config.Config {
	t.Helper()
	cfg := config.Defaults()
	cfg.DataDir, cfg.Listen, cfg.MDNS = t.TempDir(), "127.0.0.1:0", false
	// A vanished classroom's leave is recorded 2 s after it vanished (not
	// the default 20 s), so tests that see a room go wait briefly; tests
	// of reconnects set their own.
	cfg.ReconnectGrace = 2 * time.Second
	return cfg
}

// Edge is an edged running in-process.
type Edge struct {
	URL   string // the plain HTTP side: http://host:port
	Admin string // the admin token edged wrote to DataDir/admin-token
	Data  string // the data dir
	HTTPS *TLS   // the HTTPS side; nil with -https-listen off
}

// TLS is edged's HTTPS side as it reports it once serving.
type TLS struct {
	URL   string // https://host:port
	CAPEM []byte // the edge CA, for a client or a browser to trust
	Pin   string // the SPKI pin of the key it serves (browsertest.TrustPin)
}

// Client is an HTTP client for URL that trusts only the edge CA, as a
// device that installed it would.
func (s *TLS) Client(t testing.TB) *http.Client {
	t.Helper()
	return browsertest.Client(t, s.CAPEM)
}

// CAFile writes the edge CA to a file in a temporary dir and returns its
// path, for a child's SSL_CERT_FILE.
func (s *TLS) CAFile(t testing.TB) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "edge-ca.pem")
	if err := os.WriteFile(f, s.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// Start runs edged on cfg until the test ends (or ctx does), logging to
// log (nowhere when nil), and returns once it serves HTTP and, unless
// cfg turns HTTPS off, HTTPS. When the test ends it stops edged and fails
// the test if edged returned an error or did not stop.
func Start(ctx context.Context, t testing.TB, cfg config.Config, log *slog.Logger) *Edge {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	edgeCtx, stop := context.WithCancel(ctx)
	ready := make(chan net.Addr, 1)
	readyTLS := make(chan TLS, 1)
	done := make(chan error, 1)
	go func() {
		done <- appliance.Run(edgeCtx, cfg, log, appliance.Options{
			Ready: func(a net.Addr) { ready <- a },
			ReadyTLS: func(a net.Addr, tm *certs.Manager) {
				readyTLS <- TLS{URL: "https://" + a.String(), CAPEM: tm.CAPEM(), Pin: tm.Pin()}
			},
		})
	}()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("edged: %v", err)
			}
		case <-time.After(StopTimeout):
			t.Errorf("edged did not stop within %v", StopTimeout)
		}
	})
	e := &Edge{Data: cfg.DataDir}
	e.URL = "http://" + waitReady(ctx, t, ready, done, "HTTP").String()
	if cfg.HTTPSAddr() != "" { // ReadyTLS follows Ready at once
		h := waitReady(ctx, t, readyTLS, done, "HTTPS")
		e.HTTPS = &h
	}
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Admin = strings.TrimSpace(string(tok)); e.Admin == "" {
		t.Fatal("empty admin token file")
	}
	return e
}

// waitReady waits for edged to report what on ready, failing the test if
// edged stops first or does not start in time.
func waitReady[T any](ctx context.Context, t testing.TB, ready <-chan T, done chan error, what string) T {
	t.Helper()
	timer := time.NewTimer(StartTimeout)
	defer timer.Stop()
	var zero T
	select {
	case v := <-ready:
		return v
	case err := <-done:
		done <- err // for the cleanup, which waits for edged to end
		t.Fatalf("edged stopped before serving %s: %v", what, err)
	case <-ctx.Done():
		t.Fatalf("edged not serving %s: %v", what, ctx.Err())
	case <-timer.C:
		t.Fatalf("edged not serving %s within %v", what, StartTimeout)
	}
	return zero
}
