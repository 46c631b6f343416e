package certs

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/campusedge/campusedge/edge/fsutil"
)

// maxCityPEM bounds what the hub may hand back: a chain of a few
// certificates is a few KiB.
const maxCityPEM = 64 << 10

// CertificateRequest is a PKCS#10 request (DER) over the edge's TLS key for
// the names and addresses the edge serves now, for the city's CA to sign.
func (m *Manager) CertificateRequest() ([]byte, error) {
	n, err := m.cityWanted()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: m.cfg.Hostname, Organization: []string{"CampusEdge"}}, DNSNames: n.DNS}
	for _, ip := range n.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, m.key)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return der, nil
}

// UseCitySigned installs a certificate chain the city's CA signed for this
// edge: it must be for the edge's own key, verify up to rootPEM, and be valid
// now. It is kept in DATA/tls so it survives restarts.
func (m *Manager) UseCitySigned(chainPEM, rootPEM []byte) error {
	c, root, err := m.parseCity(chainPEM, rootPEM)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(m.cfg.Dir, "city-chain.pem"), chainPEM, 0o644); err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(m.cfg.Dir, "city-root.pem"), rootPEM, 0o644); err != nil {
		return err
	}
	m.mu.Lock()
	m.city, m.cityRoot = c, root
	m.mu.Unlock()
	m.log.Info("TLS certificate signed by the city CA installed", "issuer", c.Leaf.Issuer.CommonName, "not_after", c.Leaf.NotAfter.Format(time.DateOnly), "ips", fmt.Sprint(c.Leaf.IPAddresses))
	return nil
}

func (m *Manager) parseCity(chainPEM, rootPEM []byte) (*tls.Certificate, []byte, error) {
	if len(chainPEM) > maxCityPEM || len(rootPEM) > maxCityPEM {
		return nil, nil, errors.New("city certificate: chain or root over 64 KiB")
	}
	var chain [][]byte
	for rest := chainPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			chain = append(chain, b.Bytes)
		}
	}
	if len(chain) == 0 {
		return nil, nil, errors.New("city certificate: no certificate in the chain")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, nil, fmt.Errorf("city certificate: %w", err)
	}
	if !m.key.PublicKey.Equal(leaf.PublicKey) {
		return nil, nil, errors.New("city certificate is not for this edge's key")
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		return nil, nil, errors.New("city root: no certificate")
	}
	inter := x509.NewCertPool()
	for _, d := range chain[1:] {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, nil, fmt.Errorf("city chain: %w", err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: m.cfg.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, nil, fmt.Errorf("city certificate does not verify against the city root: %w", err)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: m.key, Leaf: leaf}, rootPEM, nil
}

// loadCity reads a city-signed chain kept from an earlier run.
func (m *Manager) loadCity() error {
	chain, err := os.ReadFile(filepath.Join(m.cfg.Dir, "city-chain.pem"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	root, err := os.ReadFile(filepath.Join(m.cfg.Dir, "city-root.pem"))
	if err != nil {
		return err
	}
	c, r, err := m.parseCity(chain, root)
	if err != nil {
		return err
	}
	m.city, m.cityRoot = c, r
	return nil
}

// cityWanted is what the city is asked to certify: the names and LAN
// addresses others reach the edge by. Loopback, "localhost" and a bare
// host name are left out: no city CA vouches for them (and cityhub's name
// policy refuses them), and the edge's own certificate keeps serving
// connections on them.
func (m *Manager) cityWanted() (names, error) {
	n, err := m.wanted()
	if err != nil {
		return names{}, err
	}
	var out names
	for _, d := range n.DNS {
		if strings.Contains(d, ".") {
			out.DNS = append(out.DNS, d)
		}
	}
	for _, ip := range n.IPs {
		if !ip.IsLoopback() {
			out.IPs = append(out.IPs, ip)
		}
	}
	return out, nil
}

// CityRenewalDue says whether to ask the city for a certificate: there is
// none yet, it has under a third of its life left, or the edge now has
// names or addresses it does not cover.
func (m *Manager) CityRenewalDue() bool {
	if m.cfg.OperatorCert != "" {
		return false // the operator's certificate wins; a city one would not be served
	}
	want, err := m.cityWanted()
	if err != nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.city == nil {
		return true
	}
	l := m.city.Leaf
	if m.cfg.Now().After(l.NotAfter.Add(-l.NotAfter.Sub(l.NotBefore) / 3)) {
		return true
	}
	for _, d := range want.DNS {
		if l.VerifyHostname(d) != nil {
			return true
		}
	}
	for _, ip := range want.IPs {
		if !hasIP(l, ip) {
			return true
		}
	}
	return false
}
