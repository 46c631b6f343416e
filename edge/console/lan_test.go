package console_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/cmd/edged/appliance/appliancetest"
	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/logtest"
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
// the test ends, logging to logger; a nil logger logs into a buffer that is
// shown only when the test fails (never through t from edged's goroutines).
func startLANEdge(ctx context.Context, t *testing.T, cfg config.Config, logger *slog.Logger) *lanEdge {
	t.Helper()
	if logger == nil {
		var buf logtest.Buffer
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("edged log:\n%s", buf.String())
			}
		})
		logger = slog.New(slog.NewTextHandler(&buf, nil))
	}
	cfg.Listen = browsertest.LANListen
	a := appliancetest.Start(ctx, t, cfg, logger)
	if a.HTTPS == nil {
		t.Fatal("edged on a LAN address serves no HTTPS")
	}
	return &lanEdge{url: a.HTTPS.URL, pin: a.HTTPS.Pin, caFile: a.HTTPS.CAFile(t), token: a.Admin}
}

// signIn opens the console of e in a new Chromium that trusts e's key,
// checks the page is a secure context at the LAN address, and signs in with
// the admin token.
func signIn(ctx context.Context, t *testing.T, e *lanEdge) *browsertest.Browser {
	t.Helper()
	br := browsertest.Start(ctx, t, browsertest.TrustPin(e.pin))
	br.Do("open the console", chromedp.Navigate(e.url+"/"))
	br.RequireSecureLAN()
	br.Do("sign in", chromedp.SetValue(chromedp.CSS("#token"), e.token),
		chromedp.Click(chromedp.CSS(`#signin-form button[type="submit"]`)))
	return br
}
