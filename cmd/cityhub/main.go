// Command cityhub is the city cloud's side of CampusEdge: sync, the
// catalogue origin that school edges sync micro-lessons from, the firmware
// release channel and the city CA that signs school edges' certificates.
//
//	cityhub -data DIR -listen ADDR        serve over HTTP, and HTTPS on -https-listen
//	cityhub -data DIR import FOLDER       register every file under FOLDER
//	cityhub -data DIR tls-pin             print the pin of the hub's TLS key
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // school time zones (Asia/Shanghai) without the host's zone database

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/store"
	"github.com/campusedge/campusedge/sync/catalog"
	"github.com/campusedge/campusedge/sync/cityadmin"
	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/hubtls"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil))
}

// hubFlags are cityhub's flags; the sync commands and import share -data
// and -db with serving.
type hubFlags struct {
	fs     *flag.FlagSet
	data   *string
	listen *string
	dbURL  *string
	hubURL *string
	hubPin *string
	tls    *tlsFlags

	maxConns     *int
	bodyDeadline *time.Duration
	review       *bool
	healthEvery  *time.Duration
}

func newHubFlags(stderr io.Writer) *hubFlags {
	fs := flag.NewFlagSet("cityhub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &hubFlags{fs: fs}
	f.data = fs.String("data", "./hubdata", "data `dir`: hub.db and blobs; created on first start")
	f.listen = fs.String("listen", ":8090", "HTTP listen `addr`; with 127.0.0.1:0 a free port is picked and logged")
	f.tls = addTLSFlags(fs)
	f.maxConns = fs.Int("max-conns-per-addr", 256, "connections one client address may hold open at once (`N`; 0: no limit, e.g. behind a load balancer; loopback is exempt)")
	f.bodyDeadline = fs.Duration("body-deadline", httpapi.DefaultBodyDeadline, "how long a request body may take to arrive (`duration`); sync batches, uploads and bundles may instead pause at most 60s between reads")
	f.review = fs.Bool("upload-review", true, "hold school uploads for city staff to publish or reject in the console (Uploads panel); false publishes a verified upload at once")
	f.healthEvery = fs.Duration("sync-health-every", time.Minute, "how often this replica adds its sync counts to the city's sync health series and samples the edges (`duration`; the series keeps 5-minute points for 7 days)")
	f.dbURL = fs.String("db", "", "sync store: empty for DATA/sync.db (bbolt), or a `postgres://` URL shared by several cityhub replicas")
	f.hubURL = fs.String("hub", "", "run admin commands through the admin API of the hub at this `URL` (http(s)://HOST:PORT) with the key in $"+apiKeyEnv+"; without it they open the store, or use the running hub of -data when its store is locked")
	f.hubPin = fs.String("hub-pin", "", "with -hub https://…: trust exactly the TLS key with this `pin` (cityhub tls-pin on the hub) instead of the system's roots")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage:\n  cityhub [flags]                 serve the catalogue and sync\n  cityhub [flags] import FOLDER   register media files, print ID<TAB>PATH\n%s\nFlags:\n", syncUsage)
		fs.PrintDefaults()
	}
	return f
}

// run is main without the process: ready, if set, gets the bound
// addresses (https is nil with -https-listen off).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(plain, https net.Addr)) int {
	f := newHubFlags(stderr)
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	rest := f.fs.Args()
	switch {
	case len(rest) == 1 && rest[0] == "tls-pin":
		pin, err := f.tls.pin(*f.data)
		if err != nil {
			fmt.Fprintln(stderr, "cityhub tls-pin:", err)
			return 1
		}
		fmt.Fprintln(stdout, pin)
		return 0
	case len(rest) > 0 && syncCommand(rest[0]) != nil:
		return runAdmin(ctx, f, rest, stdout, stderr)
	case len(rest) > 0 && rest[0] != "import":
		fmt.Fprintf(stderr, "cityhub: unknown command %q (want import FOLDER)\n", rest[0])
		return 2
	case len(rest) > 0 && len(rest) != 2:
		fmt.Fprintln(stderr, "cityhub: usage: cityhub -data DIR import FOLDER")
		return 2
	}
	if len(rest) == 2 && *f.hubURL != "" {
		r, err := newPinnedRemote(*f.hubURL, os.Getenv(apiKeyEnv), *f.hubPin)
		if err != nil {
			fmt.Fprintln(stderr, "cityhub:", err)
			return 2
		}
		return remoteImportFolder(ctx, r, rest[1], stdout, stderr)
	}
	st, err := openCatalogue(ctx, *f.data, *f.dbURL)
	if errors.Is(err, store.ErrInUse) && len(rest) == 2 {
		// A hub serves on this data dir: import through its admin API.
		r, rerr := localRemote(*f.data)
		if rerr != nil {
			fmt.Fprintln(stderr, "cityhub:", err, "(and no admin API files of a running hub:", rerr, ")")
			return 1
		}
		return remoteImportFolder(ctx, r, rest[1], stdout, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "cityhub:", err)
		return 1
	}
	defer st.Close()
	if len(rest) == 2 {
		return importFolder(st, rest[1], stdout, stderr, log)
	}
	return serve(ctx, f, st, stderr, log, ready)
}

