package termagent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/campusedge/campusedge/edge/certs"
)

// DefaultHTTPSPort is the edge's HTTPS port when discovery does not say
// otherwise (edged -https-listen default).
const DefaultHTTPSPort = 8443

// PinMismatchError is a TLS peer whose key is not the pinned one.
type PinMismatchError struct {
	Want, Got string
}

func (e *PinMismatchError) Error() string {
	return fmt.Sprintf("the edge's TLS key is not the one this terminal paired with (pinned %s, now shown %s): "+
		"if the IT admin replaced the edge or its key, pair again with classterm -pair CODE; "+
		"otherwise a device on the network may be intercepting", e.Want, e.Got)
}

// PinnedTLSConfig accepts exactly the edge whose key has this pin (see
// certs.PinnedConfig for why that needs no CA); another key is refused
// with a PinMismatchError that tells the school what to do.
func PinnedTLSConfig(pin string) *tls.Config {
	return certs.PinnedConfig(certs.PinCheck(func() (string, error) { return pin, nil },
		func(_ tls.ConnectionState, want, got string) error { return &PinMismatchError{Want: want, Got: got} }))
}

// PinnedClient is an HTTP client that talks only to the server with this pin.
func PinnedClient(pin string) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = PinnedTLSConfig(pin)
	tr.ForceAttemptHTTP2 = true
	return &http.Client{Transport: tr}
}

// edgeCAAdvice is what a school does about an edge certificate that a
// terminal trusting the edge by CA (classterm -ca) refused.
func edgeCAAdvice() certs.CAAdvice {
	return certs.CAAdvice{Peer: "the edge", Self: "this terminal",
		Expired: "A city-signed certificate is renewed by the edge while it reaches the city: check the sync link on the edge's console (or renew the edge's -tls-cert); " +
			"if the certificate is not expired, correct this terminal's clock",
		WrongHost: "Check -edge (or the address DNS-SD found): it must be a name or address the edge's certificate covers (edged -tls-names adds one)",
		UnknownCA: "Give -ca the root that signs the edge's certificate (the city's root once the edge is enrolled and city-signed), " +
			"or run classterm without -ca to trust the edge by the key pinned at pairing",
	}
}

// CATLSConfig trusts the edge by its chain to roots and by the host name
// in the edge URL, for terminals whose city manages the edge's
// certificate (classterm -ca): the key may then change at renewal.
func CATLSConfig(roots *x509.CertPool) *tls.Config { return certs.CAConfig(roots) }

// CAClient is an HTTP client that trusts the edge by CA (CATLSConfig); a
// refused certificate comes back as a *certs.UntrustedError that says what
// to do.
func CAClient(roots *x509.CertPool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = CATLSConfig(roots)
	tr.ForceAttemptHTTP2 = true
	return &http.Client{Transport: edgeCAAdvice().Transport(tr)}
}

// ReadCAFile reads classterm -ca: the PEM roots this terminal trusts for
// the edge, and only those (a classroom screen has no reason to accept
// every public CA for an address on the school's LAN).
func ReadCAFile(path string) (*x509.CertPool, error) {
	b, err := certs.ReadRootsFile(path)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(b)
	return p, nil
}

// FetchPin connects to an HTTPS server and returns its leaf key's pin
// without trusting it: pairing then proves, with the code, that this key is
// the edge's.
func FetchPin(ctx context.Context, hostport string) (string, error) {
	var pin string
	d := tls.Dialer{Config: &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // the pin is only recorded here; pairing verifies it
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the edge presented no certificate")
			}
			pin = certs.SPKIPin(cs.PeerCertificates[0])
			return nil
		},
	}}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		return "", fmt.Errorf("TLS to %s: %w", hostport, err)
	}
	_ = c.Close()
	return pin, nil
}

// HTTPSURL is the edge URL a terminal uses. An https URL is kept as given.
// An http URL to a loopback host is kept too (no network lies between, and
// edged keeps its API on plain HTTP for loopback clients). An http URL to
// any other host becomes https on the same host at httpsPort (from the
// edge's DNS-SD TXT https=, else DefaultHTTPSPort): the edge refuses API
// calls over plain HTTP from the LAN, and tokens must not cross it in clear.
func HTTPSURL(raw string, httpsPort int) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("edge URL %q: %w", raw, err)
	}
	if httpsPort <= 0 {
		httpsPort = DefaultHTTPSPort
	}
	switch u.Scheme {
	case "https":
	case "http":
		if isLoopback(u.Hostname()) {
			break
		}
		u.Scheme = "https"
		u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(httpsPort))
	default:
		return "", fmt.Errorf("edge URL %q must be http or https", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("edge URL %q has no host", raw)
	}
	u.Path, u.RawQuery, u.Fragment = "", "", ""
	return u.String(), nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
