// Package pairingtest runs a real edge API behind real TLS on loopback, and
// a key-substituting proxy in front of it, for tests of code-bound pairing
// and of terminals that pin the edge's key. Only tests import it.
package pairingtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/fleet"
	"github.com/campusedge/campusedge/edge/store"
)

// Cert makes a self-signed ECDSA P-256 leaf for 127.0.0.1 and returns it
// with its pin (base64 SHA-256 of the SubjectPublicKeyInfo).
func Cert(t testing.TB) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "campusedge test edge"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, certs.SPKIPin(leaf)
}

// Edge is an edge API served over TLS whose key can be changed.
type Edge struct {
	URL   string // https://127.0.0.1:PORT
	Fleet *fleet.Fleet
	API   *api.Server
	Srv   *httptest.Server

	mu   sync.Mutex
	cert tls.Certificate
	pin  string
	room string
}

// Options adjust Start.
type Options struct {
	Console http.Handler                    // served at "/" (classroom page)
	Wrap    func(http.Handler) http.Handler // wraps the API handler
	Logger  *slog.Logger
}

type identity struct{}

func (identity) EdgeID() string                  { return "edge-test-01" }
func (identity) CheckAdminToken(tok string) bool { return tok == "admin" }

// Start runs an edge on 127.0.0.1 over TLS until the test ends.
func Start(t testing.TB, o Options) *Edge {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "edge.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := store.CreateBuckets(db, fleet.BucketClassrooms, fleet.BucketTerminals, fleet.BucketPairing); err != nil {
		t.Fatal(err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e := &Edge{Fleet: fleet.New(db, nil)}
	e.cert, e.pin = Cert(t)
	e.API = api.New(api.Config{Identity: identity{}, Fleet: e.Fleet, Logger: o.Logger, Console: o.Console, ServerPin: e.Pin})
	var h http.Handler = e.API
	if o.Wrap != nil {
		h = o.Wrap(h)
	}
	// Our own TLS listener: httptest's StartTLS would put its own
	// certificate first, and a client that sends no SNI (an IP address)
	// would get that one instead of GetCertificate's.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		c := e.cert
		return &c, nil
	}}
	e.Srv = &httptest.Server{Listener: tls.NewListener(ln, cfg), Config: &http.Server{Handler: h, ErrorLog: slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug)}}
	e.Srv.Start()
	t.Cleanup(e.Srv.Close)
	e.URL = "https://" + ln.Addr().String()
	return e
}

// Pin is the pin of the key the edge serves now (api.Config.ServerPin).
func (e *Edge) Pin() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pin
}

// NewKey makes the edge serve a new key from its next handshake on, and
// closes open connections so that clients must handshake again.
func (e *Edge) NewKey(t testing.TB) string {
	t.Helper()
	c, pin := Cert(t)
	e.mu.Lock()
	e.cert, e.pin = c, pin
	e.mu.Unlock()
	e.Srv.CloseClientConnections()
	return pin
}

// PairingCode issues a code for the edge's one test classroom.
func (e *Edge) PairingCode(t testing.TB) string {
	t.Helper()
	e.mu.Lock()
	room := e.room
	e.mu.Unlock()
	if room == "" {
		c, err := e.Fleet.CreateClassroom("Grade 7 Class 2", "R204")
		if err != nil {
			t.Fatal(err)
		}
		room = c.ID
		e.mu.Lock()
		e.room = room
		e.mu.Unlock()
	}
	code, _, err := e.Fleet.NewPairingCode(room)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// Proxy starts a TLS-terminating proxy with its own key in front of target,
// forwarding every request unchanged: what a device intercepting the LAN
// does. It returns the proxy's URL and pin.
func Proxy(t testing.TB, target string) (string, string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // the interceptor trusts anything
	rp.Transport = tr
	cert, pin := Cert(t)
	srv := httptest.NewUnstartedServer(rp)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, pin
}
