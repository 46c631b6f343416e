package uplink_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/token"
	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/hubtls"
	"github.com/campusedge/campusedge/sync/uplink"
	"github.com/campusedge/campusedge/sync/wire"
)

// tlsHub is a real cityhub sync server over HTTPS on 127.0.0.1 with the
// hub's own self-made certificate (hubtls), optionally with a city CA.
type tlsHub struct {
	Store      hub.Store
	URL        string
	Addr       string
	Pin        string
	CA         *hubtls.CA
	mu         sync.Mutex
	batchConns map[string]int // batches per client address
}

// BatchConns is how many connections carried batches, and how many each.
func (h *tlsHub) BatchConns() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.batchConns)
}

func startTLSHub(t *testing.T, st hub.Store, withCA bool) *tlsHub {
	t.Helper()
	dir := t.TempDir()
	self, err := hubtls.NewSelf(dir, []string{"localhost", "127.0.0.1"}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	pin, err := hubtls.Pin(self.Current())
	if err != nil {
		t.Fatal(err)
	}
	cfg := hub.Config{Store: st, Logger: quiet()}
	h := &tlsHub{Store: st, Pin: pin}
	if withCA {
		ca, _, err := hubtls.LoadOrCreateCA(dir, "Test city CA", hubtls.DefaultPolicy())
		if err != nil {
			t.Fatal(err)
		}
		cfg.CA, h.CA = ca, ca
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// ErrorLog: refused handshakes (the tests' own) are not test noise.
	srv := &http.Server{Handler: hub.NewServer(cfg), TLSConfig: hubtls.ServerConfig(self.GetCertificate), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(quiet().Handler(), slog.LevelDebug)}
	inner := srv.Handler
	h.batchConns = map[string]int{}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/sync/batch" {
			h.mu.Lock()
			h.batchConns[r.RemoteAddr]++
			h.mu.Unlock()
		}
		inner.ServeHTTP(w, r)
	})
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	h.Addr = ln.Addr().String()
	h.URL = "https://" + h.Addr
	return h
}

// enrolToken makes a school (if needed) and a one-time token carrying pin.
func enrolToken(t *testing.T, st hub.Store, school, pin string) string {
	t.Helper()
	ctx := context.Background()
	if err := st.CreateSchool(ctx, hub.School{Code: school, Name: "School " + school, Created: time.Now()}); err != nil && !errors.Is(err, hub.ErrExists) {
		t.Fatal(err)
	}
	tok := token.New()
	if err := st.CreateEnrolToken(ctx, school, token.Digest(tok), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	return wire.FormatEnrolToken(tok, pin)
}

// TestSyncOverTLSWithPinnedSelfSignedHub: a hub with a self-signed
// certificate; the edge enrols with SECRET~PIN, stores the pin, and sends
// and pulls over HTTPS through the default (pinned) client.
func TestSyncOverTLSWithPinnedSelfSignedHub(t *testing.T) {
	t.Parallel()
	th := startTLSHub(t, openBoltHub(t, t.TempDir()), false)
	e := newEdge(t, nil)
	ctx := context.Background()
	en, err := uplink.Enrol(ctx, e.DB, nil, th.URL, enrolToken(t, th.Store, "s1", th.Pin), e.Key, nil)
	if err != nil {
		t.Fatalf("enrol over TLS with the pin: %v", err)
	}
	if en.HubPin != th.Pin || en.School != "s1" {
		t.Fatalf("enrolment %+v, want pin %s", en, th.Pin)
	}
	stored, ok, err := uplink.LoadEnrolment(e.DB)
	if err != nil || !ok || stored.HubPin != th.Pin {
		t.Fatalf("stored enrolment %+v %v %v", stored, ok, err)
	}
	if _, err := th.Store.PutChange(ctx, "s1", "roster", []byte(`{"students":[{"id":"a1","name":"A","homeroom":"7A"}]}`), time.Now()); err != nil {
		t.Fatal(err)
	}
	want := appendN(t, e, 50)
	u := e.uplink(th.URL, nil) // nil: uplink.HubClient(DB)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); u.Run(runCtx) }()
	waitDrained(t, e, 50, 10*time.Second)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if doc, _ := uplink.Doc(e.DB, "roster"); doc != nil {
			break
		}
		if time.Now().After(deadline) {
			s, _ := u.Status()
			t.Fatalf("roster did not arrive over HTTPS: %+v", s)
		}
	}
	cancel()
	<-done
	if got := hubRecords(t, th.Store, "s1"); len(got) != len(want) {
		t.Fatalf("hub holds %d records, want %d", len(got), len(want))
	}
}

