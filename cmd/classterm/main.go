// Command classterm is the classroom terminal agent: it finds the school's
// edge (mDNS on its segment, then unicast DNS-SD in the search domains of
// resolv.conf, then campusedge.<domain>; -diagnose says what each found),
// pairs once with a code from the admin console, and then stays
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
	"github.com/campusedge/campusedge/edge/discovery"
	"github.com/campusedge/campusedge/edge/termagent"
)

func main() {
	os.Exit(run())
}

// options are classterm's flags.
type options struct {
	dataDir, edgeURL, pair, name, iface string
	discoverTimeout                     time.Duration
	version, logLevel                   string
	model, fwRoot, fwKeys               string
	caFile                              string
	resolvConf                          string
	mdnsTimeout, dnsTimeout             time.Duration
	diagnose, findOnly                  bool
	kiosk                               bool
	chromium                            string
	grantMedia                          bool
	kioskFlags                          stringList
}

// parseFlags parses args; flag.ErrHelp for -h.
func parseFlags(args []string) (*options, error) {
	o := &options{}
	fset := flag.NewFlagSet("classterm", flag.ContinueOnError)
	fset.StringVar(&o.dataDir, "data", "./classterm-data", "data `dir` holding the terminal credential (terminal.json)")
	fset.StringVar(&o.edgeURL, "edge", "", "edge base `URL` (e.g. https://10.1.2.3:8443; http://HOST:PORT means https://HOST:8443 unless HOST is loopback); default: find it by DNS-SD")
	fset.StringVar(&o.pair, "pair", "", "6-digit pairing `code` from the admin console; pairs (or re-pairs) this terminal")
	fset.StringVar(&o.name, "name", "", "terminal `name` shown in the console (default: host name)")
	fset.StringVar(&o.iface, "iface", "", "network `interface` for DNS-SD discovery (default: all)")
	fset.DurationVar(&o.discoverTimeout, "discover-timeout", 10*time.Second, "how long to look for the edge by DNS-SD")
	fset.StringVar(&o.resolvConf, "resolv-conf", "/etc/resolv.conf", "resolv.conf `file` whose search domains and DNS servers unicast DNS-SD uses (DHCP fills it)")
	fset.DurationVar(&o.mdnsTimeout, "mdns-timeout", 1500*time.Millisecond, "how long the mDNS step waits before unicast DNS-SD is tried")
	fset.DurationVar(&o.dnsTimeout, "dns-timeout", 4*time.Second, "bound of each unicast DNS-SD step (one search domain)")
	fset.BoolVar(&o.findOnly, "find", false, "find the edge as a terminal would (mDNS, unicast DNS-SD, campusedge.<domain>), print its https URL and exit")
	fset.BoolVar(&o.diagnose, "diagnose", false, "print what each discovery method (mDNS, unicast DNS-SD, campusedge.<domain>) found or why it failed, and exit")
	fset.StringVar(&o.version, "version", buildinfo.Version, "software `version` reported to the edge")
	fset.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	fset.StringVar(&o.model, "model", "", "terminal `model` (firmware images are per model); with -fw-root and -fw-keys the terminal installs the images its edge offers")
	fset.StringVar(&o.fwRoot, "fw-root", "", "firmware slot `dir` of this terminal")
	fset.StringVar(&o.fwKeys, "fw-keys", "", "trusted release public key `files` or directories, comma-separated")
	fset.StringVar(&o.caFile, "ca", "", "PEM `file` of the root that signs the edge's certificate (city-managed terminals): after pairing, trust the edge by that chain and the -edge host name instead of by the key pinned at pairing; only these roots are trusted")
	fset.BoolVar(&o.kiosk, "kiosk", false, "also show the classroom page full screen in Chromium, trusting the edge by the key pinned at pairing, and keep it running")
	fset.StringVar(&o.chromium, "chromium", termagent.DefaultChromium, "Chromium `binary` for -kiosk")
	fset.BoolVar(&o.grantMedia, "kiosk-grant-media", true, "with -kiosk, accept the page's camera and microphone request without a prompt (nobody is at a classroom screen to click Allow)")
	fset.Var(&o.kioskFlags, "kiosk-flag", "extra Chromium `flag` for -kiosk (repeatable), e.g. -kiosk-flag=--headless")
	fset.Usage = func() {
		fmt.Fprintf(fset.Output(), "Usage: classterm -data DIR [-edge URL] [-pair CODE] [-kiosk]\n\nFirst run: classterm -pair 123456 (the code comes from the admin console).\nAfter that: classterm, and it reconnects by itself; classterm -kiosk also\nkeeps the classroom page full screen in Chromium.\n\nFlags:\n")
		fset.PrintDefaults()
	}
	return o, fset.Parse(args)
}

