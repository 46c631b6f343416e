// Package certstest makes a small PKI for tests of clients that trust a
// server by CA: a root, intermediates, and leaves that are good, expired,
// for another host or from another root, served by a real TLS server on
// 127.0.0.1.
package certstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority: a root, or an intermediate under one.
type CA struct {
	Cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	chain [][]byte // DER of this CA and its parents up to (not including) the root
}

// NewCA is a root valid from an hour ago for a year.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	k := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: serial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	return &CA{Cert: create(t, tmpl, tmpl, k, k), key: k}
}

// Intermediate is a CA signed by ca, as a city CA under a national root.
func (ca *CA) Intermediate(t testing.TB, name string) *CA {
	t.Helper()
	k := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: serial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign}
	c := create(t, tmpl, ca.Cert, k, ca.key)
	return &CA{Cert: c, key: k, chain: append([][]byte{c.Raw}, ca.chain...)}
}

// PEM is the CA's certificate, as an operator gives it to -cloud-ca or -ca.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// Leaf is a server certificate for names (DNS names or IP addresses),
// valid from notBefore to notAfter, with the chain up to the root.
func (ca *CA) Leaf(t testing.TB, notBefore, notAfter time.Time, names ...string) *tls.Certificate {
	t.Helper()
	k := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: serial(t), Subject: pkix.Name{CommonName: "test server"},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	c := create(t, tmpl, ca.Cert, k, ca.key)
	return &tls.Certificate{Certificate: append([][]byte{c.Raw}, ca.chain...), PrivateKey: k, Leaf: c}
}

// Good is a leaf valid now, for a day.
func (ca *CA) Good(t testing.TB, names ...string) *tls.Certificate {
	return ca.Leaf(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), names...)
}

// Expired is a leaf that was valid for a month and ended yesterday.
func (ca *CA) Expired(t testing.TB, names ...string) *tls.Certificate {
	return ca.Leaf(t, time.Now().AddDate(0, -1, -1), time.Now().AddDate(0, 0, -1), names...)
}

// Server is a TLS server on 127.0.0.1 whose certificate can be swapped
// between handshakes, so one URL can present each case in turn.
type Server struct {
	*httptest.Server
	cert atomic.Pointer[tls.Certificate]
}

// Serve starts h over TLS with cert; cfg, if not nil, is the starting
// server configuration (e.g. MaxVersion), its certificate replaced.
func Serve(t testing.TB, h http.Handler, cert *tls.Certificate, cfg *tls.Config) *Server {
	t.Helper()
	s := &Server{Server: httptest.NewUnstartedServer(h)}
	s.cert.Store(cert)
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg = cfg.Clone()
	// Per handshake, the configuration StartTLS completed (protocols)
	// with the current certificate: GetCertificate alone is not asked
	// when the client sends no server name, as for 127.0.0.1.
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := s.TLS.Clone()
		c.GetConfigForClient = nil
		c.Certificates = []tls.Certificate{*s.cert.Load()}
		return c, nil
	}
	s.TLS = cfg
	// Handshakes the tests refuse on purpose are not test noise.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// Use makes later handshakes present cert.
func (s *Server) Use(cert *tls.Certificate) { s.cert.Store(cert) }

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func create(t testing.TB, tmpl, parent *x509.Certificate, k *ecdsa.PrivateKey, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
