package browsertest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/netnstest"
)

// LANAddr is the address page tests serve the edge on: on a veth
// interface (LANLink) inside the test's own user and network namespace
// (OnLAN), so that it reaches nothing outside, yet for Chromium it is a LAN
// address like a school's, not loopback. Pages loaded from it over plain HTTP are not secure contexts
// (no camera, no microphone; ../shared/FIELD-NOTES.md, "The LAN is not
// loopback"), so page tests load them over HTTPS.
const LANAddr = "10.231.0.1"

// LANLink is the interface OnLAN puts LANAddr on. Not lo: the edge's
// WebRTC (pion) gathers no candidate on a loopback interface unless it
// listens on a loopback address, so an address on lo would serve pages and
// API but fail every media connection; a veth end is a LAN interface as a
// school's would be.
const LANLink = "lan0"

// LANListen is the -listen address for an edge on LANAddr: a free port,
// and the HTTPS listener then on a free port of the same address.
const LANListen = LANAddr + ":0"

// SecureLANExpr is true in a page that is a secure context served over
// HTTPS from LANAddr: a page test that regresses to loopback (where plain
// HTTP is a secure context too) or to plain HTTP fails on it.
const SecureLANExpr = `window.isSecureContext === true && location.protocol === "https:" && location.hostname === "` + LANAddr + `"`

// OnLAN makes the calling test run in its own user and network namespace
// (no root needed) with LANAddr on LANLink. Outside (the normal test run) it
// re-runs the test there and returns false: the caller must return at
// once. Inside, it returns true and the test goes on: an edge listening on
// LANListen is reached by Chromium and the test's own HTTP clients from a
// non-loopback address, as on a school's LAN.
//
//	func TestX(t *testing.T) {
//		if !browsertest.OnLAN(t) {
//			return
//		}
//		...
//	}
func OnLAN(t *testing.T) bool {
	t.Helper()
	if !netnstest.Isolate(t) {
		return false
	}
	if err := netnstest.AddVeth(LANLink, LANAddr+"/24", ""); err != nil {
		t.Fatal(err)
	}
	// IPv4 only: an IPv6 address finishing duplicate address detection
	// after Chromium started would abort its page loads as a network change.
	for _, dev := range []string{LANLink, LANLink + "p"} {
		if err := netnstest.DisableIPv6(dev); err != nil {
			t.Fatal(err)
		}
	}
	return true
}

// RequireSecureLAN fails t unless the page in ctx (a chromedp tab) is a
// secure context at https://LANAddr (SecureLANExpr).
func RequireSecureLAN(ctx context.Context, t testing.TB) {
	t.Helper()
	ectx, cancel := context.WithTimeout(ctx, StepTimeout)
	defer cancel()
	ok, err := chromedp.Run(ectx, chromedp.Evaluate[bool](SecureLANExpr))
	if err != nil {
		t.Fatalf("secure context check: %v", err)
	}
	if !ok {
		where, _ := chromedp.Run(ectx, chromedp.Evaluate[string](`location.href + " isSecureContext=" + window.isSecureContext`))
		t.Fatalf("the page is not a secure context at https://%s: %s", LANAddr, where)
	}
}

// RequireSecureLAN is the package function for b's page.
func (b *Browser) RequireSecureLAN() {
	b.t.Helper()
	RequireSecureLAN(b.ctx, b.t)
}

// Client returns an HTTP client for the test's own API calls to an edge
// over HTTPS that trusts only caPEM (the edge CA, certs.Manager.CAPEM), as
// a device that installed it would, and verifies the edge's address.
func Client(t testing.TB, caPEM []byte) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("browsertest.Client: no certificate in the CA PEM (%d bytes)", len(caPEM))
	}
	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
