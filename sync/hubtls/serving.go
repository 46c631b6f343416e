// Package hubtls holds cityhub's key material: the certificate it serves
// HTTPS with (an operator's, reloaded when its files change, or its own
// self-signed one, whose key edges pin at enrolment) and the city CA that
// signs school edges' certificates.
package hubtls

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/fsutil"
)

// File names of the self-made serving certificate in the data dir.
const (
	ServingKeyFile  = "hub-tls.key"
	ServingCertFile = "hub-tls.pem"
)

// servingLife is how long a self-made serving certificate is valid. Edges
// trust it by its key's pin, not by its dates, and it is re-made over the
// same key before it ends, so the pin never changes by itself.
const servingLife = 2 * 365 * 24 * time.Hour

// renewBefore is how early a self-made certificate is re-made.
const renewBefore = 30 * 24 * time.Hour

// ServerConfig is the TLS configuration cityhub serves with: TLS 1.2 at
// least (older versions have no cipher suite worth keeping), HTTP/2 and
// HTTP/1.1, the certificate from get.
func ServerConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: get, NextProtos: []string{"h2", "http/1.1"}}
}

// DefaultNames are the names every self-made serving certificate covers in
// addition to the configured ones: loopback and the host's interface
// addresses, so an edge that reaches the hub by address needs no DNS.
func DefaultNames() []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return names
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() && !ipn.IP.IsLoopback() {
			names = append(names, ipn.IP.String())
		}
	}
	return names
}

