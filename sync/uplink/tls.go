package uplink

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/certs"
)

// PinMismatchError is a hub whose TLS key is not the one this edge pinned.
// Nothing is sent to such a hub: it is either the real hub after its key
// was changed, or something between the school and the city intercepting
// the connection.
type PinMismatchError struct {
	Hub       string // host:port as dialled
	Expected  string // the pin this edge holds
	Got       string // the pin of the key the server presented
	FromToken bool   // the expected pin came from the enrolment token
}

func (e *PinMismatchError) Error() string {
	what := "this edge's enrolment"
	if e.FromToken {
		what = "the enrolment token"
	}
	hub := "the hub"
	if e.Hub != "" {
		hub = "the hub at " + e.Hub
	}
	return fmt.Sprintf("%s presented TLS key pin %s but %s pins %s: refused. "+
		"If the city changed the hub's key on purpose, enrol this edge again with a new token (cityhub enrol-token CODE, then edged enrol -cloud URL -token TOKEN); "+
		"otherwise something between this school and the city is intercepting the connection", hub, e.Got, what, e.Expected)
}

// errNoPin is an https hub and an enrolment without a pin.
var errNoPin = errors.New("this edge holds no pin for the hub's TLS key (it enrolled over http:// or is not enrolled), so it cannot tell the hub from an impostor: " +
	"enrol it with a token from cityhub enrol-token, which carries the pin (edged enrol -cloud https://… -token SECRET~PIN)")

// pinVerifier checks the server's leaf key against a pin looked up at each
// handshake (a running edge may enrol, or re-enrol, at any time).
type pinVerifier struct {
	pin       func() (string, error)
	fromToken bool
}

func (v pinVerifier) check() func(tls.ConnectionState) error {
	return certs.PinCheck(func() (string, error) {
		want, err := v.pin()
		if err == nil && want == "" {
			err = errNoPin
		}
		return want, err
	}, func(cs tls.ConnectionState, want, got string) error {
		return &PinMismatchError{Hub: cs.ServerName, Expected: want, Got: got, FromToken: v.fromToken}
	})
}

// pinnedTransport is an HTTP transport that accepts a TLS server only by
// its key's pin: the hub's certificate may be self-signed, and a
// certificate from any CA with another key is refused. Plain http:// URLs
// (loopback tests, a hub behind the city's own tunnel) pass unchanged.
func pinnedTransport(v pinVerifier) *http.Transport {
	// The pin is the trust (certs.PinnedConfig), checked on every handshake.
	return hubTransport(certs.PinnedConfig(v.check()))
}

// hubTransport is the transport of every edge→hub client with tc as its
// TLS trust. Timeouts bound connecting and waiting for headers; bodies
// (large resources, firmware) are bounded per read by their callers.
func hubTransport(tc *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: controlHubSocket}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
		ForceAttemptHTTP2:     true,
		TLSClientConfig:       tc,
	}
}

// SetHubConnOptions sets on c, a TCP connection to the hub made by another
// dialer (a test's in a network namespace, say), the socket options the
// hub client's own dialer sets: see notSentLowat. Other connections are
// left alone.
func SetHubConnOptions(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	return controlHubSocket("tcp", "", rc)
}

// hubCAAdvice is what an edge's operator does about a hub certificate
// that CA verification refused.
func hubCAAdvice() certs.CAAdvice {
	return certs.CAAdvice{Peer: "the hub", Self: "this edge",
		Expired:   "Renew it at the hub (cityhub -tls-cert); if it is not expired, correct this edge's clock",
		WrongHost: "Check -cloud: it must name the hub as its certificate does",
		UnknownCA: "Give this edge the city's root with -cloud-ca FILE, or enrol with a token that carries the hub's pin (SECRET~PIN from cityhub enrol-token)",
	}
}

// caTransport trusts the hub by its chain to the system's roots plus
// cloudCA (the city's root, PEM; may be empty) and by the host name in
// the hub URL; a refused certificate comes back as a
// *certs.UntrustedError that says what to do.
func caTransport(cloudCA []byte) http.RoundTripper {
	return hubCAAdvice().Transport(hubTransport(certs.CAConfig(certs.RootsWith(cloudCA))))
}

// hubTrust picks, for each request, how the hub is trusted, from the
// enrolment as it is at that moment: by the pinned key when the
// enrolment holds a pin (unchanged from before CA trust existed), by CA
// for an https:// hub otherwise.
type hubTrust struct {
	db     *bolt.DB
	pinned *http.Transport
	ca     http.RoundTripper // caTransport
}

func (t *hubTrust) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" {
		return t.pinned.RoundTrip(r)
	}
	e, _, err := LoadEnrolment(t.db)
	if err != nil {
		if r.Body != nil {
			_ = r.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, fmt.Errorf("read this edge's enrolment for how to trust the hub: %w", err)
	}
	if e.HubPin != "" {
		return t.pinned.RoundTrip(r)
	}
	return t.ca.RoundTrip(r)
}

// CloseIdleConnections drops both kinds of connection, so none made under
// a previous enrolment is reused (http.Client.CloseIdleConnections).
func (t *hubTrust) CloseIdleConnections() {
	t.pinned.CloseIdleConnections()
	if c, ok := t.ca.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// HubClient is the one HTTP client for every edge→hub request (sync
// uplink and downlink, resource cache downloads, firmware and terminal
// images). Over https:// it trusts the hub the way this edge enrolled,
// read from db at each request, so an enrolment made while edged runs
// takes effect at once:
//   - enrolled with a pin (token SECRET~PIN): only the hub whose key has
//     that pin, whatever issued its certificate;
//   - otherwise (enrolled by CA, or with an old pinless enrolment): the
//     chain to the system's roots plus cloudCA (edged -cloud-ca, PEM; nil
//     for none) and the host name, so an expired certificate, one for
//     another host or from an unknown authority is refused with a
//     *certs.UntrustedError.
//
// http:// works as before. It has no overall timeout, as downloads can be
// long.
func HubClient(db *bolt.DB, cloudCA []byte) *http.Client {
	return &http.Client{Transport: &hubTrust{db: db, ca: caTransport(cloudCA), pinned: pinnedTransport(pinVerifier{pin: func() (string, error) {
		e, ok, err := LoadEnrolment(db)
		if err != nil {
			return "", fmt.Errorf("read this edge's enrolment for the hub pin: %w", err)
		}
		if !ok {
			return "", nil
		}
		return e.HubPin, nil
	}})}}
}

// tokenClient is the client enrolment uses: pinned to the token's pin.
func tokenClient(pin string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second,
		Transport: pinnedTransport(pinVerifier{pin: func() (string, error) { return pin, nil }, fromToken: true})}
}

// caClient is the client enrolment uses with a token without a pin and an
// https:// hub: trust by CA, as HubClient then does.
func caClient(cloudCA []byte) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: caTransport(cloudCA)}
}
