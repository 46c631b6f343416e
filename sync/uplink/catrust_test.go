package uplink_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/certs/certstest"
	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/uplink"
	"github.com/campusedge/campusedge/sync/wire"
)

// caHub is a real cityhub sync server over TLS on 127.0.0.1 with a
// certificate from the test PKI, swappable between handshakes.
func caHub(t *testing.T, st hub.Store, cert *tls.Certificate, cfg *tls.Config) *certstest.Server {
	t.Helper()
	return certstest.Serve(t, hub.NewServer(hub.Config{Store: st, Logger: quiet()}), cert, cfg)
}

// badHubCerts are the certificates CA trust must refuse, each with what
// its error must say; the URL host is 127.0.0.1.
func badHubCerts(t *testing.T, city *certstest.CA) []struct {
	name   string
	cert   *tls.Certificate
	reason certs.UntrustedReason
	says   []string
} {
	stranger := certstest.NewCA(t, "Some other CA")
	exp := city.Expired(t, "127.0.0.1")
	return []struct {
		name   string
		cert   *tls.Certificate
		reason certs.UntrustedReason
		says   []string
	}{
		{"expired", exp, certs.Expired, []string{"the hub's certificate expired on " + exp.Leaf.NotAfter.UTC().Format("2006-01-02 15:04 UTC"), "Renew it at the hub"}},
		{"another host", city.Good(t, "hub.other.example"), certs.WrongHost, []string{"the hub's certificate is for hub.other.example, not 127.0.0.1", "Check -cloud"}},
		{"unknown CA", stranger.Good(t, "127.0.0.1"), certs.UnknownCA, []string{`issued by "Some other CA"`, "signed by an authority this edge does not trust",
			"-cloud-ca", "a token that carries the hub's pin"}},
	}
}

func wantUntrusted(t *testing.T, what string, err error, reason certs.UntrustedReason, says []string) {
	t.Helper()
	var ue *certs.UntrustedError
	if !errors.As(err, &ue) || ue.Reason != reason {
		t.Fatalf("%s: got %v, want a certificate refused as %s", what, err, reason)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: error %q does not say %q", what, err, s)
		}
	}
}

// TestHubTrustedByCA: with a token without a pin, an edge enrols an https
// hub whose certificate chains (through the city CA, an intermediate) to
// the root given as -cloud-ca, stores that the hub is trusted by CA, and
// syncs through the default client. At enrolment an expired certificate,
// one for another host and one from an unknown CA are each refused before
// the secret is sent (the same token then still works), with an error
// that says what is wrong and what to do; once enrolled, every request
// verifies again, and the link shows the same words as refused.
func TestHubTrustedByCA(t *testing.T) {
	t.Parallel()
	root := certstest.NewCA(t, "Test national root")
	city := root.Intermediate(t, "Test city CA")
	st := openBoltHub(t, t.TempDir())
	good := city.Good(t, "hub.city.example", "127.0.0.1")
	th := caHub(t, st, good, nil)
	bad := badHubCerts(t, city)
	ctx := context.Background()
	secret, _, _ := wire.ParseEnrolToken(enrolToken(t, st, "s1", ""))

	e := newEdge(t, nil)
	for _, b := range bad {
		th.Use(b.cert)
		_, err := uplink.Enrol(ctx, e.DB, nil, th.URL, secret, e.Key, root.PEM())
		wantUntrusted(t, "enrol, "+b.name, err, b.reason, b.says)
		if _, ok, _ := uplink.LoadEnrolment(e.DB); ok {
			t.Fatalf("enrol, %s: an enrolment was stored", b.name)
		}
	}
	th.Use(good)
	// Without the city's root the chain leads nowhere this edge knows.
	_, err := uplink.Enrol(ctx, e.DB, nil, th.URL, secret, e.Key, nil)
	wantUntrusted(t, "enrol without -cloud-ca", err, certs.UnknownCA, []string{`issued by "Test national root"`, "-cloud-ca"})
	en, err := uplink.Enrol(ctx, e.DB, nil, th.URL, secret, e.Key, root.PEM())
	if err != nil {
		t.Fatalf("enrol by CA with the city root: %v", err)
	}
	if en.HubTrust != uplink.TrustCA || en.HubPin != "" || en.School != "s1" {
		t.Fatalf("enrolment %+v, want trusted by CA without a pin", en)
	}
	if stored, _, _ := uplink.LoadEnrolment(e.DB); stored.HubTrust != uplink.TrustCA {
		t.Fatalf("stored enrolment %+v", stored)
	}

	appendN(t, e, 20)
	newUplink := func() *uplink.Uplink {
		return uplink.New(uplink.Config{Hub: th.URL, CloudCA: root.PEM(), DB: e.DB, Outbox: e.Ob, Identity: e.Key, Logger: quiet(),
			MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	}
	en, _, _ = uplink.LoadEnrolment(e.DB)
	for _, b := range bad {
		th.Use(b.cert)
		_, err := newUplink().SendOnce(ctx, en) // a new client: no connection from before
		wantUntrusted(t, "sync, "+b.name, err, b.reason, b.says)
	}
	if n := len(hubRecords(t, st, "s1")); n != 0 {
		t.Fatalf("%d records reached a hub with a refused certificate", n)
	}

	// The link of a running edge says refused, in the same words.
	th.Use(bad[0].cert)
	u := newUplink()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); u.Run(runCtx) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s, _ := u.Status()
		if s.Link == "refused" && strings.Contains(s.LastError, "Renew it at the hub") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("link %q (%s), want refused saying the certificate expired", s.Link, s.LastError)
		}
	}
	cancel()
	<-done

	th.Use(good)
	u = newUplink()
	runCtx, cancel = context.WithCancel(ctx)
	done = make(chan struct{})
	go func() { defer close(done); u.Run(runCtx) }()
	waitDrained(t, e, 20, 10*time.Second)
	cancel()
	<-done
	if n := len(hubRecords(t, st, "s1")); n != 20 {
		t.Fatalf("hub holds %d records, want 20", n)
	}
}

