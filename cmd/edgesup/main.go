// Command edgesup is the CampusEdge firmware supervisor: it runs the active
// A/B slot's edged, commits a new version once its health check passes,
// and goes back to the previous version when it does not (deadline) or
// when it keeps crashing at start (boot counter). See docs/FIRMWARE.md.
//
//	edgesup -root DIR -keys PUBS [-health URL] [-deadline D] run -- EDGED-ARGS...
//	edgesup -root DIR -keys PUBS install BUNDLE    provision a slot (first install, or by hand)
//	edgesup -root DIR status                      print the slot pointer as JSON
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/campusedge/campusedge/edge/buildinfo"
	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/slot"
	"github.com/campusedge/campusedge/firmware/supervisor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edgesup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "/var/lib/campusedge/firmware", "firmware `dir`: slots a/ and b/ and state.json")
	keys := fs.String("keys", "/etc/campusedge/release-keys", "trusted release public key `files` or directories, comma-separated")
	health := fs.String("health", "http://127.0.0.1:8080/healthz", "edged's health `URL`")
	deadline := fs.Duration("deadline", defaultDeadline, "how long a new version has to become healthy before the previous one comes back")
	maxBoots := fs.Int("max-boots", slot.DefaultMaxBoots, "starts a new version gets before it is abandoned")
	backoff := fs.Duration("backoff", defaultMinBackoff, "first wait before restarting a crashed edged (doubles up to 30s)")
	target := fs.String("target", runtime.GOOS+"-"+runtime.GOARCH, "this device's firmware `target` (install)")
	edgeID := fs.String("edge-id", "", "this edge's `id` (GET /api/v1/edge), for install: a signed rollback bundle installs only on the edges it names")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage:\n  edgesup [flags] run -- EDGED-ARGS...\n  edgesup [flags] install BUNDLE\n  edgesup [flags] status\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := fs.Args()
	cmd := "run"
	if len(rest) > 0 {
		cmd, rest = rest[0], rest[1:]
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "edgesup")
	be, err := slot.NewDir(*root)
	if err != nil {
		fmt.Fprintln(stderr, "edgesup:", err)
		return 1
	}
	if cmd == "status" {
		st, err := slot.NewManager(be, nil, *maxBoots).State()
		if err != nil {
			fmt.Fprintln(stderr, "edgesup:", err)
			return 1
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
		return 0
	}
	ring, err := bundle.LoadKeyring(strings.Split(*keys, ",")...)
	if err != nil {
		fmt.Fprintln(stderr, "edgesup:", err)
		return 2
	}
	m := slot.NewManager(be, ring, *maxBoots)
	switch cmd {
	case "install":
		if len(rest) != 1 {
			fmt.Fprintln(stderr, "edgesup: usage: edgesup -root DIR -keys PUBS install BUNDLE")
			return 2
		}
		return install(ctx, m, rest[0], *target, *edgeID, stdout, stderr)
	case "run":
		if len(rest) > 0 && rest[0] == "--" {
			rest = rest[1:]
		}
		err := supervisor.Run(ctx, supervisor.Config{Slots: m, Args: rest, HealthURL: *health, Deadline: *deadline,
			MinBackoff: *backoff, Logger: log})
		if err != nil {
			log.Error("supervisor stopped", "err", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(stderr, "edgesup: unknown command %q (run, install, status)\n", cmd)
		return 2
	}
}

// Defaults of the run flags.
const (
	defaultDeadline   = 90 * time.Second
	defaultMinBackoff = time.Second
)

func install(ctx context.Context, m *slot.Manager, path, target, edgeID string, stdout, stderr io.Writer) int {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(stderr, "edgesup install:", err)
		return 1
	}
	defer f.Close()
	pol, err := m.Policy(buildinfo.Product, target)
	if err != nil {
		fmt.Fprintln(stderr, "edgesup install:", err)
		return 1
	}
	// As the updater: a version not newer than the running one, one that
	// failed here or one below the floor installs only as a signed
	// rollback naming this edge, before it expires.
	pol.Edge, pol.Now = edgeID, time.Now()
	r, err := bundle.Open(bufio.NewReaderSize(f, 1<<20), m.Keyring(), pol)
	if err != nil {
		fmt.Fprintln(stderr, "edgesup install:", err)
		return 1
	}
	s, err := m.Install(ctx, r)
	if err != nil {
		fmt.Fprintln(stderr, "edgesup install:", err)
		return 1
	}
	if err := m.Switch(s); err != nil {
		fmt.Fprintln(stderr, "edgesup install:", err)
		return 1
	}
	fmt.Fprintf(stdout, "installed %s into slot %s; it runs on trial at the next start of edgesup\n", r.Manifest().Version, s)
	return 0
}