// openCatalogue opens the catalogue's records in PostgreSQL when dbURL is
// set (shared by every replica), else in DATA/hub.db; blobs stay under
// DATA/blobs either way.
func openCatalogue(ctx context.Context, data, dbURL string) (*catalog.Store, error) {
	if dbURL == "" {
		return catalog.Open(data)
	}
	if !strings.HasPrefix(dbURL, "postgres://") && !strings.HasPrefix(dbURL, "postgresql://") {
		return nil, fmt.Errorf("-db %q must be a postgres:// URL (or empty for the embedded bbolt store)", dbURL)
	}
	return catalog.OpenPG(ctx, data, dbURL)
}

// runAdmin runs an admin command: through -hub's API; else on the store
// (PostgreSQL, or the bbolt file when no hub holds it); else, when a hub
// on this -data dir holds the file, through that hub's API, so nothing
// has to stop.
func runAdmin(ctx context.Context, f *hubFlags, args []string, stdout, stderr io.Writer) int {
	if *f.hubURL != "" {
		r, err := newPinnedRemote(*f.hubURL, os.Getenv(apiKeyEnv), *f.hubPin)
		if err != nil {
			fmt.Fprintln(stderr, "cityhub:", err)
			return 2
		}
		return runRemote(ctx, r, args, stdout, stderr)
	}
	sst, err := openSyncStore(ctx, *f.data, *f.dbURL)
	if errors.Is(err, store.ErrInUse) {
		r, rerr := localRemote(*f.data)
		if rerr != nil {
			fmt.Fprintln(stderr, "cityhub:", err, "(and no admin API files of a running hub:", rerr, ")")
			return 1
		}
		return runRemote(ctx, r, args, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "cityhub:", err)
		return 1
	}
	defer sst.Close()
	return runSync(ctx, sst, args, stdout, stderr, func() (string, error) { return f.tls.pin(*f.data) })
}

// importFolder registers every media file under folder in the catalogue
// and prints ID<TAB>PATH for each.
func importFolder(st *catalog.Store, folder string, stdout, stderr io.Writer, log *slog.Logger) int {
	n := 0
	err := st.Import(folder, func(im catalog.Imported) {
		n++
		fmt.Fprintf(stdout, "%s\t%s\n", im.Item.ID, im.Path)
	})
	if err != nil {
		fmt.Fprintln(stderr, "cityhub import:", err)
		return 1
	}
	log.Info("import done", "items", n, "folder", folder)
	return 0
}