// TestBacklogRestartsCongestionControlExactlyOnce: over HTTPS (HTTP/2, one
// connection for all batches) a backlog that takes longer than the
// restart span to send (see uplink's restartEvery, shortened here) stays
// on its one connection while BBR is restarted on it again and again;
// while the edge keeps appending. Every record reaches the hub once under
// its own seq, and the outbox is empty.
func TestBacklogRestartsCongestionControlExactlyOnce(t *testing.T) {
	t.Parallel()
	th := startTLSHub(t, openBoltHub(t, t.TempDir()), false)
	e := newEdge(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := uplink.Enrol(ctx, e.DB, nil, th.URL, enrolToken(t, th.Store, "s1", th.Pin), e.Key, nil); err != nil {
		t.Fatalf("enrol over TLS: %v", err)
	}
	const first, later = 3000, 300
	want := appendN(t, e, first)
	restarts := &countingHandler{msg: "congestion control restarted"}
	// 100 records (~3 kB compressed) a batch at 40 kB/s: ~3 s of sending.
	u := uplink.New(uplink.Config{Hub: th.URL, DB: e.DB, Outbox: e.Ob, Identity: e.Key, Logger: slog.New(restarts),
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxRecords: 100, RateBytes: 40 << 10})
	uplink.SetRestartEvery(u, 300*time.Millisecond)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); u.Run(runCtx) }()
	for i := range later {
		r, err := e.Ob.Append(ctx, "quiz.answer", fmt.Appendf(nil, `{"student":"s%04d","answer":"C","late":%d}`, i%1100, i))
		if err != nil {
			t.Fatal(err)
		}
		want[r.ID] = r.Seq
		time.Sleep(time.Millisecond)
	}
	waitDrained(t, e, first+later, 45*time.Second)
	stop()
	<-done
	got := hubRecords(t, th.Store, "s1")
	if len(got) != len(want) {
		t.Fatalf("hub holds %d records, the edge wrote %d", len(got), len(want))
	}
	for id, r := range got {
		if want[id] != r.Seq {
			t.Fatalf("hub holds %s as seq %d, the edge wrote it as %d", id, r.Seq, want[id])
		}
	}
	if bc := th.BatchConns(); len(bc) != 1 {
		t.Fatalf("batches went over %d connections %v; want one", len(bc), bc)
	}
	avail, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if !strings.Contains(string(avail), "bbr") {
		t.Skip("exactly once and on one connection; this kernel has no BBR to restart")
	}
	if n := restarts.n.Load(); n < 3 {
		t.Fatalf("BBR restarted %d times in ~3 s of sending with a 300 ms span; want at least 3", n)
	}
}

// countingHandler counts the log records whose message is msg.
type countingHandler struct {
	msg string
	n   atomic.Int64
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}

