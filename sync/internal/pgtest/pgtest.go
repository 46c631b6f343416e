// Package pgtest gives sync tests a real PostgreSQL: the server named by
// $CAMPUSEDGE_TEST_PG (a postgres:// URL), or else a throw-away cluster it
// creates with Debian's initdb/pg_ctl in a temp dir (as the postgres user
// when running as root), listening on 127.0.0.1 only. Every caller gets a
// fresh database. Without PostgreSQL the test is skipped, or fails under
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
	bin := filepath.Dir(bins[len(bins)-1])
	dir, err := os.MkdirTemp("", "campusedge-pg-")
	if err != nil {
		return nil, err
	}
	var prefix []string
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root: own the dir by postgres and run as it.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root and no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		prefix = []string{"runuser", "-u", "postgres", "--"}
	}
	run := func(args ...string) error {
		full := append(append([]string{}, prefix...), args...)
		out, err := exec.Command(full[0], full[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w: %s", filepath.Base(args[0]), err, out)
		}
		return nil
	}
	data := filepath.Join(dir, "data")
	if err := run(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=200 -c shared_buffers=32MB", port, dir)
	if err := run(filepath.Join(bin, "pg_ctl"), "-D", data, "-l", filepath.Join(dir, "log"), "-o", opts, "-w", "-t", "60", "start"); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return &Server{
		URL: func(db string) string {
			return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, db)
		},
		stop: func() {
			_ = run(filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
			_ = os.RemoveAll(dir)
		},
	}, nil
}
