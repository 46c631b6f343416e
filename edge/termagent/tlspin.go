package termagent

import (
	"context"
	"crypto/tls"
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
