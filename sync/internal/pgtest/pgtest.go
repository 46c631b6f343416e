// Package pgtest gives sync tests a real PostgreSQL: the server named by
// $CAMPUSEDGE_TEST_PG (a postgres:// URL), or else a throw-away cluster it
// creates with Debian's initdb and postgres in a temp dir (as the postgres
// user when running as root; the server is a child that dies with the test
// binary), listening on 127.0.0.1 only. Every caller gets a fresh database. Without PostgreSQL the test is skipped, or fails under
// CI=true, so a missing server can never pass as green.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a running cluster.
type Server struct {
	URL  func(db string) string
	stop func()
}

var (
	once   sync.Once
	srv    *Server
	srvErr error
)

func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: refusing to skip)", reason)
	}
	t.Skip(reason)
}

// DB returns the URL of a new, empty database on the shared test server.
func DB(t testing.TB) string {
	t.Helper()
	once.Do(func() { srv, srvErr = start() })
	if srvErr != nil {
		skipOrFail(t, "PostgreSQL not available: "+srvErr.Error()+" (install Debian's postgresql or set CAMPUSEDGE_TEST_PG)")
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "t_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, srv.URL("postgres"))
	if err != nil {
		t.Fatalf("connect to test PostgreSQL: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	return srv.URL(name)
}

// Stop stops a cluster this package started (call from TestMain).
func Stop() {
	if srv != nil && srv.stop != nil {
		srv.stop()
	}
}

// start connects to $CAMPUSEDGE_TEST_PG, or else starts a throw-away
// cluster.
func start() (*Server, error) {
	if u := os.Getenv("CAMPUSEDGE_TEST_PG"); u != "" {
		cfg, err := pgx.ParseConfig(u)
		if err != nil {
			return nil, fmt.Errorf("CAMPUSEDGE_TEST_PG: %w", err)
		}
		return &Server{URL: func(db string) string {
			return fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Password, cfg.Host, cfg.Port, db)
		}}, nil
	}
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		return nil, fmt.Errorf("initdb not found under /usr/lib/postgresql")
	}
	dir, err := os.MkdirTemp("", "campusedge-pg-")
	if err != nil {
		return nil, err
	}
	s, err := startCluster(filepath.Dir(bins[len(bins)-1]), dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// startCluster creates a cluster in dir with the PostgreSQL binaries in
// bin, starts its server on a free port of 127.0.0.1 and waits until it
// takes connections.
func startCluster(bin, dir string) (*Server, error) {
	cred, err := serverCredential(dir)
	if err != nil {
		return nil, err
	}
	command := func(name string, args ...string) *exec.Cmd {
		c := exec.Command(filepath.Join(bin, name), args...)
		// The server is our child, not a pg_ctl daemon: if the test binary
		// dies (timeout, kill), the server gets SIGQUIT and goes with it.
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
		return c
	}
	data := filepath.Join(dir, "data")
	if out, err := command("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return nil, err
	}
	srvCmd := command("postgres", "-D", data, "-c", "listen_addresses=127.0.0.1", "-p", strconv.Itoa(port),
		"-k", dir, "-c", "max_connections=200", "-c", "shared_buffers=32MB")
	srvCmd.Stdout, srvCmd.Stderr = logf, logf
	if err := srvCmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = srvCmd.Wait(); close(exited) }()
	stop := func() {
		_ = srvCmd.Process.Signal(syscall.SIGQUIT) // immediate shutdown: test data only
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = srvCmd.Process.Kill()
			<-exited
		}
		_ = logf.Close()
		_ = os.RemoveAll(dir)
	}
	url := func(db string) string {
		return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, db)
	}
	if err := waitReady(url("postgres"), exited, filepath.Join(dir, "log")); err != nil {
		stop()
		return nil, err
	}
	return &Server{URL: url, stop: stop}, nil
}

// serverCredential is who the server runs as: PostgreSQL refuses to run
// as root, so as root it chowns dir to the postgres user and runs as that
// user; otherwise nil, as ourselves.
func serverCredential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root and no postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// waitReady polls url until the server takes a connection, for at most
// 30 s; if the server exits first, the error carries its log.
func waitReady(url string, exited <-chan struct{}, logPath string) error {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, url)
		cancel()
		if err == nil {
			_ = c.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("postgres exited at start: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready in 30 s: %w", err)
		}
	}
}
