package uplink_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/identity"
	"github.com/campusedge/campusedge/edge/token"
	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/outbox"
	"github.com/campusedge/campusedge/sync/uplink"
)

// testHub is a real cityhub sync server on 127.0.0.1 over a real store.
type testHub struct {
	Store hub.Store
	URL   string
	srv   *http.Server
	ln    net.Listener
}

func startHub(t testing.TB, st hub.Store) *testHub {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &testHub{Store: st, URL: "http://" + ln.Addr().String(), ln: ln}
	h.srv = &http.Server{Handler: hub.NewServer(hub.Config{Store: st, Logger: quiet()}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = h.srv.Serve(ln) }()
	t.Cleanup(func() { h.Stop() })
	return h
}

// Stop closes the server and its connections (a hub crash as the edge sees it).
func (h *testHub) Stop() { _ = h.srv.Close() }

func quiet() *slog.Logger {
	if os.Getenv("SYNC_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func openBoltHub(t testing.TB, dir string) *hub.BoltStore {
	t.Helper()
	st, err := hub.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// keyID is a test edge identity: a real ed25519 key.
type keyID struct {
	id   string
	priv ed25519.PrivateKey
}

func newKey(t testing.TB) *keyID {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	return &keyID{id: identity.IDFromKey(pub), priv: priv}
}
func (k *keyID) EdgeID() string       { return k.id }
func (k *keyID) Sign(m []byte) []byte { return ed25519.Sign(k.priv, m) }
func (k *keyID) Public() []byte       { return k.priv.Public().(ed25519.PublicKey) }

// testEdge is an edge's sync side over a real bbolt file.
type testEdge struct {
	DB  *bolt.DB
	Ob  *outbox.Outbox
	Key *keyID
	dir string
}

func newEdge(t testing.TB, clock outbox.Clock) *testEdge {
	t.Helper()
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "edge.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return errors.Join(outbox.Migrate(tx), uplink.Migrate(tx)) }); err != nil {
		t.Fatal(err)
	}
	ob := outbox.New(outbox.Config{DB: db, Clock: clock})
	t.Cleanup(func() { _ = ob.Close(); _ = db.Close() })
	return &testEdge{DB: db, Ob: ob, Key: newKey(t), dir: dir}
}

// enrol creates the school if needed and enrols the edge through the API.
func enrol(t testing.TB, st hub.Store, url, school string, e *testEdge) uplink.Enrolment {
	t.Helper()
	ctx := context.Background()
	if err := st.CreateSchool(ctx, hub.School{Code: school, Name: "School " + school, Created: time.Now()}); err != nil && !errors.Is(err, hub.ErrExists) {
		t.Fatal(err)
	}
	tok := token.New()
	if err := st.CreateEnrolToken(ctx, school, token.Digest(tok), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	en, err := uplink.Enrol(ctx, e.DB, nil, url, tok, e.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return en
}

func (e *testEdge) uplink(url string, client *http.Client) *uplink.Uplink {
	return uplink.New(uplink.Config{Hub: url, DB: e.DB, Outbox: e.Ob, Identity: e.Key, Client: client, Logger: quiet(),
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxRecords: 200})
}

// hubRecords returns the hub's records of a school keyed by id, failing on
// any (edge, seq) or id held twice.
func hubRecords(t testing.TB, st hub.Store, school string) map[string]hub.StoredRecord {
	t.Helper()
	out := map[string]hub.StoredRecord{}
	seqs := map[string]bool{}
	err := st.Records(context.Background(), school, func(r hub.StoredRecord) error {
		if _, dup := out[r.ID]; dup {
			t.Fatalf("hub holds record id %s twice", r.ID)
		}
		k := fmt.Sprintf("%s/%d", r.Edge, r.Seq)
		if seqs[k] {
			t.Fatalf("hub holds edge %s seq %d twice", r.Edge, r.Seq)
		}
		seqs[k] = true
		out[r.ID] = r
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitDrained runs until the outbox is empty and acknowledged to last.
func waitDrained(t testing.TB, e *testEdge, last uint64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		st, err := e.Ob.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.AckedSeq >= last && st.Backlog == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, _ := e.Ob.Stats()
	t.Fatalf("outbox not drained in %s: %+v (want acked %d)", within, st, last)
}

func hashTok(tok string) []byte { return token.Digest(tok) }

func enrolWith(ctx context.Context, e *testEdge, url, tok string) (uplink.Enrolment, error) {
	return uplink.Enrol(ctx, e.DB, nil, url, tok, e.Key, nil)
}

func uplinkWith(e *testEdge, url string, rateBytes int) *uplink.Uplink {
	return uplink.New(uplink.Config{Hub: url, DB: e.DB, Outbox: e.Ob, Identity: e.Key, Logger: quiet(), MaxRecords: 10, RateBytes: rateBytes})
}
