package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/certs"
)

// lanEdged is a built edged on browsertest.LANAddr, reached over HTTPS.
type lanEdged struct {
	*proc
	url    string // https://LANAddr:port
	pin    string // its key's pin, for browsertest.TrustPin
	ca     []byte // the edge CA it served at start (PEM)
	client *http.Client
}

// startLANEdged starts edged with args and -listen browsertest.LANListen
// (the test runs in its own namespace: browsertest.OnLAN). From LANAddr to
// LANAddr is not loopback: pages must be HTTPS to be secure contexts and
// token-bearing calls over plain HTTP are refused, so the test's own calls
// use the HTTPS side with a client trusting the edge CA, downloaded from
// the plain HTTP side as a school admin would.
func startLANEdged(t *testing.T, args ...string) *lanEdged {
	t.Helper()
	p, plain := start(t, "edged", append(args, "-listen", browsertest.LANListen)...)
	base, pin, err := p.HTTPS(10 * time.Second)
	if err != nil {
		t.Fatalf("edged: %v\n%s", err, p.logs())
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(plain + certs.CAPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ca, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", certs.CAPath, resp.StatusCode, ca)
	}
	if !strings.HasPrefix(base, "https://"+browsertest.LANAddr+":") {
		t.Fatalf("edged serves HTTPS on %s, want %s", base, browsertest.LANAddr)
	}
	return &lanEdged{proc: p, url: base, pin: pin, ca: ca, client: browsertest.Client(t, ca)}
}

// trustAlso is a client trusting the edge CA and extra PEM roots (the city
// root once the city signed the edge's certificate).
func (e *lanEdged) trustAlso(t *testing.T, extra []byte) *http.Client {
	t.Helper()
	return browsertest.Client(t, append(append([]byte(nil), e.ca...), extra...))
}
