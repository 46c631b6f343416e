package wire

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/campusedge/campusedge/edge/certs"
)

const testPin = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" // SHA-256 of nothing

func TestEnrolTokenRoundTrip(t *testing.T) {
	if certs.ValidPin(testPin) != nil {
		t.Fatal("test pin invalid")
	}
	tok := FormatEnrolToken("s3cr3t_-A", testPin)
	sec, pin, err := ParseEnrolToken("  " + tok + "\n")
	if err != nil || sec != "s3cr3t_-A" || pin != testPin {
		t.Fatalf("%q → %q %q %v", tok, sec, pin, err)
	}
	if sec, pin, err := ParseEnrolToken("old-style-token"); err != nil || sec != "old-style-token" || pin != "" {
		t.Fatalf("old-style: %q %q %v", sec, pin, err)
	}
	for _, bad := range []string{"", "~" + testPin, "abc~", "abc~short", "abc~" + testPin + "x", "a b~" + testPin, "abc~" + testPin + "~" + testPin, strings.Repeat("a", 129)} {
		if _, _, err := ParseEnrolToken(bad); err == nil {
			t.Errorf("token %q accepted", bad)
		}
	}
}

// FuzzParseEnrolToken: whatever an admin pastes, parsing never panics, and
// an accepted token formats back to itself (trimmed).
func FuzzParseEnrolToken(f *testing.F) {
	for _, s := range []string{"abc", "abc~" + testPin, " abc~" + testPin + " ", "~", "a~b~c", "\x00~\xff", strings.Repeat("~", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sec, pin, err := ParseEnrolToken(s)
		if err != nil {
			return
		}
		if pin != "" && certs.ValidPin(pin) != nil {
			t.Fatalf("accepted bad pin %q", pin)
		}
		if got := FormatEnrolToken(sec, pin); got != strings.TrimSpace(s) {
			t.Fatalf("%q parsed and formatted to %q", s, got)
		}
	})
}

func csrJSON(t testing.TB, dns []string, ips []net.IP) []byte {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: dns, IPAddresses: ips}, k)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(CertRequest{CSR: base64.StdEncoding.EncodeToString(der)})
	return b
}

func TestDecodeCertRequest(t *testing.T) {
	lan := []net.IP{net.ParseIP("10.77.0.1")}
	if csr, err := DecodeCertRequest(csrJSON(t, []string{"edge.local"}, lan)); err != nil || len(csr.IPAddresses) != 1 {
		t.Fatalf("good CSR: %v", err)
	}
	many := make([]string, MaxCertNames+1)
	for i := range many {
		many[i] = "n" + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + ".local"
	}
	for name, body := range map[string][]byte{
		"wildcard":     csrJSON(t, []string{"*.school.local"}, nil),
		"no names":     csrJSON(t, nil, nil),
		"33 names":     csrJSON(t, many, nil),
		"bad label":    csrJSON(t, []string{"a..local"}, nil),
		"unspecified":  csrJSON(t, nil, []net.IP{net.IPv4zero}),
		"not JSON":     []byte("csr"),
		"extra field":  []byte(`{"csr":"","x":1}`),
		"not base64":   []byte(`{"csr":"!!"}`),
		"not DER":      []byte(`{"csr":"AAAA"}`),
		"oversized":    make([]byte, MaxCertRequestBytes+1),
		"trailing obj": append(csrJSON(t, []string{"a.local"}, nil), []byte(`{}`)...),
	} {
		if _, err := DecodeCertRequest(body); !errors.Is(err, ErrBadCSR) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzDecodeCertRequest: a hostile enrolled edge's body never panics the
// hub, and anything accepted obeys the name rules.
func FuzzDecodeCertRequest(f *testing.F) {
	f.Add(csrJSON(f, []string{"edge.local"}, []net.IP{net.ParseIP("10.77.0.1")}))
	f.Add(csrJSON(f, []string{"*.x.local"}, nil))
	f.Add([]byte(`{"csr":"MIIB"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		csr, err := DecodeCertRequest(body)
		if err != nil {
			return
		}
		n := len(csr.DNSNames) + len(csr.IPAddresses)
		if n == 0 || n > MaxCertNames {
			t.Fatalf("accepted %d names", n)
		}
		for _, d := range csr.DNSNames {
			if strings.Contains(d, "*") {
				t.Fatalf("accepted wildcard %q", d)
			}
		}
	})
}
