package uplink

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
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
// Timeouts bound connecting and waiting for headers; bodies (large
// resources, firmware) are bounded per read by their callers.
func pinnedTransport(v pinVerifier) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
		ForceAttemptHTTP2:     true,
		// The pin is the trust (certs.PinnedConfig), checked on every handshake.
		TLSClientConfig: certs.PinnedConfig(v.check()),
	}
}

// HubClient is the one HTTP client for every edge→hub request (sync
// uplink and downlink, resource cache downloads, firmware and terminal
// images): over https:// it accepts only the hub whose key matches the pin
// stored with this edge's enrolment in db, read at each new connection, so
// an enrolment made while edged runs takes effect at once. Before
// enrolment an https:// hub is refused (errNoPin); http:// works as
// before. It has no overall timeout, as downloads can be long.
func HubClient(db *bolt.DB) *http.Client {
	return &http.Client{Transport: pinnedTransport(pinVerifier{pin: func() (string, error) {
		e, ok, err := LoadEnrolment(db)
		if err != nil {
			return "", fmt.Errorf("read this edge's enrolment for the hub pin: %w", err)
		}
		if !ok {
			return "", nil
		}
		return e.HubPin, nil
	}})}
}

// tokenClient is the client enrolment uses: pinned to the token's pin.
func tokenClient(pin string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second,
		Transport: pinnedTransport(pinVerifier{pin: func() (string, error) { return pin, nil }, fromToken: true})}
}
