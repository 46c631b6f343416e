package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
)

// ErrPinMismatch is returned (wrapped) when a server's key is not the
// pinned one.
var ErrPinMismatch = errors.New("the server's key does not match the pinned key")

// ValidPin checks that pin has the form SPKIPin produces.
func ValidPin(pin string) error {
	b, err := base64.StdEncoding.DecodeString(pin)
	if err != nil || len(b) != sha256.Size {
		return fmt.Errorf("pin %q must be base64 of a SHA-256 (44 characters, as shown in the console's HTTPS panel)", pin)
	}
	return nil
}

// PinnedTLS is a client configuration that trusts exactly the server whose
// leaf carries the pinned public key, whatever issued it. That is safe
// without a CA: only the holder of the private key can complete the
// handshake, and it is what lets a self-signed edge or hub be trusted after
// one out-of-band exchange of the pin (pairing, enrolment, the console).
func PinnedTLS(pin string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain is not checked against roots; VerifyConnection checks
		// the key instead, on every handshake including resumed ones.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: no certificate", ErrPinMismatch)
			}
			if got := SPKIPin(cs.PeerCertificates[0]); got != pin {
				return fmt.Errorf("%w: got %s, pinned %s", ErrPinMismatch, got, pin)
			}
			return nil
		},
	}
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
