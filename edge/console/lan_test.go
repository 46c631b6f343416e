package console_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/campusedge/campusedge/cmd/edged/appliance/appliancetest"
	"github.com/campusedge/campusedge/edge/browsertest"
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
	a := appliancetest.Start(ctx, t, cfg, logger)
	if a.HTTPS == nil {
		t.Fatal("edged on a LAN address serves no HTTPS")
	}
	return &lanEdge{url: a.HTTPS.URL, pin: a.HTTPS.Pin, caFile: a.HTTPS.CAFile(t), token: a.Admin}
}
