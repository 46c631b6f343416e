package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/sync/outbox"
	"github.com/campusedge/campusedge/sync/uplink"
)

// cli runs one cityhub command and returns its exit code, stdout, stderr.
func cli(ctx context.Context, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb, nil)
	return code, out.String(), errb.String()
}

// liveHub is a cityhub serving for a test, started by run as main runs
// it; its log is printed if the test fails.
type liveHub struct {
	t           *testing.T
	ctx         context.Context
	data        string
	plain, tls  net.Addr
	cancel      func()
	served      chan int
	stopped     bool
	mu          sync.Mutex
	log         bytes.Buffer
	stoppedCode int
}

// runHub serves a hub on data, listening on listen (HTTPS beside it);
// extra flags come before -listen. The test's end stops it.
func runHub(ctx context.Context, t *testing.T, data, listen string, extra ...string) *liveHub {
	t.Helper()
	sctx, cancel := context.WithCancel(ctx)
	h := &liveHub{t: t, ctx: ctx, data: data, cancel: cancel, served: make(chan int, 1)}
	type addrs struct{ plain, tls net.Addr }
	ready := make(chan addrs, 1)
	args := append(append([]string{"-data", data}, extra...), "-listen", listen)
	go func() {
		h.served <- run(sctx, args, io.Discard, lockedWriter{&h.mu, &h.log}, func(p, s net.Addr) { ready <- addrs{p, s} })
	}()
	select {
	case a := <-ready:
		h.plain, h.tls = a.plain, a.tls
	case code := <-h.served:
		cancel()
		t.Fatalf("hub exited %d:\n%s", code, h.logText())
	}
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("hub log:\n%s", h.logText())
		}
	})
	return h
}

func (h *liveHub) logText() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.log.String()
}

// stop stops the hub and returns its exit code.
func (h *liveHub) stop() int {
	if !h.stopped {
		h.cancel()
		h.stoppedCode, h.stopped = <-h.served, true
	}
	return h.stoppedCode
}

// exited reports a hub that stopped by itself (not by stop).
func (h *liveHub) exited() (int, bool) {
	select {
	case code := <-h.served:
		h.stoppedCode, h.stopped = code, true
		return code, true
	default:
		return 0, false
	}
}

// base is the hub's HTTPS URL.
func (h *liveHub) base() string { return "https://" + h.tls.String() }

// cli runs a cityhub command on the hub's -data (through its admin API
// while it serves) and fails the test on a non-zero exit.
func (h *liveHub) cli(args ...string) string {
	h.t.Helper()
	code, out, errs := cli(h.ctx, append([]string{"-data", h.data}, args...)...)
	if code != 0 {
		h.t.Fatalf("cityhub %v: exit %d: %s", args, code, errs)
	}
	return strings.TrimSpace(out)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// schoolEdge is the sync side of a school edge as edged runs it: its own
// bbolt file, outbox and uplink, enrolled at the hub with a token.
type schoolEdge struct {
	db  *bolt.DB
	ob  *outbox.Outbox
	key edgeKey
	enr uplink.Enrolment
}

// enrolEdge makes an edge and enrols it at hub (an https URL) with tok.
func enrolEdge(ctx context.Context, t *testing.T, hub, tok string) *schoolEdge {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "edge.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { return errors.Join(outbox.Migrate(tx), uplink.Migrate(tx)) }); err != nil {
		t.Fatal(err)
	}
	ob := outbox.New(outbox.Config{DB: db})
	t.Cleanup(func() { ob.Close() })
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	e := &schoolEdge{db: db, ob: ob, key: edgeKey{priv}}
	if e.enr, err = uplink.Enrol(ctx, db, nil, hub, tok, e.key, nil); err != nil {
		t.Fatal(err)
	}
	return e
}

// uplink is the edge's uplink to hub; apply receives downlink documents.
func (e *schoolEdge) uplink(hub string, pull time.Duration, apply func(tx *bolt.Tx, kind string, data []byte) error) *uplink.Uplink {
	if apply == nil {
		apply = func(*bolt.Tx, string, []byte) error { return nil }
	}
	return uplink.New(uplink.Config{Hub: hub, DB: e.db, Outbox: e.ob, Identity: e.key, PullEvery: pull,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Apply: apply})
}
