// Command classterm is the headless classroom terminal agent: it finds the
// school's edge, pairs once with a code from the admin console, and then
// stays connected by itself. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/campusedge/campusedge/edge/buildinfo"
	"github.com/campusedge/campusedge/edge/termagent"
)

func main() {
	os.Exit(run())
}

func run() int {
	fset := flag.NewFlagSet("classterm", flag.ContinueOnError)
	dataDir := fset.String("data", "./classterm-data", "data `dir` holding the terminal credential (terminal.json)")
	edgeURL := fset.String("edge", "", "edge base `URL` (e.g. http://10.1.2.3:8080); default: find it by DNS-SD")
	pair := fset.String("pair", "", "6-digit pairing `code` from the admin console; pairs (or re-pairs) this terminal")
	name := fset.String("name", "", "terminal `name` shown in the console (default: host name)")
	iface := fset.String("iface", "", "network `interface` for DNS-SD discovery (default: all)")
	discoverTimeout := fset.Duration("discover-timeout", 10*time.Second, "how long to look for the edge by DNS-SD")
	version := fset.String("version", buildinfo.Version, "software `version` reported to the edge")
	logLevel := fset.String("log-level", "info", "log `level`: debug, info, warn, error")
	model := fset.String("model", "", "terminal `model` (firmware images are per model); with -fw-root and -fw-keys the terminal installs the images its edge offers")
	fwRoot := fset.String("fw-root", "", "firmware slot `dir` of this terminal")
	fwKeys := fset.String("fw-keys", "", "trusted release public key `files` or directories, comma-separated")
	fset.Usage = func() {
		fmt.Fprintf(fset.Output(), "Usage: classterm -data DIR [-edge URL] [-pair CODE]\n\nFirst run: classterm -pair 123456 (the code comes from the admin console).\nAfter that: classterm, and it reconnects by itself.\n\nFlags:\n")
		fset.PrintDefaults()
	}
	if err := fset.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "classterm: -log-level:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *name == "" {
		*name, _ = os.Hostname()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	find := func(wantID string) (string, error) {
		if *edgeURL != "" {
			return *edgeURL, nil
		}
		start := time.Now()
		f, err := termagent.Discover(ctx, log, *iface, wantID, *discoverTimeout)
		if err != nil {
			return "", err
		}
		log.Info("edge found", "url", f.URL, "edge_id", f.Info.EdgeID, "school", f.Info.School, "instance", f.Instance, "took", time.Since(start).Round(time.Microsecond))
		return f.URL, nil
	}

	st, err := termagent.LoadState(*dataDir)
	switch {
	case *pair != "":
		u, err := find("")
		if err != nil {
			log.Error("cannot pair", "err", err)
			return 1
		}
		st, err = termagent.Pair(ctx, u, *pair, *name, *version)
		if err != nil {
			log.Error("cannot pair", "err", err)
			return 1
		}
		if err := termagent.SaveState(*dataDir, st); err != nil {
			log.Error("cannot keep the credential", "err", err)
			return 1
		}
		log.Info("paired", "terminal", st.TerminalID, "classroom", st.ClassroomID, "edge_id", st.EdgeID, "credential", *dataDir+"/"+termagent.StateFile)
	case errors.Is(err, fs.ErrNotExist):
		log.Error("this terminal is not paired yet: run classterm -pair CODE with a code from the admin console", "data", *dataDir)
		return 1
	case err != nil:
		log.Error("cannot read the credential", "err", err)
		return 1
	}
	if *edgeURL != "" && st.EdgeURL != *edgeURL {
		st.EdgeURL = *edgeURL
	}
	agent := &termagent.Agent{State: st, DataDir: *dataDir, Version: *version, Name: *name, Log: log}
	if *fwRoot != "" {
		if *model == "" || *fwKeys == "" {
			log.Error("-fw-root needs -model and -fw-keys")
			return 2
		}
		if err := withFirmware(agent, *model, *fwRoot, *fwKeys, *version, *dataDir, log); err != nil {
			log.Error("firmware", "err", err)
			return 1
		}
	}
	if *edgeURL == "" {
		agent.Rediscover = func(ctx context.Context, id string) (string, error) { return find(id) }
	}
	if err := agent.Run(ctx); err != nil {
		log.Error("classterm stopped", "err", err)
		return 1
	}
	return 0
}
