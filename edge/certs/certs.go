// Package certs gives the edge a TLS certificate that browsers on the school
// LAN accept, with no internet: cameras and microphones work only on secure
// pages, and a LAN address over plain HTTP is not one.
//
// Three sources, in the order a school meets them, and the manager serves
// the best one it has:
//
//  1. the edge's own CA (made on first start, key 0600 in DATA/tls), which
//     signs a leaf for every current LAN address, the host's names and
//     configured names; a new leaf is issued when an address appears (DHCP),
//     without a restart, even for the very connection that arrives on it;
//  2. a certificate signed by the city's CA through cityhub (UseCitySigned),
//     so city-managed devices trust one root for every school;
//  3. an operator's certificate and key files, reloaded when they change.
//
// The edge's own TLS key (DATA/tls/key.pem) is the same for sources 1 and 2
// and survives every re-issue, so a terminal that pinned it at pairing keeps
// trusting the edge across address changes and renewals.
package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/campusedge/campusedge/edge/fsutil"
)

// Sources of the certificate being served, as Status reports them.
const (
	SourceEdgeCA   = "edge-ca"
	SourceCity     = "city"
	SourceOperator = "operator"
)

// Lifetimes. The edge CA outlives any device; leaves are short enough that
// a stolen one ages out, long enough that an edge offline for a term keeps
// working (they are renewed well before the end, see renewBefore).
const (
	caLifetime   = 20 * 365 * 24 * time.Hour
	leafLifetime = 397 * 24 * time.Hour
	renewBefore  = 30 * 24 * time.Hour
	// operatorCheck is how often the operator's files are stat'ed for a
	// change: often enough for a renewal cron job, rarely enough to be free.
	operatorCheck = 2 * time.Second
)

// Config says where the manager keeps its files and what it certifies.
type Config struct {
	// Dir holds ca.pem, ca-key.pem, key.pem and the city's certificate.
	Dir string
	// Names are extra DNS names or IP addresses to certify (-tls-names).
	Names []string
	// OperatorCert and OperatorKey are the operator's PEM files; when both
	// are set they are served instead of the edge's own certificates.
	OperatorCert, OperatorKey string
	// Addrs lists the host's addresses; nil means every interface address.
	Addrs func() ([]netip.Addr, error)
	// Hostname is the host's name; empty means os.Hostname.
	Hostname string
	// Poll is how often addresses and expiry are checked; 0 means 10 s.
	Poll   time.Duration
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Manager issues, loads and serves the edge's TLS certificate.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	key    *ecdsa.PrivateKey // the edge's TLS key (sources 1 and 2)
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPEM  []byte

	mu       sync.Mutex
	own      *tls.Certificate // leaf from the edge CA
	ownNames names
	city     *tls.Certificate // leaf from the city CA, if any
	cityRoot []byte           // PEM
	operator *tls.Certificate
	opStamp  string // mtimes and sizes of the operator's files
	opErr    error  // why the operator's files cannot be served
	opNext   time.Time
}

// names is what a leaf certifies.
type names struct {
	DNS []string
	IPs []netip.Addr
}

func (n names) covers(o names) bool {
	for _, d := range o.DNS {
		if !slices.Contains(n.DNS, d) {
			return false
		}
	}
	for _, ip := range o.IPs {
		if !slices.Contains(n.IPs, ip) {
			return false
		}
	}
	return true
}

func (n names) hasIP(ip netip.Addr) bool { return slices.Contains(n.IPs, ip.Unmap().WithZone("")) }