// LoadOrCreateServing returns cityhub's own serving certificate from dir,
// making the key (ECDSA P-256, mode 0600) on first use and the certificate
// whenever it is missing, does not cover names, or ends within 30 days.
// The key is never replaced: edges enrolled with its pin keep working.
func LoadOrCreateServing(dir string, names []string, now time.Time, log *slog.Logger) (*tls.Certificate, error) {
	keyPath, certPath := filepath.Join(dir, ServingKeyFile), filepath.Join(dir, ServingCertFile)
	key, err := loadOrCreateKey(keyPath)
	if err != nil {
		return nil, err
	}
	names = normaliseNames(names)
	if pemBytes, err := os.ReadFile(certPath); err == nil {
		if c, err := tls.X509KeyPair(pemBytes, certs.KeyPEM(key)); err == nil && c.Leaf != nil &&
			covers(c.Leaf, names) && now.Add(renewBefore).Before(c.Leaf.NotAfter) {
			return &c, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", certPath, err)
	}
	dns, ips := splitNames(names)
	tmpl := &x509.Certificate{
		SerialNumber:          certs.Serial(),
		Subject:               pkix.Name{CommonName: "cityhub", Organization: []string{"CampusEdge city hub"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(servingLife),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("make the hub's TLS certificate: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := fsutil.WriteFileAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(certPEM, certs.KeyPEM(key))
	if err != nil {
		return nil, err
	}
	if log != nil {
		log.Info("made the hub's own TLS certificate", "file", certPath, "names", strings.Join(names, ","), "pin", certs.SPKIPin(c.Leaf), "not_after", c.Leaf.NotAfter.Format(time.RFC3339))
	}
	return &c, nil
}

// Pin is the SPKI pin of a serving certificate's leaf (see wire.SPKIPin).
func Pin(c *tls.Certificate) (string, error) {
	leaf := c.Leaf
	if leaf == nil {
		if len(c.Certificate) == 0 {
			return "", errors.New("certificate holds no leaf")
		}
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return "", err
		}
	}
	return certs.SPKIPin(leaf), nil
}

func normaliseNames(names []string) []string {
	var out []string
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func splitNames(names []string) (dns []string, ips []net.IP) {
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	return dns, ips
}

// covers reports whether leaf names every one of names.
func covers(leaf *x509.Certificate, names []string) bool {
	for _, n := range names {
		if leaf.VerifyHostname(n) != nil {
			return false
		}
	}
	return true
}

// FileCert serves an operator's certificate and key files, re-reading them
// when either file's modification time changes (checked at most once a
// second, on a handshake), so a renewed certificate is served without a
// restart. A pair that does not load (a renewal half written) keeps the
// previous one in service and is logged.
type FileCert struct {
	certFile, keyFile string
	log               *slog.Logger

	mu        sync.Mutex
	cur       *tls.Certificate
	certMod   time.Time
	keyMod    time.Time
	lastCheck time.Time
}

// NewFileCert loads the pair once; an error here stops start-up.
func NewFileCert(certFile, keyFile string, log *slog.Logger) (*FileCert, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &FileCert{certFile: certFile, keyFile: keyFile, log: log}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *FileCert) load() error {
	cs, err := os.Stat(f.certFile)
	if err != nil {
		return fmt.Errorf("-tls-cert: %w", err)
	}
	ks, err := os.Stat(f.keyFile)
	if err != nil {
		return fmt.Errorf("-tls-key: %w", err)
	}
	c, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("-tls-cert %s / -tls-key %s: %w", f.certFile, f.keyFile, err)
	}
	f.cur, f.certMod, f.keyMod = &c, cs.ModTime(), ks.ModTime()
	return nil
}

// Current returns the certificate in service, reloading it if its files
// changed.
func (f *FileCert) Current() *tls.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.lastCheck) >= time.Second {
		f.lastCheck = time.Now()
		cs, err1 := os.Stat(f.certFile)
		ks, err2 := os.Stat(f.keyFile)
		if err1 == nil && err2 == nil && (!cs.ModTime().Equal(f.certMod) || !ks.ModTime().Equal(f.keyMod)) {
			old := f.cur
			if err := f.load(); err != nil {
				f.log.Warn("TLS certificate files changed but do not load; still serving the previous certificate", "err", err)
			} else {
				oldPin, _ := Pin(old)
				newPin, _ := Pin(f.cur)
				f.log.Info("TLS certificate reloaded", "file", f.certFile, "not_after", f.cur.Leaf.NotAfter.Format(time.RFC3339), "pin", newPin)
				if oldPin != newPin {
					f.log.Warn("the reloaded certificate has a new key: edges enrolled with the old pin refuse this hub until re-enrolled with a new token (keep the key when renewing, e.g. certbot --reuse-key)", "old_pin", oldPin, "new_pin", newPin)
				}
			}
		}
	}
	return f.cur
}

// GetCertificate is for tls.Config.GetCertificate.
func (f *FileCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.Current(), nil
}

// Self serves cityhub's own certificate (LoadOrCreateServing), re-making it
// over the same key when it nears its end, so a hub that runs for years
// never serves an expired certificate.
type Self struct {
	dir   string
	names []string
	log   *slog.Logger

	mu  sync.Mutex
	cur *tls.Certificate
}

// NewSelf loads or makes the certificate now.
func NewSelf(dir string, names []string, log *slog.Logger) (*Self, error) {
	c, err := LoadOrCreateServing(dir, names, time.Now(), log)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Self{dir: dir, names: names, log: log, cur: c}, nil
}

// Current returns the certificate in service.
func (s *Self) Current() *tls.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Now().Add(renewBefore).After(s.cur.Leaf.NotAfter) {
		if c, err := LoadOrCreateServing(s.dir, s.names, time.Now(), s.log); err != nil {
			s.log.Error("could not re-make the hub's TLS certificate; serving the old one", "err", err)
		} else {
			s.cur = c
		}
	}
	return s.cur
}

// GetCertificate is for tls.Config.GetCertificate.
func (s *Self) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.Current(), nil
}

// ServingPin is the pin of the hub's own serving key in dir, making the
// key if there is none yet (so enrol-token may run before the first
// start). It writes no certificate: a running hub owns that file.
func ServingPin(dir string) (string, error) {
	key, err := loadOrCreateKey(filepath.Join(dir, ServingKeyFile))
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", err
	}
	return certs.SPKIPin(&x509.Certificate{RawSubjectPublicKeyInfo: der}), nil
}

// loadOrCreateKey is certs.LoadOrCreateKey with what replacing a hub key
// costs said in its error: edges pinned or enrolled against it.
func loadOrCreateKey(path string) (*ecdsa.PrivateKey, error) {
	k, err := certs.LoadOrCreateKey(path)
	if err != nil {
		return nil, fmt.Errorf("%w (a new hub key means enrolled edges need new tokens)", err)
	}
	return k, nil
}
