// Command classterm is the classroom terminal agent: it finds the school's
// edge, pairs once with a code from the admin console, and then stays
// connected by itself. Pairing over https learns the edge's TLS key, bound
// to the code (edge/pairing), and every later connection requires that key.
// With -ca (city-managed terminals) the agent instead trusts the edge by
// its certificate chain to the city's root and by host name, so a city
// that renews edge certificates with new keys needs no re-pairing.
// With -kiosk it also keeps Chromium on the classroom page, trusting the
// edge by the pinned key: nothing to install on the screen. See README.md.
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"strings"
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
	edgeURL := fset.String("edge", "", "edge base `URL` (e.g. https://10.1.2.3:8443; http://HOST:PORT means https://HOST:8443 unless HOST is loopback); default: find it by DNS-SD")
	pair := fset.String("pair", "", "6-digit pairing `code` from the admin console; pairs (or re-pairs) this terminal")
	name := fset.String("name", "", "terminal `name` shown in the console (default: host name)")
	iface := fset.String("iface", "", "network `interface` for DNS-SD discovery (default: all)")
	discoverTimeout := fset.Duration("discover-timeout", 10*time.Second, "how long to look for the edge by DNS-SD")
	version := fset.String("version", buildinfo.Version, "software `version` reported to the edge")
	logLevel := fset.String("log-level", "info", "log `level`: debug, info, warn, error")
	model := fset.String("model", "", "terminal `model` (firmware images are per model); with -fw-root and -fw-keys the terminal installs the images its edge offers")
	fwRoot := fset.String("fw-root", "", "firmware slot `dir` of this terminal")
	fwKeys := fset.String("fw-keys", "", "trusted release public key `files` or directories, comma-separated")
	caFile := fset.String("ca", "", "PEM `file` of the root that signs the edge's certificate (city-managed terminals): after pairing, trust the edge by that chain and the -edge host name instead of by the key pinned at pairing; only these roots are trusted")
	kiosk := fset.Bool("kiosk", false, "also show the classroom page full screen in Chromium, trusting the edge by the key pinned at pairing, and keep it running")
	chromium := fset.String("chromium", termagent.DefaultChromium, "Chromium `binary` for -kiosk")
	grantMedia := fset.Bool("kiosk-grant-media", true, "with -kiosk, accept the page's camera and microphone request without a prompt (nobody is at a classroom screen to click Allow)")
	var kioskFlags stringList
	fset.Var(&kioskFlags, "kiosk-flag", "extra Chromium `flag` for -kiosk (repeatable), e.g. -kiosk-flag=--headless")
	fset.Usage = func() {
		fmt.Fprintf(fset.Output(), "Usage: classterm -data DIR [-edge URL] [-pair CODE] [-kiosk]\n\nFirst run: classterm -pair 123456 (the code comes from the admin console).\nAfter that: classterm, and it reconnects by itself; classterm -kiosk also\nkeeps the classroom page full screen in Chromium.\n\nFlags:\n")
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
	var roots *x509.CertPool
	if *caFile != "" {
		var err error
		if roots, err = termagent.ReadCAFile(*caFile); err != nil {
			fmt.Fprintln(os.Stderr, "classterm: -ca:", err)
			return 2
		}
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *edgeURL != "" {
		u, err := termagent.HTTPSURL(*edgeURL, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, "classterm: -edge:", err)
			return 2
		}
		if u != *edgeURL {
			log.Info("using the edge's https address", "given", *edgeURL, "url", u)
		}
		*edgeURL = u
	}
	find := func(wantID string) (string, error) {
		if *edgeURL != "" {
			return *edgeURL, nil
		}
		start := time.Now()
		f, err := termagent.Discover(ctx, log, *iface, wantID, *discoverTimeout)
		if err != nil {
			return "", err
		}
		log.Info("edge found", "url", f.HTTPSURL, "http_url", f.URL, "edge_id", f.Info.EdgeID, "school", f.Info.School, "instance", f.Instance, "took", time.Since(start).Round(time.Microsecond))
		return f.HTTPSURL, nil
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
		log.Info("paired", "terminal", st.TerminalID, "classroom", st.ClassroomID, "edge_id", st.EdgeID, "edge_pin", st.EdgePin, "credential", *dataDir+"/"+termagent.StateFile)
	case errors.Is(err, fs.ErrNotExist):
		log.Error("this terminal is not paired yet: run classterm -pair CODE with a code from the admin console", "data", *dataDir)
		return 1
	case err != nil:
		log.Error("cannot read the credential", "err", err)
		return 1
	}
	if *edgeURL != "" && st.EdgeURL != *edgeURL {
		if strings.HasPrefix(*edgeURL, "https:") && st.EdgePin == "" {
			log.Error("this terminal was paired without learning the edge's key: pair again with -pair CODE over https", "edge", *edgeURL)
			return 1
		}
		st.EdgeURL = *edgeURL
	}
	agent := &termagent.Agent{State: st, DataDir: *dataDir, Version: *version, Name: *name, Log: log, Roots: roots}
	if roots != nil {
		log.Info("trusting the edge by CA (-ca): its certificate must chain to the given root and name the edge's host", "ca", *caFile)
	}
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
	if !*kiosk {
		if err := agent.Run(ctx); err != nil {
			log.Error("classterm stopped", "err", err)
			return 1
		}
		return 0
	}
	k := &termagent.Kiosk{Log: log, Options: termagent.KioskOptions{Chromium: *chromium, EdgeURL: st.EdgeURL, Pin: st.EdgePin,
		Token: st.Token, DataDir: *dataDir, GrantMedia: *grantMedia, Extra: kioskFlags}}
	// The agent and the kiosk browser live and stop together.
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	kdone := make(chan error, 1)
	go func() { kdone <- k.Run(kctx) }()
	aerr := agent.Run(kctx)
	kcancel()
	kerr := <-kdone
	if err := errors.Join(aerr, kerr); err != nil {
		log.Error("classterm stopped", "err", err)
		return 1
	}
	return 0
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