// TestHubWithAnotherKeyIsRefused: a token whose pin is not the hub's key
// is refused in the handshake, before the secret is sent (the same token
// then still works with the right pin), and an enrolled edge refuses a hub
// that now presents another key, with an error naming both pins and what
// to do. A token without a pin enrols by CA, so the hub's self-signed
// certificate is then refused as from an authority the edge does not trust.
func TestHubWithAnotherKeyIsRefused(t *testing.T) {
	t.Parallel()
	st := openBoltHub(t, t.TempDir())
	th := startTLSHub(t, st, false)
	impostor := startTLSHub(t, st, false) // same store, another key
	e := newEdge(t, nil)
	ctx := context.Background()

	tok := enrolToken(t, st, "s1", th.Pin)
	secret, _, _ := wire.ParseEnrolToken(tok)
	_, err := uplink.Enrol(ctx, e.DB, nil, impostor.URL, tok, e.Key, nil)
	var pm *uplink.PinMismatchError
	if !errors.As(err, &pm) || pm.Expected != th.Pin || pm.Got != impostor.Pin {
		t.Fatalf("enrol with a hub of another key: %v", err)
	}
	for _, s := range []string{"the hub at " + impostor.URL, th.Pin, impostor.Pin, "enrol this edge again with a new token", "intercepting"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
	if _, ok, _ := uplink.LoadEnrolment(e.DB); ok {
		t.Fatal("an enrolment was stored after a refused handshake")
	}
	if _, err := uplink.Enrol(ctx, e.DB, nil, th.URL, secret, e.Key, nil); err == nil || !strings.Contains(err.Error(), "does not trust") ||
		!strings.Contains(err.Error(), "carries the hub's pin") {
		t.Fatalf("token without a pin, self-signed https hub: %v", err)
	}
	// The secret never reached the impostor, so the token is still unused.
	if _, err := uplink.Enrol(ctx, e.DB, nil, th.URL, tok, e.Key, nil); err != nil {
		t.Fatalf("the same token with the right hub: %v", err)
	}

	// The enrolled edge talks to a hub presenting another key.
	appendN(t, e, 3)
	u := e.uplink(impostor.URL, nil)
	en, _, _ := uplink.LoadEnrolment(e.DB)
	_, err = u.SendOnce(ctx, en)
	if err == nil || !strings.Contains(err.Error(), "presented TLS key pin "+impostor.Pin) || !strings.Contains(err.Error(), th.Pin) {
		t.Fatalf("sync to a hub with another key: %v", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); u.Run(runCtx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, _ := u.Status()
		if s.Link == "refused" && strings.Contains(s.LastError, impostor.Pin) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("link %q (%s), want refused naming the pin", s.Link, s.LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if n := len(hubRecords(t, st, "s1")); n != 0 {
		t.Fatalf("%d records reached the hub through the impostor", n)
	}
}

// TestHubRefusesTLSBelow12: a client offering only TLS 1.1 gets a
// handshake error.
func TestHubRefusesTLSBelow12(t *testing.T) {
	t.Parallel()
	th := startTLSHub(t, openBoltHub(t, t.TempDir()), false)
	c, err := tls.Dial("tcp", th.Addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		c.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
	if !strings.Contains(err.Error(), "protocol version") {
		t.Logf("handshake error: %v", err)
	}
	c, err = tls.Dial("tcp", th.Addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS 1.2: %v", err)
	}
	c.Close()
}

// testCerts is a real CertSigner: an ECDSA P-256 TLS key, a real CSR,
// and a check of the answer against the root before it is kept.
type testCerts struct {
	key   *ecdsa.PrivateKey
	dns   []string
	ips   []net.IP
	calls atomic.Int32

	mu    sync.Mutex
	chain []*x509.Certificate
	root  *x509.Certificate
}

func newTestCerts(t *testing.T, names ...string) *testCerts {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCerts{key: k}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			c.ips = append(c.ips, ip)
		} else {
			c.dns = append(c.dns, n)
		}
	}
	return c
}

func (c *testCerts) CertificateRequest() ([]byte, error) {
	c.calls.Add(1)
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "edge"}, DNSNames: c.dns, IPAddresses: c.ips}, c.key)
}

func (c *testCerts) UseCitySigned(chainPEM, rootPEM []byte) error {
	var chain []*x509.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		x, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return err
		}
		chain = append(chain, x)
	}
	rb, _ := pem.Decode(rootPEM)
	if len(chain) == 0 || rb == nil {
		return errors.New("no chain or root")
	}
	root, err := x509.ParseCertificate(rb.Bytes)
	if err != nil {
		return err
	}
	if !chain[0].PublicKey.(*ecdsa.PublicKey).Equal(&c.key.PublicKey) {
		return errors.New("leaf is not for this key")
	}
	c.mu.Lock()
	c.chain, c.root = chain, root
	c.mu.Unlock()
	return nil
}

