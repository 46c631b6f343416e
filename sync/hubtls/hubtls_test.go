package hubtls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/sync/hub"
)

// TestServingKeyKeptAcrossReissue: the self-made key is 0600, and a new
// name or a near end re-makes the certificate over the same key, so the
// pin edges hold stays valid; ServingPin agrees without a certificate.
func TestServingKeyKeptAcrossReissue(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	pinBefore, err := ServingPin(dir)
	if err != nil {
		t.Fatal(err)
	}
	c1, err := LoadOrCreateServing(dir, []string{"localhost", "127.0.0.1"}, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, ServingKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v %v", fi.Mode(), err)
	}
	c2, err := LoadOrCreateServing(dir, []string{"localhost", "127.0.0.1", "hub.city.example"}, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	c3, err := LoadOrCreateServing(dir, []string{"localhost"}, now.Add(servingLife-time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := Pin(c1)
	p2, _ := Pin(c2)
	p3, _ := Pin(c3)
	if p1 != pinBefore || p2 != p1 || p3 != p1 {
		t.Fatalf("pins %s %s %s %s differ", pinBefore, p1, p2, p3)
	}
	if c2.Leaf.VerifyHostname("hub.city.example") != nil || c1.Leaf.VerifyHostname("hub.city.example") == nil {
		t.Fatal("new name not covered by the re-made certificate")
	}
	if !c3.Leaf.NotAfter.After(c1.Leaf.NotAfter) {
		t.Fatal("near-end certificate not re-made")
	}
}

func writePEM(t *testing.T, path, typ string, der ...[]byte) {
	t.Helper()
	var out []byte
	for _, d := range der {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func selfSigned(t *testing.T, cn string, isCA bool) ([]byte, *ecdsa.PrivateKey) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: certs.Serial(), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour * 24 * 365),
		IsCA: isCA, BasicConstraintsValid: true, DNSNames: []string{cn}, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return der, k
}

// TestFileCertReloads: an operator's pair is re-read when the files
// change, and a broken pair keeps the previous certificate in service.
func TestFileCertReloads(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	put := func(cn string) {
		der, k := selfSigned(t, cn, false)
		kd, _ := x509.MarshalPKCS8PrivateKey(k)
		writePEM(t, cf, "CERTIFICATE", der)
		writePEM(t, kf, "PRIVATE KEY", kd)
	}
	put("one.example")
	fc, err := NewFileCert(cf, kf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fc.Current().Leaf.Subject.CommonName != "one.example" {
		t.Fatal("first certificate not served")
	}
	put("two.example")
	later := time.Now().Add(2 * time.Second)
	os.Chtimes(cf, later, later)
	os.Chtimes(kf, later, later)
	fc.lastCheck = time.Time{}
	if cn := fc.Current().Leaf.Subject.CommonName; cn != "two.example" {
		t.Fatalf("after change serving %s", cn)
	}
	os.WriteFile(cf, []byte("half written"), 0o600)
	even := later.Add(2 * time.Second)
	os.Chtimes(cf, even, even)
	fc.lastCheck = time.Time{}
	if cn := fc.Current().Leaf.Subject.CommonName; cn != "two.example" {
		t.Fatalf("after a broken write serving %s", cn)
	}
}

// TestOperatorIntermediateCA: with a city root and an intermediate given by
// the operator, the chain served holds the intermediate, the leaf verifies
// with only the root trusted, and the policy refuses public addresses.
func TestOperatorIntermediateCA(t *testing.T) {
	dir := t.TempDir()
	rootDER, rootKey := selfSigned(t, "City root", true)
	root, _ := x509.ParseCertificate(rootDER)
	ik, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	itmpl := &x509.Certificate{SerialNumber: certs.Serial(), Subject: pkix.Name{CommonName: "City edge CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * 365 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign}
	interDER, err := x509.CreateCertificate(rand.Reader, itmpl, root, &ik.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	cf, kf := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	kd, _ := x509.MarshalPKCS8PrivateKey(ik)
	writePEM(t, kf, "PRIVATE KEY", kd)
	writePEM(t, cf, "CERTIFICATE", rootDER, interDER)
	if _, err := LoadCA(cf, kf, DefaultPolicy()); err == nil {
		t.Fatal("root first, intermediate last: accepted")
	}
	writePEM(t, cf, "CERTIFICATE", interDER, rootDER)
	ca, err := LoadCA(cf, kf, DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"s1.local"}, IPAddresses: []net.IP{net.ParseIP("192.168.4.10")}}, ek)
	csr, _ := x509.ParseCertificateRequest(csrDER)
	chainPEM, rootPEM, err := ca.Issue(context.Background(), csr, hub.Edge{ID: "e1", School: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, _ := x509.ParseCertificate(b.Bytes)
		chain = append(chain, c)
	}
	if len(chain) != 2 || chain[1].Subject.CommonName != "City edge CA" {
		t.Fatalf("chain of %d, want leaf + intermediate", len(chain))
	}
	rb, _ := pem.Decode(rootPEM)
	if rb == nil || string(rb.Bytes) != string(rootDER) {
		t.Fatal("root PEM is not the city root")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	inter.AddCert(chain[1])
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: "192.168.4.10", Roots: roots, Intermediates: inter}); err != nil {
		t.Fatalf("leaf via intermediate, only the root trusted: %v", err)
	}
	pubDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("203.0.113.7")}}, ek)
	pub, _ := x509.ParseCertificateRequest(pubDER)
	if _, _, err := ca.Issue(context.Background(), pub, hub.Edge{ID: "e1", School: "s1"}); err == nil {
		t.Fatal("public address signed")
	}
}

// TestSelfMadeCAKeyMode: the city CA made on first start keeps its key 0600
// and is the same CA on the next start.
func TestSelfMadeCAKeyMode(t *testing.T) {
	dir := t.TempDir()
	a, made, err := LoadOrCreateCA(dir, "c", DefaultPolicy())
	if err != nil || !made {
		t.Fatal(made, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, CAKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v %v", fi.Mode(), err)
	}
	b, made, err := LoadOrCreateCA(dir, "c", DefaultPolicy())
	if err != nil || made || string(a.Root().Raw) != string(b.Root().Raw) {
		t.Fatal("second start made another CA", made, err)
	}
}
