package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/netnstest"
)

// serve runs a TLS server with m's configuration on addr and answers each
// connection's handshake; it returns the bound address.
func serve(t *testing.T, m *Manager, addr string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", addr, m.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = c.Read(make([]byte, 1))
			}()
		}
	}()
	return ln.Addr().String()
}

// dial connects as a browser trusting only roots would, naming host.
func dial(addr, host string, roots *x509.CertPool, opts ...func(*tls.Config)) (*tls.ConnectionState, error) {
	cfg := &tls.Config{RootCAs: roots, ServerName: host}
	for _, o := range opts {
		o(cfg)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st := c.ConnectionState()
	return &st, nil
}

func pool(t *testing.T, pemBytes []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pemBytes) {
		t.Fatal("no certificate in PEM")
	}
	return p
}

// addrs is a changeable list of interface addresses, as DHCP changes them.
type addrs struct {
	mu sync.Mutex
	l  []netip.Addr
}

func (a *addrs) get() ([]netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]netip.Addr(nil), a.l...), nil
}

func (a *addrs) set(l ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.l = nil
	for _, s := range l {
		a.l = append(a.l, netip.MustParseAddr(s))
	}
}

func TestEdgeCAServesAVerifiableLeafAndKeepsItsKey(t *testing.T) {
	dir := t.TempDir()
	as := &addrs{}
	as.set("10.77.0.1")
	m, err := New(Config{Dir: dir, Addrs: as.get, Hostname: "edge-kbs", Names: []string{"edge.kbs.school.example"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"key.pem", "ca-key.pem"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v, want 0600", f, err, fi.Mode())
		}
	}
	st := m.Status()
	if st.Source != SourceEdgeCA || !strings.Contains(strings.Join(st.IPs, ","), "10.77.0.1") || st.Pin == "" {
		t.Fatalf("status %+v", st)
	}
	for _, want := range []string{"edge-kbs", "edge-kbs.local", "edge.kbs.school.example", "localhost"} {
		if !strings.Contains(strings.Join(st.DNSNames, ","), want) {
			t.Errorf("leaf names %v lack %s", st.DNSNames, want)
		}
	}
	addr := serve(t, m, "127.0.0.1:0")
	roots := pool(t, m.CAPEM())
	cs, err := dial(addr, "127.0.0.1", roots)
	if err != nil {
		t.Fatalf("a client trusting the edge CA: %v", err)
	}
	if got := SPKIPin(cs.PeerCertificates[0]); got != st.Pin {
		t.Fatalf("served pin %s, status says %s", got, st.Pin)
	}
	if cs.NegotiatedProtocol != "" && cs.NegotiatedProtocol != "h2" {
		t.Fatalf("ALPN %q", cs.NegotiatedProtocol)
	}
	// Refused, with a clear error: a client that trusts another CA, a name
	// the certificate does not carry, and anything below TLS 1.2.
	other := newTestCA(t, "Some other CA")
	if _, err := dial(addr, "127.0.0.1", pool(t, other.pem)); err == nil || !errors.As(err, new(x509.UnknownAuthorityError)) {
		t.Fatalf("unknown CA: %v", err)
	}
	if _, err := dial(addr, "wrong.example", roots); err == nil || !errors.As(err, new(x509.HostnameError)) {
		t.Fatalf("wrong host: %v", err)
	}
	if _, err := dial(addr, "127.0.0.1", roots, func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }); err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("TLS 1.1 accepted or odd error: %v", err)
	}

	// A restart keeps the CA and the key, so devices that trusted the edge
	// and terminals that pinned it keep working.
	m2, err := New(Config{Dir: dir, Addrs: as.get, Hostname: "edge-kbs"})
	if err != nil {
		t.Fatal(err)
	}
	if m2.Pin() != st.Pin || string(m2.CAPEM()) != string(m.CAPEM()) {
		t.Fatal("restart changed the key or the CA")
	}
}

