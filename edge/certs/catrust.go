package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// CAConfig is a client configuration that trusts a server by its chain to
// roots and by the host name the client asked for: the standard library's
// verification, TLS 1.2 at least. It is the mode for a city with a proper
// PKI, where a server's key may change at every renewal and a pin would
// break; unlike a pin it also refuses an expired certificate or one for
// another host.
func CAConfig(roots *x509.CertPool) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
}

// maxRootsFile bounds ReadRootsFile.
const maxRootsFile = 4 << 20

// ReadRootsFile reads the PEM file of CA certificates an operator gives
// (edged -cloud-ca, classterm -ca) and checks that it holds certificates
// and nothing else, so a wrong file fails at start with its name instead
// of as an unknown authority at the first handshake. The bytes go to
// RootsWith.
func ReadRootsFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	defer f.Close()
	// A bundle of every public root is ~250 KiB; the bound keeps a wrong
	// path (a device, a video) from being read whole.
	b, err := io.ReadAll(io.LimitReader(f, maxRootsFile+1))
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", path, err)
	}
	if len(b) > maxRootsFile {
		return nil, fmt.Errorf("CA file %s is larger than %d bytes: not a file of CA certificates", path, maxRootsFile)
	}
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("CA file %s holds a %q block: give only the CA certificate(s), never a key", path, blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return nil, fmt.Errorf("CA file %s: certificate %d: %w", path, n+1, err)
		}
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path)
	}
	return b, nil
}

// UntrustedReason is why CA verification refused a server certificate.
type UntrustedReason string

// The reasons an operator acts on differently.
const (
	Expired     UntrustedReason = "expired"
	NotYetValid UntrustedReason = "not_yet_valid"
	WrongHost   UntrustedReason = "wrong_host"
	UnknownCA   UntrustedReason = "unknown_ca"
	Invalid     UntrustedReason = "invalid" // any other verification failure
)

// UntrustedError is a server certificate refused by CA verification, in
// words for the operator; Err is the crypto/x509 error.
type UntrustedError struct {
	Reason UntrustedReason
	msg    string
	Err    error
}

func (e *UntrustedError) Error() string { return e.msg }
func (e *UntrustedError) Unwrap() error { return e.Err }

// CAAdvice is one client's words for a server certificate that CA
// verification refused. What is wrong is the same for every client; what
// to do is not (an edge names -cloud-ca and its enrolment token, a
// terminal names -ca and its pairing), so each client fills this in.
type CAAdvice struct {
	Peer      string // whose certificate: "the hub", "the edge"
	Self      string // who refuses it: "this edge", "this terminal"
	Expired   string // what to do about an expired certificate
	WrongHost string // … about a certificate for another host
	UnknownCA string // … about a certificate from an authority not trusted
}

// Explain returns err unchanged unless it is a failed CA verification of
// a server certificate (from tls, directly or wrapped); then it returns an
// *UntrustedError that says what is wrong with the certificate and what
// to do. now is when the handshake ran, to tell expired from not yet valid.
func (a CAAdvice) Explain(err error, now time.Time) error {
	if err == nil {
		return nil
	}
	var leaf *x509.Certificate
	cve := (*tls.CertificateVerificationError)(nil)
	if errors.As(err, &cve) && len(cve.UnverifiedCertificates) > 0 {
		leaf = cve.UnverifiedCertificates[0]
	}
	// crypto/x509 returns these as values.
	var (
		inv x509.CertificateInvalidError
		hn  x509.HostnameError
		ua  x509.UnknownAuthorityError
	)
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired && inv.Cert != nil:
		return a.expired(inv.Cert, leaf, now, err)
	case errors.As(err, &hn):
		return a.wrongHost(hn.Certificate, hn.Host, err)
	case errors.As(err, &ua):
		return a.unknownCA(ua.Cert, leaf, err)
	case leaf != nil: // another verification failure (usage, constraints)
		return &UntrustedError{Reason: Invalid, Err: err,
			msg: fmt.Sprintf("%s's certificate (for %s) failed verification: %v: refused", a.Peer, certNames(leaf), cve.Err)}
	}
	return err
}

func (a CAAdvice) expired(c, leaf *x509.Certificate, now time.Time, err error) error {
	what := a.Peer + "'s certificate"
	if leaf != nil && !leaf.Equal(c) {
		what = fmt.Sprintf("the certificate %q in %s's chain", c.Subject.CommonName, a.Peer)
	}
	if now.Before(c.NotBefore) {
		return &UntrustedError{Reason: NotYetValid, Err: err,
			msg: fmt.Sprintf("%s is not valid before %s, and %s's clock says %s: refused. Correct the clock that is wrong (most often %s's, after a power cut)",
				what, stamp(c.NotBefore), a.Self, stamp(now), a.Self)}
	}
	return &UntrustedError{Reason: Expired, Err: err,
		msg: fmt.Sprintf("%s expired on %s (%s's clock says %s): refused. %s", what, stamp(c.NotAfter), a.Self, stamp(now), a.Expired)}
}

func (a CAAdvice) wrongHost(c *x509.Certificate, host string, err error) error {
	return &UntrustedError{Reason: WrongHost, Err: err,
		msg: fmt.Sprintf("%s's certificate is for %s, not %s: refused. %s", a.Peer, certNames(c), host, a.WrongHost)}
}

func (a CAAdvice) unknownCA(c, leaf *x509.Certificate, err error) error {
	if leaf == nil {
		leaf = c
	}
	by := fmt.Sprintf("issued by %q", issuerName(c))
	if c != nil && string(c.RawIssuer) == string(c.RawSubject) {
		by = "self-signed"
	}
	return &UntrustedError{Reason: UnknownCA, Err: err,
		msg: fmt.Sprintf("%s's certificate (for %s, %s) is signed by an authority %s does not trust: refused. %s", a.Peer, certNames(leaf), by, a.Self, a.UnknownCA)}
}

// names lists what a certificate is for, as a host name check sees it.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return "no name"
	}
	var l []string
	l = append(l, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		l = append(l, ip.String())
	}
	if len(l) == 0 {
		// Clients stopped matching the common name years ago.
		return fmt.Sprintf("no host name (only the common name %q, which TLS clients ignore)", c.Subject.CommonName)
	}
	return strings.Join(l, ", ")
}

func issuerName(c *x509.Certificate) string {
	if c == nil {
		return "?"
	}
	if c.Issuer.CommonName != "" {
		return c.Issuer.CommonName
	}
	return c.Issuer.String()
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

// Transport is rt with each certificate refusal explained by a (see
// Explain), so every request through it, whoever makes it, carries the
// operator's words. It keeps rt's CloseIdleConnections.
func (a CAAdvice) Transport(rt *http.Transport) http.RoundTripper {
	return explaining{rt, a}
}

type explaining struct {
	*http.Transport
	a CAAdvice
}

func (t explaining) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.Transport.RoundTrip(r)
	return resp, t.a.Explain(err, time.Now())
}
