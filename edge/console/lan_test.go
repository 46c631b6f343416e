package console_test

import (
	"context"
	"log/slog"
	"net"
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

// lanEdge is an in-process edged on browsertest.LANAddr, reached over
// HTTPS: the test runs in its own namespace (browsertest.OnLAN), and from
// LANAddr to LANAddr is not loopback, so pages must be HTTPS to be secure
// contexts and token-bearing calls over plain HTTP are refused.
type lanEdge struct {
	url    string // https://LANAddr:port
	pin    string // the key's pin, for browsertest.TrustPin
	caFile string // the edge CA (PEM), for a client's SSL_CERT_FILE
	token  string // the admin token
}

// startLANEdge runs edged on cfg with -listen browsertest.LANListen until
// the test ends, logging to logger.
func startLANEdge(ctx context.Context, t *testing.T, cfg config.Config, logger *slog.Logger) *lanEdge {
	t.Helper()
	cfg.Listen = browsertest.LANListen
	edgeCtx, stopEdge := context.WithCancel(ctx)
	type tlsReady struct {
		addr net.Addr
		tm   *certs.Manager
	}
	ready := make(chan tlsReady, 1)
	edgeDone := make(chan error, 1)
	go func() {
		edgeDone <- appliance.Run(edgeCtx, cfg, logger, appliance.Options{
			ReadyTLS: func(a net.Addr, tm *certs.Manager) { ready <- tlsReady{a, tm} },
		})
	}()
	t.Cleanup(func() {
		stopEdge()
		select {
		case err := <-edgeDone:
			if err != nil {
				t.Errorf("edged: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("edged did not stop within 15s")
		}
	})
	var e lanEdge
	select {
	case r := <-ready:
		e.url, e.pin = "https://"+r.addr.String(), r.tm.Pin()
		e.caFile = filepath.Join(t.TempDir(), "edge-ca.pem")
		if err := os.WriteFile(e.caFile, r.tm.CAPEM(), 0o644); err != nil {
			t.Fatal(err)
		}
	case err := <-edgeDone:
		t.Fatalf("edged stopped at start-up: %v", err)
	case <-ctx.Done():
		t.Fatalf("edged not serving HTTPS: %v", ctx.Err())
	}
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	e.token = strings.TrimSpace(string(tok))
	if e.token == "" {
		t.Fatal("empty admin token file")
	}
	return &e
}