func TestLeafReissuedWhenAddressAppears(t *testing.T) {
	as := &addrs{}
	as.set("10.77.0.1")
	m, err := New(Config{Dir: t.TempDir(), Addrs: as.get, Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	pin := m.Pin()
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	defer func() { cancel(); <-done }()
	go func() { defer close(done); m.Run(ctx) }()
	as.set("10.77.0.1", "10.88.0.5") // DHCP hands out a second address
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(strings.Join(m.Status().IPs, ","), "10.88.0.5") {
		if time.Now().After(deadline) {
			t.Fatalf("leaf not re-issued for 10.88.0.5: %v", m.Status().IPs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m.Pin() != pin {
		t.Fatal("re-issue changed the key: pinned terminals would stop trusting the edge")
	}
}

// TestLeafReissuedForAddressAddedToInterface adds a real address to an
// interface of a test namespace while the server runs, and connects to it
// at once (before any poll): the handshake that arrives on the new address
// already gets a leaf for it.
func TestLeafReissuedForAddressAddedToInterface(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	if err := netnstest.AddAddr("lo", "10.231.0.1/32"); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Dir: t.TempDir(), Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.Join(m.Status().IPs, ","), "10.231.0.9") {
		t.Fatal("address certified before it exists")
	}
	addr := serve(t, m, "0.0.0.0:0")
	_, port, _ := net.SplitHostPort(addr)
	roots := pool(t, m.CAPEM())
	if _, err := dial("10.231.0.1:"+port, "10.231.0.1", roots); err != nil {
		t.Fatalf("existing LAN address: %v", err)
	}
	if err := netnstest.AddAddr("lo", "10.231.0.9/32"); err != nil {
		t.Fatal(err)
	}
	if _, err := dial("10.231.0.9:"+port, "10.231.0.9", roots); err != nil {
		t.Fatalf("address added while serving: %v", err)
	}
	if _, err := dial("10.231.0.1:"+port, "10.231.0.1", roots); err != nil {
		t.Fatalf("the first address after the re-issue: %v", err)
	}
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: Serial(), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return testCA{c, k, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// sign plays cityhub: it signs a CSR for the names it carries.
func (ca testCA) sign(t *testing.T, csrDER []byte, notAfter time.Time) []byte {
	t.Helper()
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("CSR: %v", err)
	}
	tmpl := &x509.Certificate{SerialNumber: Serial(), Subject: csr.Subject, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		DNSNames: csr.DNSNames, IPAddresses: csr.IPAddresses, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestCitySignedCertificateVerifiesWithOnlyTheCityRoot runs in a test
// namespace with a LAN address, as the edge would be on a school LAN: a
// device trusting only the city root verifies the edge there, while
// loopback (which no city CA certifies) keeps the edge's own certificate.
func TestCitySignedCertificateVerifiesWithOnlyTheCityRoot(t *testing.T) {
	if !netnstest.Isolate(t) {
		return
	}
	if err := netnstest.AddAddr("lo", "10.231.0.1/32"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	as := &addrs{}
	as.set("10.231.0.1")
	m, err := New(Config{Dir: dir, Addrs: as.get, Hostname: "edge-dx"})
	if err != nil {
		t.Fatal(err)
	}
	if !m.CityRenewalDue() {
		t.Fatal("no city certificate yet, renewal not due")
	}
	city := newTestCA(t, "Dingxi City Education CA")
	csr, err := m.CertificateRequest()
	if err != nil {
		t.Fatal(err)
	}
	// The request names what the city can vouch for: the LAN address and
	// the .local name, not loopback, localhost or the bare host name.
	req, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(req.IPAddresses) != "[10.231.0.1]" || strings.Join(req.DNSNames, ",") != "edge-dx.local" {
		t.Fatalf("CSR names %v %v", req.IPAddresses, req.DNSNames)
	}
	// A chain for another key, or one that does not verify, is refused.
	stranger := newTestCA(t, "stranger")
	if err := m.UseCitySigned(stranger.pem, city.pem); err == nil {
		t.Fatal("a chain for another key was installed")
	}
	if err := m.UseCitySigned(city.sign(t, csr, time.Now().Add(20*time.Hour)), stranger.pem); err == nil {
		t.Fatal("a chain that does not verify to the given root was installed")
	}
	if err := m.UseCitySigned(city.sign(t, csr, time.Now().Add(20*time.Hour)), city.pem); err != nil {
		t.Fatal(err)
	}
	if m.CityRenewalDue() {
		t.Fatal("renewal due right after signing")
	}
	if st := m.Status(); st.Source != SourceCity || string(m.CAPEM()) != string(city.pem) {
		t.Fatalf("status %+v", st)
	}
	addr := serve(t, m, "0.0.0.0:0")
	_, port, _ := net.SplitHostPort(addr)
	if _, err := dial("10.231.0.1:"+port, "10.231.0.1", pool(t, city.pem)); err != nil {
		t.Fatalf("with only the city root trusted: %v", err)
	}
	if _, err := dial("127.0.0.1:"+port, "127.0.0.1", pool(t, m.EdgeCAPEM())); err != nil {
		t.Fatalf("loopback with the edge CA: %v", err)
	}
	// Kept across restarts.
	m2, err := New(Config{Dir: dir, Addrs: as.get, Hostname: "edge-dx"})
	if err != nil {
		t.Fatal(err)
	}
	if m2.Status().Source != SourceCity {
		t.Fatal("city certificate lost on restart")
	}
	// A new address the city certificate does not cover makes renewal due.
	as.set("10.231.0.1", "10.99.0.2")
	if !m2.CityRenewalDue() {
		t.Fatal("renewal not due for a new address")
	}
}

func TestOperatorCertificateReloadedWhenFilesChange(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "School IT CA")
	certFile, keyFile := filepath.Join(dir, "op.pem"), filepath.Join(dir, "op-key.pem")
	write := func(cn string, notAfter time.Time) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: Serial(), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter,
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalPKCS8PrivateKey(k)
		_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600)
		_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	}
	write("expired", time.Now().Add(-time.Hour))
	if _, err := New(Config{Dir: filepath.Join(dir, "tls"), OperatorCert: certFile, OperatorKey: keyFile}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired operator certificate: %v", err)
	}
	write("first", time.Now().Add(time.Hour))
	m, err := New(Config{Dir: filepath.Join(dir, "tls"), OperatorCert: certFile, OperatorKey: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, m, "127.0.0.1:0")
	cn := func() string {
		cs, err := dial(addr, "127.0.0.1", pool(t, ca.pem))
		if err != nil {
			t.Fatalf("operator certificate: %v", err)
		}
		return cs.PeerCertificates[0].Subject.CommonName
	}
	if got := cn(); got != "first" || m.Status().Source != SourceOperator || m.CAPEM() != nil {
		t.Fatalf("served %s, status %+v", got, m.Status())
	}
	write("renewed", time.Now().Add(48*time.Hour))
	deadline := time.Now().Add(2*operatorCheck + 3*time.Second)
	for cn() != "renewed" {
		if time.Now().After(deadline) {
			t.Fatal("renewed operator certificate not served without a restart")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A broken file does not take the edge off the air.
	if err := os.WriteFile(certFile, []byte("half-written"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(operatorCheck + 200*time.Millisecond)
	if got := cn(); got != "renewed" || m.Status().Problem == "" {
		t.Fatalf("after a broken file: served %s, problem %q", got, m.Status().Problem)
	}
}

func TestPinnedTLS(t *testing.T) {
	m, err := New(Config{Dir: t.TempDir(), Addrs: func() ([]netip.Addr, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, m, "127.0.0.1:0")
	if _, err := dial(addr, "", nil, func(c *tls.Config) { *c = *PinnedTLS(m.Pin()) }); err != nil {
		t.Fatalf("right pin: %v", err)
	}
	other, err := New(Config{Dir: t.TempDir(), Addrs: func() ([]netip.Addr, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(addr, "", nil, func(c *tls.Config) { *c = *PinnedTLS(other.Pin()) }); !errors.As(err, new(*PinMismatchError)) {
		t.Fatalf("wrong pin: %v", err)
	}
	if ValidPin(m.Pin()) != nil || ValidPin("abc") == nil {
		t.Fatal("ValidPin")
	}
}
