package cityadmin_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/identity"
	"github.com/campusedge/campusedge/sync/cityadmin"
	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/hubtls"
	"github.com/campusedge/campusedge/sync/internal/pgtest"
	"github.com/campusedge/campusedge/sync/outbox"
	"github.com/campusedge/campusedge/sync/uplink"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testHub is a real hub over HTTPS: the sync server edges call and the
// admin API, on one store.
type testHub struct {
	URL string
	Srv *httptest.Server
	St  hub.Store
	Pin string
}

func startHub(t testing.TB, st hub.Store, opts ...func(*cityadmin.Config)) *testHub {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/api/v1/sync/", hub.NewServer(hub.Config{Store: st, Logger: quiet()}))
	h := &testHub{St: st}
	cfg := cityadmin.Config{Store: st, Logger: quiet(), Pin: func() (string, error) { return h.Pin, nil }}
	for _, o := range opts {
		o(&cfg)
	}
	admin := cityadmin.New(cfg)
	mux.Handle("/api/v1/admin/", admin)
	mux.Handle("/console/", admin)
	h.Srv = httptest.NewTLSServer(mux)
	t.Cleanup(h.Srv.Close)
	h.URL = h.Srv.URL
	cert := h.Srv.TLS.Certificates[0]
	pin, err := hubtls.Pin(&cert)
	if err != nil {
		t.Fatal(err)
	}
	h.Pin = pin
	return h
}

// staff is a browser-like client: a cookie jar and this hub's Origin.
type staff struct {
	t    testing.TB
	hub  *testHub
	c    *http.Client
	base string
}

func (h *testHub) client(t testing.TB) *staff {
	jar, _ := cookiejar.New(nil)
	c := new(http.Client)
	*c = *h.Srv.Client() // its own jar: Client() is shared
	c.Jar = jar
	c.Timeout = 30 * time.Second
	return &staff{t: t, hub: h, c: c, base: h.URL}
}

// do sends a request (JSON body unless []byte) and decodes into out; it
// returns the status.
func (s *staff) do(method, path string, body, out any) int {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, s.base+path, rd)
	req.Header.Set("Origin", s.base)
	resp, err := s.c.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil && resp.StatusCode < 300 {
			s.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return resp.StatusCode
}

func (s *staff) login(user, pw string) {
	s.t.Helper()
	if code := s.do("POST", "/api/v1/admin/login", map[string]string{"user": user, "password": pw}, nil); code != 200 {
		s.t.Fatalf("login %s: %d", user, code)
	}
}

func mustAccount(t testing.TB, st hub.Store, user, role, school string) string {
	t.Helper()
	pw := "pw-" + user + "-long-enough"
	if err := cityadmin.PutAccount(context.Background(), st, cityadmin.AccountRequest{User: user, Password: pw, Role: role, School: school}, time.Now()); err != nil {
		t.Fatal(err)
	}
	return pw
}

// keyID is a real ed25519 edge identity.
type keyID struct {
	id   string
	priv ed25519.PrivateKey
}

func (k *keyID) EdgeID() string       { return k.id }
func (k *keyID) Sign(m []byte) []byte { return ed25519.Sign(k.priv, m) }
func (k *keyID) Public() []byte       { return k.priv.Public().(ed25519.PublicKey) }

// testEdge is an edge's sync side: real bbolt, outbox and uplink.
type testEdge struct {
	DB  *bolt.DB
	Ob  *outbox.Outbox
	Key *keyID

	mu      sync.Mutex
	applied map[string][]byte // kind -> last downlink document
}

func newEdge(t testing.TB) *testEdge {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "edge.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return errors.Join(outbox.Migrate(tx), uplink.Migrate(tx)) }); err != nil {
		t.Fatal(err)
	}
	ob := outbox.New(outbox.Config{DB: db})
	t.Cleanup(func() { _ = ob.Close(); _ = db.Close() })
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	return &testEdge{DB: db, Ob: ob, Key: &keyID{id: identity.IDFromKey(priv.Public().(ed25519.PublicKey)), priv: priv}, applied: map[string][]byte{}}
}

func (e *testEdge) uplink(url string) *uplink.Uplink {
	return uplink.New(uplink.Config{Hub: url, DB: e.DB, Outbox: e.Ob, Identity: e.Key, Logger: quiet(),
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Apply: func(_ *bolt.Tx, kind string, data []byte) error {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.applied[kind] = bytes.Clone(data)
			return nil
		}})
}

func (e *testEdge) doc(kind string) []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.applied[kind]
}

var _ = tls.VersionTLS13
