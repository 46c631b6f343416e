package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"time"

	"github.com/campusedge/campusedge/edge/fsutil"
)

// The key and certificate files of the edge (its CA and TLS key) and of
// cityhub (its serving key and the city CA, in sync/hubtls) are kept the
// same way, so the helpers live here once: both ends read each other's
// conventions, and a fix to one reaches the other.

// Serial is a random, positive certificate serial number of 127 bits.
func Serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // the OS's random source failing is not recoverable
	}
	return n.Add(n, big.NewInt(1))
}

// LoadOrCreateKey reads the ECDSA key at path, or makes a P-256 one and
// writes it there (PKCS#8 PEM, mode 0600, atomically). A file that is
// there but unreadable as an ECDSA key is an error, never replaced: what
// was signed or pinned with it would stop working.
func LoadOrCreateKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("TLS key %s: %w; move it away to have a new one made", path, err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("TLS key %s is not an ECDSA key", path)
		}
		return ek, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read TLS key %s: %w", path, err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate TLS key: %w", err)
	}
	if err := fsutil.WriteFileAtomic(path, KeyPEM(k), 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

// KeyPEM encodes an ECDSA key as a PKCS#8 "PRIVATE KEY" PEM block.
func KeyPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(fmt.Sprintf("marshal ECDSA key: %v", err)) // a P-256 key always marshals
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// ParsePrivateKey reads the first private key PEM block in b: PKCS#8,
// SEC 1 or PKCS#1 (other blocks, such as openssl's EC PARAMETERS, are
// skipped). A "PRIVATE KEY" block holding SEC 1 bytes is accepted too.
func ParsePrivateKey(b []byte) (any, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM private key found")
		}
		switch blk.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				if ek, err2 := x509.ParseECPrivateKey(blk.Bytes); err2 == nil {
					return ek, nil
				}
			}
			return k, err
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(blk.Bytes)
		}
	}
}

// NewSelfSignedCA makes a CA certificate over key, valid from an hour
// before now (clocks drift) for life, that signs leaves but no other CA.
// It returns the DER bytes and the parsed certificate.
func NewSelfSignedCA(key *ecdsa.PrivateKey, commonName string, now time.Time, life time.Duration) ([]byte, *x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          Serial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"CampusEdge"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(life),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA certificate %q: %w", commonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA certificate %q: %w", commonName, err)
	}
	return der, c, nil
}