func run() int {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "classterm: -log-level:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var roots *x509.CertPool
	if o.caFile != "" {
		if roots, err = termagent.ReadCAFile(o.caFile); err != nil {
			fmt.Fprintln(os.Stderr, "classterm: -ca:", err)
			return 2
		}
	}
	if o.name == "" {
		o.name, _ = os.Hostname()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.diagnose {
		return o.runDiagnose(ctx, log)
	}
	if o.findOnly {
		u, err := o.find(ctx, log, "")
		if err != nil {
			log.Error("no edge found", "err", err)
			return 1
		}
		fmt.Println(u)
		return 0
	}

	if o.edgeURL != "" {
		u, err := termagent.HTTPSURL(o.edgeURL, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, "classterm: -edge:", err)
			return 2
		}
		if u != o.edgeURL {
			log.Info("using the edge's https address", "given", o.edgeURL, "url", u)
		}
		o.edgeURL = u
	}
	st, ok := o.credential(ctx, log)
	if !ok {
		return 1
	}
	agent := &termagent.Agent{State: st, DataDir: o.dataDir, Version: o.version, Name: o.name, Log: log, Roots: roots}
	if roots != nil {
		log.Info("trusting the edge by CA (-ca): its certificate must chain to the given root and name the edge's host", "ca", o.caFile)
	}
	if o.fwRoot != "" {
		if o.model == "" || o.fwKeys == "" {
			log.Error("-fw-root needs -model and -fw-keys")
			return 2
		}
		if err := withFirmware(agent, o.model, o.fwRoot, o.fwKeys, o.version, o.dataDir, log); err != nil {
			log.Error("firmware", "err", err)
			return 1
		}
	}
	if o.edgeURL == "" {
		agent.Rediscover = func(ctx context.Context, id string) (string, error) { return o.findPinned(ctx, log, id, st.EdgePin) }
	}
	if err := o.runAgent(ctx, agent, log); err != nil {
		log.Error("classterm stopped", "err", err)
		return 1
	}
	return 0
}

// find is the edge's https URL: -edge, or else the edge (with id wantID,
// any with "") found by DNS-SD.
func (o *options) find(ctx context.Context, log *slog.Logger, wantID string) (string, error) {
	return o.findPinned(ctx, log, wantID, "")
}

// findPinned is find for a paired terminal: the edge must also present
// the key pinned at pairing.
func (o *options) findPinned(ctx context.Context, log *slog.Logger, wantID, pin string) (string, error) {
	if o.edgeURL != "" {
		return o.edgeURL, nil
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.discoverTimeout)
	defer cancel()
	r, err := termagent.Find(ctx, o.findOptions(log, wantID, pin, false))
	if err != nil {
		return "", err
	}
	f := r.Found
	log.Info("edge found", "method", r.Method, "url", f.HTTPSURL, "edge_id", f.Info.EdgeID, "school", f.Info.School, "instance", f.Instance, "took", time.Since(start).Round(time.Microsecond))
	return f.HTTPSURL, nil
}

func (o *options) findOptions(log *slog.Logger, wantID, pin string, all bool) termagent.FindOptions {
	return termagent.FindOptions{Iface: o.iface, WantID: wantID, Pin: pin, ResolvConf: o.resolvConf,
		MDNSTimeout: o.mdnsTimeout, DNSTimeout: o.dnsTimeout, All: all, Log: log}
}