// serve serves the catalogue, sync, firmware and the city CA over HTTP,
// and HTTPS unless -https-listen is off, until ctx is cancelled.
func serve(ctx context.Context, f *hubFlags, st *catalog.Store, stderr io.Writer, log *slog.Logger, ready func(plain, https net.Addr)) int {
	if *f.healthEvery < time.Second || *f.healthEvery > hub.HealthSlot {
		fmt.Fprintf(stderr, "cityhub: -sync-health-every %s: want 1s to %s\n", *f.healthEvery, hub.HealthSlot)
		return 2
	}
	sst, err := openSyncStore(ctx, *f.data, *f.dbURL)
	if err != nil {
		fmt.Fprintln(stderr, "cityhub:", err)
		return 1
	}
	defer sst.Close()
	ln, err := net.Listen("tcp", *f.listen)
	if err != nil {
		fmt.Fprintf(stderr, "cityhub: listen on %s: %v (choose another with -listen)\n", *f.listen, err)
		return 1
	}
	httpsAddr, err := f.tls.httpsAddr(*f.listen)
	if err != nil {
		_ = ln.Close()
		fmt.Fprintln(stderr, "cityhub:", err)
		return 2
	}
	ca, err := f.tls.cityCA(*f.data, log)
	if err != nil {
		_ = ln.Close()
		fmt.Fprintln(stderr, "cityhub: city CA:", err)
		return 1
	}
	if err := ensureAPIKey(ctx, sst, *f.data, ln.Addr().String()); err != nil {
		_ = ln.Close()
		fmt.Fprintln(stderr, "cityhub: admin API key:", err)
		return 1
	}
	fw, fwConsole, fwClose, err := firmwareHandler(ctx, *f.data, *f.dbURL, log)
	if err != nil {
		fmt.Fprintln(stderr, "cityhub:", err)
		return 1
	}
	defer fwClose()
	staff, staffFile, err := staffToken(*f.data)
	if err != nil {
		fmt.Fprintln(stderr, "cityhub:", err)
		return 1
	}
	log.Info("city staff credential ready", "staff_token_file", staffFile)
	reg := prometheus.NewRegistry()
	admin := cityadmin.New(cityadmin.Config{Store: sst, Catalogue: st, Logger: log.With("component", "admin"),
		Pin: func() (string, error) { return f.tls.pin(*f.data) }, StaffToken: staff, Firmware: fwConsole,
		Reviews: st, Review: *f.review})
	counts := &hub.SyncCounts{}
	hctx, stopHealth := context.WithCancel(ctx)
	healthDone := make(chan struct{})
	go func() {
		defer close(healthDone)
		cityadmin.RecordHealth(hctx, sst, counts, *f.healthEvery, nil, log.With("component", "health"))
	}()
	defer func() { stopHealth(); <-healthDone }()
	admin.Handle("GET /api/v1/admin/schools/{code}/exports/{kind}", exportHandler(sst), hub.RoleCityAdmin, hub.RoleSchoolAdmin)
	cat := catalog.HandlerWith(st, log, catalog.HandlerOptions{Review: *f.review})
	handler, limit := hubLimits(reg, *f.bodyDeadline, *f.maxConns, hubHandler(reg, cat, fw, admin, sst, ca, staff, counts, log))
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(limit.Listener(ln)) }()
	log.Info("listening", "addr", ln.Addr().String(), "data", *f.data)
	var tlsAddr net.Addr
	var hss *http.Server
	if httpsAddr != "" {
		if hss, tlsAddr, err = serveHTTPS(f, httpsAddr, hs, limit, errc, log); err != nil {
			_ = hs.Close()
			fmt.Fprintln(stderr, "cityhub:", err)
			return 1
		}
	} else {
		log.Warn("HTTPS is off (-https-listen off): edges cannot authenticate this hub unless a TLS proxy in front of it serves the pinned key")
	}
	if ready != nil {
		ready(ln.Addr(), tlsAddr)
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		log.Error("HTTP server stopped", "err", err)
		return 1
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	if hss != nil {
		_ = hss.Shutdown(sctx)
	}
	return 0
}

// hubLimits are the hub's connection-level limits: a deadline on every
// request body (a stall limit on the long ones) and a bound on
// connections per client address, each counted in /metrics.
func hubLimits(reg *prometheus.Registry, deadline time.Duration, perAddr int, next http.Handler) (http.Handler, httpapi.ConnLimit) {
	cut := prometheus.NewCounter(prometheus.CounterOpts{Name: "cityhub_http_body_timeouts_total",
		Help: "Request bodies cut off by their read deadline (-body-deadline)."})
	refused := prometheus.NewCounter(prometheus.CounterOpts{Name: "cityhub_http_connections_refused_total",
		Help: "Connections refused because their address had -max-conns-per-addr open."})
	reg.MustRegister(cut, refused)
	h := httpapi.BodyDeadlines{Deadline: deadline, Cut: cut.Inc, Long: func(r *http.Request) bool {
		switch {
		case r.Method == http.MethodPatch && strings.HasPrefix(r.URL.Path, "/api/v1/uploads/"),
			r.Method == http.MethodPost && r.URL.Path == "/api/v1/sync/batch", // a thin school link
			r.Method == http.MethodPost && r.URL.Path == "/api/v1/firmware/releases",
			r.Method == http.MethodPost && r.URL.Path == "/api/v1/admin/catalog/items": // cityhub import of a lesson video
			return true
		}
		return false
	}}.Wrap(next)
	return h, httpapi.ConnLimit{PerAddr: perAddr, ExemptLoopback: true, Refused: refused.Inc}
}

// serveHTTPS serves hs's handler over HTTPS on addr with the serving
// certificate (the operator's or the hub's own); ServeTLS's error goes to
// errc like the plain server's.
func serveHTTPS(f *hubFlags, addr string, hs *http.Server, limit httpapi.ConnLimit, errc chan<- error, log *slog.Logger) (*http.Server, net.Addr, error) {
	src, err := f.tls.serving(*f.data, log)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS: %w", err)
	}
	tln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w (choose another with -https-listen, or -https-listen off)", addr, err)
	}
	hss := &http.Server{Handler: hs.Handler, TLSConfig: hubtls.ServerConfig(src.GetCertificate),
		ReadHeaderTimeout: hs.ReadHeaderTimeout, IdleTimeout: hs.IdleTimeout, ErrorLog: hs.ErrorLog}
	go func() { errc <- hss.ServeTLS(limit.Listener(tln), "", "") }()
	pin, _ := hubtls.Pin(src.Current())
	log.Info("listening https", "addr", tln.Addr().String(), "pin", pin, "not_after", src.Current().Leaf.NotAfter.Format(time.RFC3339))
	return hss, tln.Addr(), nil
}
