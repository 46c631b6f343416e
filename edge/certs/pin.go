package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
)

// pinLen is the length of an SPKIPin: base64 (standard, padded) of 32 bytes.
const pinLen = 44

// PinMismatchError is a TLS server whose key is not the pinned one.
type PinMismatchError struct{ Want, Got string }

func (e *PinMismatchError) Error() string {
	return fmt.Sprintf("the server's key does not match the pinned key (pinned %s, got %s)", e.Want, e.Got)
}

// ValidPin checks that pin has the form SPKIPin produces.
func ValidPin(pin string) error {
	if len(pin) == pinLen {
		if b, err := base64.StdEncoding.Strict().DecodeString(pin); err == nil && len(b) == sha256.Size {
			return nil
		}
	}
	return fmt.Errorf("pin %q must be base64 of a SHA-256 (44 characters, as the console's HTTPS panel or `cityhub tls-pin` shows it)", pin)
}

// PinCheck is a tls.Config.VerifyConnection that requires the server's leaf
// key to have the pin want returns, read at each handshake (an edge may
// enrol or pair while it runs). mismatch builds the error for another key
// (cs names the server),
// in words for the operator of the caller; nil gives a *PinMismatchError.
func PinCheck(want func() (string, error), mismatch func(cs tls.ConnectionState, want, got string) error) func(tls.ConnectionState) error {
	if mismatch == nil {
		mismatch = func(_ tls.ConnectionState, w, g string) error { return &PinMismatchError{Want: w, Got: g} }
	}
	return func(cs tls.ConnectionState) error {
		w, err := want()
		if err != nil {
			return err
		}
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("the server presented no certificate")
		}
		if got := SPKIPin(cs.PeerCertificates[0]); got != w {
			return mismatch(cs, w, got)
		}
		return nil
	}
}

// PinnedConfig is a client configuration that trusts exactly the server
// whose key passes check, whatever issued its certificate. That is safe
// without a CA: the handshake proves the server holds the private key of
// the leaf it presented, and check requires that key to be the one learnt
// out of band (pairing, enrolment, the console). It is what lets a
// self-signed edge or hub be trusted; the chain and host name checks that
// InsecureSkipVerify turns off could not be done for them anyway.
// VerifyConnection runs on every handshake, resumed ones included.
func PinnedConfig(check func(tls.ConnectionState) error) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true, VerifyConnection: check}
}

// PinnedTLS trusts exactly the server whose key has pin.
func PinnedTLS(pin string) *tls.Config {
	return PinnedConfig(PinCheck(func() (string, error) { return pin, nil }, nil))
}

// RootsWith is the system's roots plus extra PEM certificates (the edge's
// own CA, or the city root), for clients that verify by CA.
func RootsWith(extraPEM ...[]byte) *x509.CertPool {
	p, err := x509.SystemCertPool()
	if err != nil || p == nil {
		p = x509.NewCertPool()
	}
	for _, b := range extraPEM {
		p.AppendCertsFromPEM(b)
	}
	return p
}