func (c *testCerts) CityRenewalDue() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.chain) == 0 {
		return true
	}
	l := c.chain[0]
	return time.Until(l.NotAfter) < l.NotAfter.Sub(l.NotBefore)/3
}

// verify checks the installed leaf with only the root trusted, for name.
func (c *testCerts) verify(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.chain) == 0 {
		return errors.New("no certificate installed")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(c.root)
	for _, x := range c.chain[1:] {
		inter.AddCert(x)
	}
	_, err := c.chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// TestCitySignsEdgeCertificate: through the uplink's run loop, an enrolled
// edge over HTTPS gets its TLS key signed by the city CA; the leaf verifies
// for the edge's LAN address and .local name with only the city root
// trusted, is ServerAuth, lives 90 days, and is not asked for again.
func TestCitySignsEdgeCertificate(t *testing.T) {
	t.Parallel()
	th := startTLSHub(t, openBoltHub(t, t.TempDir()), true)
	e := newEdge(t, nil)
	ctx := context.Background()
	if _, err := uplink.Enrol(ctx, e.DB, nil, th.URL, enrolToken(t, th.Store, "s1", th.Pin), e.Key, nil); err != nil {
		t.Fatal(err)
	}
	certs := newTestCerts(t, "school-a.local", "10.77.0.1", "fd00::1")
	u := uplink.New(uplink.Config{Hub: th.URL, DB: e.DB, Outbox: e.Ob, Identity: e.Key, Logger: quiet(), Certs: certs, PullEvery: 50 * time.Millisecond})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); u.Run(runCtx) }()
	deadline := time.Now().Add(10 * time.Second)
	for certs.CityRenewalDue() {
		if time.Now().After(deadline) {
			t.Fatal("no city-signed certificate installed within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // several more cycles: not due, not asked
	cancel()
	<-done
	if n := certs.calls.Load(); n != 1 {
		t.Errorf("asked for a certificate %d times, want 1", n)
	}
	for _, name := range []string{"10.77.0.1", "school-a.local", "fd00::1"} {
		if err := certs.verify(name); err != nil {
			t.Errorf("city-signed leaf for %s with only the city root trusted: %v", name, err)
		}
	}
	if err := certs.verify("10.77.0.2"); err == nil {
		t.Error("leaf verifies for an address it does not name")
	}
	leaf := certs.chain[0]
	if life := leaf.NotAfter.Sub(time.Now()); life < 89*24*time.Hour || life > 91*24*time.Hour {
		t.Errorf("leaf life %s, want 90 days", life)
	}
	if !bytes.Equal(certs.root.Raw, th.CA.Root().Raw) {
		t.Error("root in the answer is not the hub's city CA")
	}
}

// signedPost posts body to path signed by k (an enrolled or stranger key).
func signedPost(t *testing.T, url, path string, k *keyID, body []byte, tamper bool) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+path, bytes.NewReader(body))
	if k != nil {
		if err := wire.Sign(req, k, time.Now(), body); err != nil {
			t.Fatal(err)
		}
	}
	if tamper {
		// Flip a bit of the signature itself, not of its base64 text: a
		// flipped character can stop being base64 at all, and then the hub
		// rightly answers "unsigned" instead of "bad_signature".
		sig, err := base64.StdEncoding.DecodeString(req.Header.Get(wire.HeaderSignature))
		if err != nil {
			t.Fatal(err)
		}
		sig[3] ^= 1
		req.Header.Set(wire.HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func csrBody(t *testing.T, key *ecdsa.PrivateKey, dns []string, ips []net.IP) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: dns, IPAddresses: ips}, key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(wire.CertRequest{CSR: base64.StdEncoding.EncodeToString(der)})
	return b
}

// TestCertEndpointRefusals: the CSR endpoint (over plain HTTP, so the test
// can send what a real edge never would) refuses an unsigned, forged,
// tampered or revoked request, a wildcard, too many names, a name outside
// the city's networks, a damaged CSR and an oversized body; a hub without a
// CA says so, and the uplink backs off instead of asking again.
func TestCertEndpointRefusals(t *testing.T) {
	t.Parallel()
	st := openBoltHub(t, t.TempDir())
	ca, _, err := hubtls.LoadOrCreateCA(t.TempDir(), "Test city CA", hubtls.DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: hub.NewServer(hub.Config{Store: st, Logger: quiet(), CA: ca}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "http://" + ln.Addr().String()
	e := newEdge(t, nil)
	enrol(t, st, url, "s1", e)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lan := []net.IP{net.ParseIP("10.77.0.1")}
	good := csrBody(t, key, []string{"school-a.local"}, lan)
	const path = "/api/v1/sync/cert"

	expect := func(name string, wantStatus int, wantCode string, status int, body string) {
		t.Helper()
		if status != wantStatus || !strings.Contains(body, `"`+wantCode+`"`) {
			t.Errorf("%s: got %d %s, want %d %s", name, status, body, wantStatus, wantCode)
		}
	}
	st1, b1 := signedPost(t, url, path, nil, good, false)
	expect("unsigned", 401, "unsigned", st1, b1)
	st1, b1 = signedPost(t, url, path, newKey(t), good, false)
	expect("signed by an edge the hub never enrolled", 401, "unknown_edge", st1, b1)
	st1, b1 = signedPost(t, url, path, e.Key, good, true)
	expect("forged signature", 401, "bad_signature", st1, b1)
	st1, b1 = signedPost(t, url, path, e.Key, csrBody(t, key, []string{"*.school-a.local"}, nil), false)
	expect("wildcard", 400, "invalid_csr", st1, b1)
	many := make([]net.IP, 33)
	for i := range many {
		many[i] = net.IPv4(10, 77, 1, byte(i+1))
	}
	st1, b1 = signedPost(t, url, path, e.Key, csrBody(t, key, nil, many), false)
	expect("33 names", 400, "invalid_csr", st1, b1)
	st1, b1 = signedPost(t, url, path, e.Key, csrBody(t, key, nil, []net.IP{net.ParseIP("8.8.8.8")}), false)
	expect("public address", 403, "name_refused", st1, b1)
	st1, b1 = signedPost(t, url, path, e.Key, csrBody(t, key, []string{"www.example.com"}, nil), false)
	expect("name outside the city's domains", 403, "name_refused", st1, b1)
	damaged := bytes.Replace(good, []byte(`"csr":"M`), []byte(`"csr":"N`), 1)
	st1, b1 = signedPost(t, url, path, e.Key, damaged, false)
	expect("damaged CSR", 400, "invalid_csr", st1, b1)
	st1, b1 = signedPost(t, url, path, e.Key, make([]byte, wire.MaxCertRequestBytes+1), false)
	expect("oversized", 413, "too_large", st1, b1)
	st1, b1 = signedPost(t, url, path, e.Key, good, false)
	expect("good", 200, "chain_pem", st1, b1)

	if err := st.RevokeEdge(context.Background(), e.Key.EdgeID()); err != nil {
		t.Fatal(err)
	}
	st1, b1 = signedPost(t, url, path, e.Key, good, false)
	expect("revoked", 403, "edge_revoked", st1, b1)

	// A hub without a CA: 501, and the run loop asks once, not every cycle.
	plain := startHub(t, openBoltHub(t, t.TempDir()))
	f := newEdge(t, nil)
	enrol(t, plain.Store, plain.URL, "s1", f)
	certs := newTestCerts(t, "10.77.0.9")
	u := uplink.New(uplink.Config{Hub: plain.URL, DB: f.DB, Outbox: f.Ob, Identity: f.Key, Logger: quiet(), Certs: certs, PullEvery: 20 * time.Millisecond})
	if _, err := u.RequestCityCert(context.Background()); err == nil || !strings.Contains(err.Error(), "no_city_ca") {
		t.Fatalf("hub without CA: %v", err)
	}
	certs.calls.Store(0)
	runCtx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	u.Run(runCtx)
	if n := certs.calls.Load(); n != 1 {
		t.Errorf("asked a hub without a CA %d times in 0.5 s of 20 ms cycles, want 1 (backoff)", n)
	}
	if s, _ := u.Status(); s.Link != "up" {
		t.Errorf("a refused certificate changed the sync link to %q (%s)", s.Link, s.LastError)
	}
}
