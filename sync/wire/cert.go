package wire

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
)

// City-signed edge certificates: POST /api/v1/sync/cert, signed like every
// other edge request, with a CertRequest body; the answer is a
// CertResponse.
const (
	// MaxCertRequestBytes bounds the JSON body. A CSR with 32 names and an
	// RSA-4096 key is under 3 KiB of DER.
	MaxCertRequestBytes = 16 << 10
	// MaxCertNames is the most subjectAltNames one edge certificate holds:
	// a box's addresses on a few VLANs plus a handful of names.
	MaxCertNames = 32
	maxDNSName   = 253
)

// CertRequest asks the city CA to sign the edge's TLS key.
type CertRequest struct {
	CSR string `json:"csr"` // base64 std of the DER PKCS#10 request
}

// CertResponse is the signed certificate: ChainPEM is the leaf followed by
// any intermediate CAs (what the edge serves), RootPEM the city's root
// (what devices trust).
type CertResponse struct {
	ChainPEM string `json:"chain_pem"`
	RootPEM  string `json:"root_pem"`
	NotAfter string `json:"not_after"` // RFC 3339, for logs and the console
}

// ErrBadCSR is wrapped by every DecodeCertRequest refusal.
var ErrBadCSR = errors.New("invalid certificate request")

// DecodeCertRequest parses and checks a CertRequest body: size, base64,
// DER, the CSR's own signature (the edge holds the key), a key a browser
// accepts, and names: 1-MaxCertNames DNS names and IP addresses, no
// wildcard, no e-mail or URI names. What names a city allows is the CA's
// policy on top of this.
func DecodeCertRequest(body []byte) (*x509.CertificateRequest, error) {
	if len(body) > MaxCertRequestBytes {
		return nil, fmt.Errorf("%w: body of %d bytes exceeds %d", ErrBadCSR, len(body), MaxCertRequestBytes)
	}
	var req CertRequest
	if err := decodeStrict(body, &req); err != nil {
		return nil, fmt.Errorf("%w: body must be JSON {\"csr\": base64 DER}: %w", ErrBadCSR, err)
	}
	der, err := base64.StdEncoding.DecodeString(req.CSR)
	if err != nil || len(der) == 0 {
		return nil, fmt.Errorf("%w: csr is not base64 of a DER PKCS#10 request", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: the CSR's signature does not verify with its key: %w", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: ECDSA key must be on P-256 or P-384", ErrBadCSR)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA key must have at least 2048 bits", ErrBadCSR)
		}
	default:
		return nil, fmt.Errorf("%w: key type %T is not one browsers accept for TLS (use ECDSA P-256)", ErrBadCSR, csr.PublicKey)
	}
	if len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, fmt.Errorf("%w: only DNS names and IP addresses may be asked for", ErrBadCSR)
	}
	n := len(csr.DNSNames) + len(csr.IPAddresses)
	if n == 0 || n > MaxCertNames {
		return nil, fmt.Errorf("%w: must name 1-%d DNS names and IP addresses, names %d", ErrBadCSR, MaxCertNames, n)
	}
	for _, d := range csr.DNSNames {
		if err := checkDNSName(d); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
		}
	}
	for _, ip := range csr.IPAddresses {
		if ip.IsUnspecified() || ip.IsMulticast() || (ip.To4() == nil && len(ip) != net.IPv6len) {
			return nil, fmt.Errorf("%w: IP address %s cannot name a server", ErrBadCSR, ip)
		}
	}
	return csr, nil
}

// checkDNSName accepts a host name of letters, digits and hyphens in dot
// separated labels; a wildcard would let one school's key speak for every
// name under a domain, so it is refused.
func checkDNSName(d string) error {
	if strings.Contains(d, "*") {
		return fmt.Errorf("wildcard name %q: the city CA signs only exact names", d)
	}
	if d == "" || len(d) > maxDNSName || strings.HasSuffix(d, ".") {
		return fmt.Errorf("DNS name %q must be 1-%d characters without a final dot", d, maxDNSName)
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("DNS name %q has an empty, long or hyphen-edged label", d)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("DNS name %q holds %q; use letters, digits and hyphens", d, c)
			}
		}
	}
	return nil
}

// decodeStrict decodes exactly one JSON object with no unknown fields.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON object")
	}
	return nil
}
