package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/identity"
	"github.com/campusedge/campusedge/edge/logtest"
	"github.com/campusedge/campusedge/sync/uplink"
	"github.com/campusedge/campusedge/sync/wire"
)

type edgeKey struct{ priv ed25519.PrivateKey }

func (k edgeKey) EdgeID() string       { return identity.IDFromKey(k.priv.Public().(ed25519.PublicKey)) }
func (k edgeKey) Sign(m []byte) []byte { return ed25519.Sign(k.priv, m) }
func (k edgeKey) Public() []byte       { return k.priv.Public().(ed25519.PublicKey) }

// TestHTTPSAndPinnedToken: enrol-token prints SECRET~PIN whose pin is the
// key cityhub then serves on -https-listen (logged like the plain
// listener); an edge enrols over HTTPS with it; TLS 1.1 is refused.
func TestHTTPSAndPinnedToken(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "hub")
	var out, errb bytes.Buffer
	ctx := context.Background()
	if code := run(ctx, []string{"-data", data, "school", "add", "s1", "School One"}, &out, &errb, nil); code != 0 {
		t.Fatalf("school add: %s", errb.String())
	}
	out.Reset()
	if code := run(ctx, []string{"-data", data, "enrol-token", "s1"}, &out, &errb, nil); code != 0 {
		t.Fatalf("enrol-token: %s", errb.String())
	}
	tok := strings.TrimSpace(out.String())
	_, pin, err := wire.ParseEnrolToken(tok)
	if err != nil || pin == "" {
		t.Fatalf("token %q has no pin: %v", tok, err)
	}
	out.Reset()
	run(ctx, []string{"-data", data, "tls-pin"}, &out, &errb, nil)
	if strings.TrimSpace(out.String()) != pin {
		t.Fatalf("tls-pin %q, token pin %q", out.String(), pin)
	}

	sctx, cancel := context.WithCancel(ctx)
	type addrs struct{ plain, tls net.Addr }
	ready := make(chan addrs, 1)
	done := make(chan int, 1)
	var logb logtest.Buffer
	go func() {
		done <- run(sctx, []string{"-data", data, "-listen", "127.0.0.1:0", "-https-listen", "127.0.0.1:0", "-tls-names", "hub.city.test"}, &bytes.Buffer{}, &logb,
			func(p, s net.Addr) { ready <- addrs{p, s} })
	}()
	var a addrs
	select {
	case a = <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("hub did not start")
	}
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exit %d", code)
		}
	}()
	if !strings.Contains(logb.String(), `level=INFO msg="listening https" addr=`+a.tls.String()) {
		t.Fatalf("no https listening line:\n%s", logb.String())
	}
	c, err := tls.Dial("tcp", a.tls.String(), &tls.Config{InsecureSkipVerify: true, ServerName: "hub.city.test"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.ConnectionState().PeerCertificates[0]
	c.Close()
	if certs.SPKIPin(leaf) != pin || leaf.VerifyHostname("hub.city.test") != nil || leaf.VerifyHostname("127.0.0.1") != nil {
		t.Fatalf("served leaf: pin %s (token %s), names %v %v", certs.SPKIPin(leaf), pin, leaf.DNSNames, leaf.IPAddresses)
	}
	if c, err := tls.Dial("tcp", a.tls.String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Fatal("TLS 1.1 accepted")
	}

	db, err := bolt.Open(filepath.Join(dir, "edge.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(uplink.Migrate); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	en, err := uplink.Enrol(ctx, db, nil, "https://"+a.tls.String(), tok, edgeKey{priv}, nil)
	if err != nil || en.HubPin != pin || en.School != "s1" {
		t.Fatalf("enrol over HTTPS: %+v %v", en, err)
	}
}
