package hubtls

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/sync/hub"
)

// File names of the self-made city CA in the data dir.
const (
	CAKeyFile  = "city-ca.key"
	CACertFile = "city-ca.pem"
)

// EdgeCertLife is how long a city-signed edge certificate is valid. Edges
// renew when a third is left, so a school offline for a month still has a
// valid certificate; short enough that a revoked edge's last certificate
// soon ends without any revocation list.
const EdgeCertLife = 90 * 24 * time.Hour

// caLife is the validity of a self-made city CA: devices trust it once.
const caLife = 10 * 365 * 24 * time.Hour

// DefaultNets are the address ranges a city CA signs by default: private,
// carrier-grade NAT and IPv6 unique local ranges, where school LANs live.
// A certificate for a public address would let a school's key vouch for a
// machine outside the city network.
var DefaultNets = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"}

// Policy is which names the city CA signs beyond wire.DecodeCertRequest's
// shape rules.
type Policy struct {
	// Domains: DNS names must equal one of these or end in "."+one. "local"
	// (mDNS names) is the usual first entry.
	Domains []string
	// Nets: IP addresses must lie in one of these.
	Nets []netip.Prefix
}

// DefaultPolicy signs .local names and addresses in DefaultNets.
func DefaultPolicy() Policy {
	p := Policy{Domains: []string{"local"}}
	for _, n := range DefaultNets {
		p.Nets = append(p.Nets, netip.MustParsePrefix(n))
	}
	return p
}

// Check returns an error wrapping hub.ErrNameRefused for the first name
// the policy does not allow.
func (p Policy) Check(dns []string, ips []net.IP) error {
	for _, d := range dns {
		d = strings.ToLower(d)
		ok := false
		for _, dom := range p.Domains {
			dom = strings.ToLower(strings.Trim(dom, "."))
			if d == dom || strings.HasSuffix(d, "."+dom) {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("%w: DNS name %q is outside the city's domains %v (cityhub -city-ca-domains)", hub.ErrNameRefused, d, p.Domains)
		}
	}
	for _, ip := range ips {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			return fmt.Errorf("%w: bad IP address", hub.ErrNameRefused)
		}
		a = a.Unmap()
		ok = false
		for _, n := range p.Nets {
			if n.Contains(a) {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("%w: IP address %s is outside the city's school networks %v (cityhub -city-ca-nets)", hub.ErrNameRefused, a, p.Nets)
		}
	}
	return nil
}

// CA is the city CA: it signs edge certificates (hub.Issuer).
type CA struct {
	cert   *x509.Certificate // the signing CA
	key    crypto.Signer
	chain  []*x509.Certificate // intermediates between cert and root, cert first; empty when cert is the root
	root   *x509.Certificate
	policy Policy
	now    func() time.Time
}

// Root is the certificate devices trust.
func (c *CA) Root() *x509.Certificate { return c.root }

// LoadOrCreateCA returns the city CA kept in dir, making it (ECDSA P-256,
// key mode 0600, valid ten years) on first use.
func LoadOrCreateCA(dir, name string, policy Policy) (*CA, bool, error) {
	keyPath, certPath := filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile)
	if _, err := os.Stat(certPath); err == nil {
		ca, err := LoadCA(certPath, keyPath, policy)
		return ca, false, err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	key, err := loadOrCreateKey(keyPath)
	if err != nil {
		return nil, false, err
	}
	now := time.Now()
	der, _, err := certs.NewSelfSignedCA(key, name, now, caLife)
	if err != nil {
		return nil, false, fmt.Errorf("make the city CA: %w", err)
	}
	if err := fsutil.WriteFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, false, err
	}
	ca, err := LoadCA(certPath, keyPath, policy)
	return ca, true, err
}

// LoadCA loads an operator's CA: certFile holds the signing CA certificate
// first, then any intermediates above it, and the city's root last (a
// signing CA that is itself the root is alone in the file); keyFile is the
// signing CA's private key. The chain is verified here, so a wrong order
// or a missing root stops start-up rather than every edge.
func LoadCA(certFile, keyFile string, policy Policy) (*CA, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("city CA certificate: %w", err)
	}
	var found []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("city CA certificate %s: %w", certFile, err)
		}
		found = append(found, c)
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("city CA certificate %s holds no PEM CERTIFICATE", certFile)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("city CA key: %w", err)
	}
	k, err := certs.ParsePrivateKey(kb)
	if err != nil {
		return nil, fmt.Errorf("city CA key %s: %w", keyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("city CA key %s cannot sign", keyFile)
	}
	type pub interface{ Equal(crypto.PublicKey) bool }
	if p, ok := signer.Public().(pub); !ok || !p.Equal(found[0].PublicKey) {
		return nil, fmt.Errorf("city CA key %s does not belong to the first certificate in %s", keyFile, certFile)
	}
	if !found[0].IsCA || found[0].KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("the first certificate in %s is not a CA that may sign certificates", certFile)
	}
	root := found[len(found)-1]
	if !bytes.Equal(root.RawIssuer, root.RawSubject) || root.CheckSignatureFrom(root) != nil {
		return nil, fmt.Errorf("the last certificate in %s must be the city's self-signed root (file order: signing CA, intermediates, root)", certFile)
	}
	ca := &CA{cert: found[0], key: signer, root: root, policy: policy, now: time.Now}
	if len(found) > 1 {
		ca.chain = found[:len(found)-1]
	}
	if len(found) > 1 {
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(root)
		for _, c := range found[1 : len(found)-1] {
			inter.AddCert(c)
		}
		if _, err := found[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, fmt.Errorf("city CA chain in %s does not verify up to its root: %w", certFile, err)
		}
	}
	return ca, nil
}

// Issue signs csr for edge e (hub.Issuer): ServerAuth, EdgeCertLife, the
// CSR's names. The CSR was checked by wire.DecodeCertRequest; the policy
// is checked here.
func (c *CA) Issue(_ context.Context, csr *x509.CertificateRequest, e hub.Edge) (chainPEM, rootPEM []byte, err error) {
	if err := c.policy.Check(csr.DNSNames, csr.IPAddresses); err != nil {
		return nil, nil, err
	}
	now := c.now()
	notAfter := now.Add(EdgeCertLife)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter // never outlive the CA
	}
	cn := e.ID
	if len(csr.DNSNames) > 0 {
		cn = csr.DNSNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: certs.Serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"CampusEdge school " + e.School}, SerialNumber: e.ID},
		NotBefore:    now.Add(-time.Hour), // school clocks drift
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     csr.DNSNames,
		IPAddresses:  csr.IPAddresses,
	}
	if _, isRSA := csr.PublicKey.(*rsa.PublicKey); isRSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, csr.PublicKey, c.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign edge certificate: %w", err)
	}
	var chain bytes.Buffer
	_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, ic := range c.chain {
		_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: ic.Raw})
	}
	return chain.Bytes(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.root.Raw}), nil
}
