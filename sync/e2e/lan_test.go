package e2e

import (
	"io"
	"net/http"
	"regexp"
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
	client *http.Client
}

var listenHTTPSRe = regexp.MustCompile(`msg="listening https" addr=(\S+) .*spki_pin="?([A-Za-z0-9+/=]+)`)

// startLANEdged starts edged with args and -listen browsertest.LANListen
// (the test runs in its own namespace: browsertest.OnLAN). From LANAddr to
// LANAddr is not loopback: pages must be HTTPS to be secure contexts and
// token-bearing calls over plain HTTP are refused, so the test's own calls
// use the HTTPS side with a client trusting the edge CA, downloaded from
// the plain HTTP side as a school admin would.
func startLANEdged(t *testing.T, args ...string) *lanEdged {
	t.Helper()
	p, plain := start(t, "edged", append(args, "-listen", browsertest.LANListen)...)
	deadline := time.Now().Add(10 * time.Second)
	var m []string
	for m = listenHTTPSRe.FindStringSubmatch(p.logs()); m == nil; m = listenHTTPSRe.FindStringSubmatch(p.logs()) {
		if time.Now().After(deadline) {
			t.Fatalf("edged logged no HTTPS listener in 10 s:\n%s", p.logs())
		}
		time.Sleep(20 * time.Millisecond)
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
	if !strings.HasPrefix(m[1], browsertest.LANAddr+":") {
		t.Fatalf("edged serves HTTPS on %s, want %s", m[1], browsertest.LANAddr)
	}
	return &lanEdged{proc: p, url: "https://" + m[1], pin: m[2], client: browsertest.Client(t, ca)}
}