// New loads the manager's state from cfg.Dir, creating the edge CA and key
// on first start, and issues a leaf for the current addresses.
func New(cfg Config) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 10 * time.Second
	}
	if cfg.Addrs == nil {
		cfg.Addrs = InterfaceAddrs
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if (cfg.OperatorCert == "") != (cfg.OperatorKey == "") {
		return nil, errors.New("TLS: give both -tls-cert and -tls-key, or neither")
	}
	for _, n := range cfg.Names {
		if err := validName(n); err != nil {
			return nil, fmt.Errorf("TLS name %q: %w", n, err)
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create TLS dir %s: %w", cfg.Dir, err)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger}
	var err error
	if m.key, err = LoadOrCreateKey(filepath.Join(cfg.Dir, "key.pem")); err != nil {
		return nil, err
	}
	if err := m.loadOrCreateCA(); err != nil {
		return nil, err
	}
	if err := m.loadCity(); err != nil {
		m.log.Warn("city-signed certificate unusable; serving the edge's own until cityhub signs a new one", "err", err)
	}
	if cfg.OperatorCert != "" {
		if err := m.reloadOperator(true); err != nil {
			return nil, err
		}
	}
	if _, err := m.refresh(); err != nil {
		return nil, err
	}
	return m, nil
}

// validName accepts a DNS name or an IP address, never a wildcard.
func validName(n string) error {
	if _, err := netip.ParseAddr(n); err == nil {
		return nil
	}
	if n == "" || len(n) > 253 || strings.ContainsAny(n, "*/ :") {
		return errors.New("must be a host name or an IP address (no wildcards)")
	}
	return nil
}

// InterfaceAddrs lists the host's unicast addresses that a client on the
// LAN could use, plus loopback. Link-local IPv6 is left out: an address with
// a zone cannot be certified and browsers do not use it for pages.
func InterfaceAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range as {
		p, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(p.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() {
			continue
		}
		out = append(out, ip)
	}
	return out, nil
}

// wanted is what the edge's own leaf must certify now.
func (m *Manager) wanted() (names, error) {
	addrs, err := m.cfg.Addrs()
	if err != nil {
		return names{}, err
	}
	n := names{DNS: []string{"localhost"}, IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}}
	if h := strings.TrimSuffix(m.cfg.Hostname, "."); h != "" {
		n.DNS = append(n.DNS, h)
		if !strings.HasSuffix(h, ".local") {
			n.DNS = append(n.DNS, h+".local") // the name DNS-SD answers for
		}
	}
	for _, x := range m.cfg.Names {
		if ip, err := netip.ParseAddr(x); err == nil {
			n.IPs = append(n.IPs, ip.Unmap())
		} else {
			n.DNS = append(n.DNS, strings.ToLower(x))
		}
	}
	for _, a := range addrs {
		n.IPs = append(n.IPs, a.Unmap().WithZone(""))
	}
	slices.Sort(n.DNS)
	n.DNS = slices.Compact(n.DNS)
	slices.SortFunc(n.IPs, func(a, b netip.Addr) int { return a.Compare(b) })
	n.IPs = slices.Compact(n.IPs)
	return n, nil
}

// refresh issues a new own leaf if the addresses or names changed or the
// leaf is due for renewal; it reports whether it did.
func (m *Manager) refresh() (bool, error) {
	want, err := m.wanted()
	if err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.own != nil && m.ownNames.covers(want) && m.cfg.Now().Add(renewBefore).Before(m.own.Leaf.NotAfter) {
		return false, nil
	}
	return true, m.issueLocked(want)
}

func (m *Manager) issueLocked(n names) error {
	now := m.cfg.Now()
	tmpl := &x509.Certificate{
		SerialNumber: Serial(),
		Subject:      pkix.Name{CommonName: m.cfg.Hostname, Organization: []string{"CampusEdge"}},
		NotBefore:    now.Add(-time.Hour), // school clocks drift
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     n.DNS,
	}
	if tmpl.Subject.CommonName == "" {
		tmpl.Subject.CommonName = "campusedge"
	}
	for _, ip := range n.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.caCert, &m.key.PublicKey, m.caKey)
	if err != nil {
		return fmt.Errorf("issue TLS certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("parse issued certificate: %w", err)
	}
	m.own = &tls.Certificate{Certificate: [][]byte{der, m.caCert.Raw}, PrivateKey: m.key, Leaf: leaf}
	m.ownNames = n
	m.log.Info("TLS certificate issued by the edge CA", "ips", fmt.Sprint(n.IPs), "names", strings.Join(n.DNS, ","), "not_after", leaf.NotAfter.Format(time.DateOnly))
	return nil
}

// Run re-issues the edge's leaf when addresses change or it nears expiry,
// until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := m.refresh(); err != nil {
			m.log.Warn("TLS certificate refresh failed; the current one stays in use", "err", err)
		}
	}
}

// TLSConfig is the server configuration: TLS 1.2 or newer, HTTP/2 for
// pages, and the certificate chosen per connection.
func (m *Manager) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: m.getCertificate,
	}
}