// runDiagnose is classterm -diagnose: every method, what it found or why
// not, on stdout. A paired terminal looks for its own edge.
func (o *options) runDiagnose(ctx context.Context, log *slog.Logger) int {
	st, err := termagent.LoadState(o.dataDir)
	if err != nil {
		st = termagent.State{}
		fmt.Printf("not paired (%v): accepting any edge\n", err)
	} else {
		fmt.Printf("paired with edge %s (key pin %s): accepting only that edge\n", st.EdgeID, st.EdgePin)
	}
	if rc, err := discovery.ReadResolvConf(o.resolvConf); err == nil {
		fmt.Printf("%s: search domains %v, DNS servers %v\n", o.resolvConf, rc.Search, rc.Nameservers)
	}
	r, err := termagent.Find(ctx, o.findOptions(log, st.EdgeID, st.EdgePin, true))
	for _, s := range r.Steps {
		name := s.Method
		if s.Domain != "" {
			name += " in " + s.Domain
		}
		if s.Problem != "" {
			fmt.Printf("%-32s FAILED (%s): %s\n", name, s.Took.Round(time.Millisecond), s.Problem)
		} else {
			fmt.Printf("%-32s found %s (%s)\n", name, strings.Join(s.Found, " "), s.Took.Round(time.Millisecond))
		}
	}
	if err != nil {
		fmt.Println("result: no edge found")
		return 1
	}
	fmt.Printf("result: edge %s at %s, by %s\n", r.Found.Info.EdgeID, r.Found.HTTPSURL, r.Method)
	return 0
}

// credential is the terminal's credential: paired now with -pair, else
// the one kept in -data, pointed at -edge when given. It logs why not and
// returns false when there is none to use.
func (o *options) credential(ctx context.Context, log *slog.Logger) (termagent.State, bool) {
	st, err := termagent.LoadState(o.dataDir)
	switch {
	case o.pair != "":
		u, err := o.find(ctx, log, "")
		if err != nil {
			log.Error("cannot pair", "err", err)
			return st, false
		}
		st, err = termagent.Pair(ctx, u, o.pair, o.name, o.version)
		if err != nil {
			log.Error("cannot pair", "err", err)
			return st, false
		}
		if err := termagent.SaveState(o.dataDir, st); err != nil {
			log.Error("cannot keep the credential", "err", err)
			return st, false
		}
		log.Info("paired", "terminal", st.TerminalID, "classroom", st.ClassroomID, "edge_id", st.EdgeID, "edge_pin", st.EdgePin, "credential", o.dataDir+"/"+termagent.StateFile)
	case errors.Is(err, fs.ErrNotExist):
		log.Error("this terminal is not paired yet: run classterm -pair CODE with a code from the admin console", "data", o.dataDir)
		return st, false
	case err != nil:
		log.Error("cannot read the credential", "err", err)
		return st, false
	}
	if o.edgeURL != "" && st.EdgeURL != o.edgeURL {
		if strings.HasPrefix(o.edgeURL, "https:") && st.EdgePin == "" {
			log.Error("this terminal was paired without learning the edge's key: pair again with -pair CODE over https", "edge", o.edgeURL)
			return st, false
		}
		st.EdgeURL = o.edgeURL
	}
	return st, true
}

// runAgent runs the agent until ctx ends, and with -kiosk the kiosk
// browser beside it.
func (o *options) runAgent(ctx context.Context, agent *termagent.Agent, log *slog.Logger) error {
	if !o.kiosk {
		return agent.Run(ctx)
	}
	st := agent.State
	k := &termagent.Kiosk{Log: log, Options: termagent.KioskOptions{Chromium: o.chromium, EdgeURL: st.EdgeURL, Pin: st.EdgePin,
		Token: st.Token, DataDir: o.dataDir, GrantMedia: o.grantMedia, Extra: o.kioskFlags}}
	// The agent and the kiosk browser live and stop together.
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	kdone := make(chan error, 1)
	go func() { kdone <- k.Run(kctx) }()
	aerr := agent.Run(kctx)
	kcancel()
	kerr := <-kdone
	return errors.Join(aerr, kerr)
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