// TestHubClientPinWinsOverCA: an edge enrolled with a pin keeps trusting
// by the pin only: a hub with a certificate that CA trust would accept but
// another key is refused as a pin mismatch.
func TestHubClientPinWinsOverCA(t *testing.T) {
	t.Parallel()
	root := certstest.NewCA(t, "Test city root")
	th := startTLSHub(t, openBoltHub(t, t.TempDir()), false)
	e := newEdge(t, nil)
	ctx := context.Background()
	if _, err := uplink.Enrol(ctx, e.DB, nil, th.URL, enrolToken(t, th.Store, "s1", th.Pin), e.Key, root.PEM()); err != nil {
		t.Fatal(err)
	}
	other := caHub(t, th.Store, root.Good(t, "127.0.0.1"), nil)
	resp, err := uplink.HubClient(e.DB, root.PEM()).Get(other.URL + "/healthz")
	if err == nil {
		resp.Body.Close()
	}
	var pm *uplink.PinMismatchError
	if !errors.As(err, &pm) || pm.Expected != th.Pin {
		t.Fatalf("CA-valid hub with another key than the pinned one: %v", err)
	}
}

// TestHubClientRefusesTLSBelow12: a hub that speaks only TLS 1.1 is
// refused by the edge's clients, trusted by CA or by pin.
func TestHubClientRefusesTLSBelow12(t *testing.T) {
	t.Parallel()
	root := certstest.NewCA(t, "Test city root")
	cert := root.Good(t, "127.0.0.1")
	old := caHub(t, openBoltHub(t, t.TempDir()), cert, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	e := newEdge(t, nil) // not enrolled: trust by CA
	for name, c := range map[string]*http.Client{"by CA": uplink.HubClient(e.DB, root.PEM())} {
		resp, err := c.Get(old.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%s: a TLS 1.1 hub was accepted", name)
		}
		if !strings.Contains(err.Error(), "protocol version") {
			t.Errorf("%s: error %q does not name the protocol version", name, err)
		}
	}
	// Pinned (enrolment's client, the same transport as HubClient's
	// pinned path): the handshake fails before any key is seen.
	_, err := uplink.Enrol(context.Background(), e.DB, nil, old.URL, wire.FormatEnrolToken("secret", certs.SPKIPin(cert.Leaf)), e.Key, nil)
	if err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("pinned enrolment with a TLS 1.1 hub: %v", err)
	}
}