// getCertificate picks the certificate for one handshake. A connection on an
// address no leaf covers yet (a DHCP change the poll has not seen) gets a
// new leaf at once, so the page that arrives first already verifies.
func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if m.cfg.OperatorCert != "" {
		if err := m.reloadOperator(false); err != nil {
			m.log.Warn("operator certificate reload failed; serving the previous one", "err", err)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.operator, nil
	}
	var local netip.Addr
	if hello.Conn != nil {
		if ap, err := netip.ParseAddrPort(hello.Conn.LocalAddr().String()); err == nil {
			local = ap.Addr().Unmap().WithZone("")
		}
	}
	m.mu.Lock()
	if m.city != nil && (!local.IsValid() || hasIP(m.city.Leaf, local)) && m.cfg.Now().Before(m.city.Leaf.NotAfter) {
		defer m.mu.Unlock()
		return m.city, nil
	}
	covered := !local.IsValid() || local.IsLinkLocalUnicast() || m.ownNames.hasIP(local)
	m.mu.Unlock()
	if !covered {
		if _, err := m.refresh(); err != nil {
			m.log.Warn("TLS certificate for a new address failed", "addr", local, "err", err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.own, nil
}

func hasIP(c *x509.Certificate, ip netip.Addr) bool {
	for _, x := range c.IPAddresses {
		if a, ok := netip.AddrFromSlice(x); ok && a.Unmap() == ip {
			return true
		}
	}
	return false
}

// Status is what the console shows about the certificate in use.
type Status struct {
	Source string `json:"source"` // edge-ca, city or operator
	// Subject and Issuer are the served leaf's common names.
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	// Fingerprint is the SHA-256 of the leaf (hex, colon-separated, as
	// browsers show it); Pin is base64 SHA-256 of its public key, the form
	// --ignore-certificate-errors-spki-list and terminals use.
	Fingerprint string   `json:"fingerprint_sha256"`
	Pin         string   `json:"spki_pin"`
	DNSNames    []string `json:"dns_names"`
	IPs         []string `json:"ips"`
	// CAFingerprint is the SHA-256 of the root to trust (CAPEM), to check
	// after downloading it; empty with an operator certificate.
	CAFingerprint string `json:"ca_fingerprint_sha256,omitempty"`
	// Problem says what is wrong, e.g. an operator file that cannot load.
	Problem string `json:"problem,omitempty"`
}

// Status describes the certificate served to a client on the edge's
// addresses (the city's when it covers them, else the edge CA's).
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, src := m.own, SourceEdgeCA
	switch {
	case m.operator != nil:
		c, src = m.operator, SourceOperator
	case m.city != nil && m.cfg.Now().Before(m.city.Leaf.NotAfter) && m.city.Leaf.VerifyHostname(firstIP(m.ownNames)) == nil:
		c, src = m.city, SourceCity
	}
	s := Status{Source: src, Subject: c.Leaf.Subject.CommonName, Issuer: c.Leaf.Issuer.CommonName, NotAfter: c.Leaf.NotAfter,
		Fingerprint: Fingerprint(c.Leaf.Raw), Pin: SPKIPin(c.Leaf), DNSNames: c.Leaf.DNSNames}
	for _, ip := range c.Leaf.IPAddresses {
		s.IPs = append(s.IPs, ip.String())
	}
	if root := m.rootPEMLocked(); root != nil {
		if b, _ := pem.Decode(root); b != nil {
			s.CAFingerprint = Fingerprint(b.Bytes)
		}
	}
	if m.opErr != nil {
		s.Problem = m.opErr.Error()
	}
	return s
}

// firstIP is a non-loopback address the own leaf covers, to judge whether
// the city's certificate fits the LAN; loopback if there is none.
func firstIP(n names) string {
	for _, ip := range n.IPs {
		if !ip.IsLoopback() {
			return ip.String()
		}
	}
	return "127.0.0.1"
}

// CAPEM is the root certificate devices should trust: the city's root when
// the city signed the edge's certificate, else the edge's own CA. It is nil
// with an operator certificate (trust its issuer instead).
func (m *Manager) CAPEM() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rootPEMLocked()
}

func (m *Manager) rootPEMLocked() []byte {
	switch {
	case m.operator != nil:
		return nil
	case m.city != nil && m.cityRoot != nil:
		return m.cityRoot
	}
	return m.caPEM
}

// EdgeCAPEM is the edge's own CA certificate, whatever is served.
func (m *Manager) EdgeCAPEM() []byte { return bytes.Clone(m.caPEM) }

// Pin is the SPKI pin of the certificate being served on the LAN.
func (m *Manager) Pin() string { return m.Status().Pin }

// SPKIPin is base64(SHA-256(SubjectPublicKeyInfo)), Chromium's
// --ignore-certificate-errors-spki-list format.
func SPKIPin(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// Fingerprint is the SHA-256 of DER bytes as colon-separated hex.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

func (m *Manager) loadOrCreateCA() error {
	certPath, keyPath := filepath.Join(m.cfg.Dir, "ca.pem"), filepath.Join(m.cfg.Dir, "ca-key.pem")
	key, err := LoadOrCreateKey(keyPath)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(certPath)
	if err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return fmt.Errorf("edge CA %s is not PEM", certPath)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return fmt.Errorf("edge CA %s: %w", certPath, err)
		}
		if !c.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
			return fmt.Errorf("edge CA %s does not match %s; restore the pair from a backup", certPath, keyPath)
		}
		m.caCert, m.caKey, m.caPEM = c, key, b
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read edge CA %s: %w", certPath, err)
	}
	now := m.cfg.Now()
	host := m.cfg.Hostname
	if host == "" {
		host = "edge"
	}
	der, c, err := NewSelfSignedCA(key, "CampusEdge CA "+host, now, caLifetime)
	if err != nil {
		return fmt.Errorf("create edge CA: %w", err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := fsutil.WriteFileAtomic(certPath, p, 0o644); err != nil {
		return err
	}
	m.caCert, m.caKey, m.caPEM = c, key, p
	m.log.Info("edge CA created; devices that trust it accept this edge's pages", "file", certPath, "fingerprint", Fingerprint(der))
	return nil
}
