// Package appliance wires edged together: it opens the data dir and store,
// loads the identity, starts HTTP and DNS-SD, and shuts them down in order.
// cmd/edged is a thin shell around Run so tests can start a real appliance
// in-process as well as a real binary.
package appliance

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/classroom"
	"github.com/campusedge/campusedge/classroom/attendance"
	"github.com/campusedge/campusedge/classroom/learning"
	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/buildinfo"
	"github.com/campusedge/campusedge/edge/cache"
	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/console"
	"github.com/campusedge/campusedge/edge/discovery"
	"github.com/campusedge/campusedge/edge/fleet"
	"github.com/campusedge/campusedge/edge/identity"
	"github.com/campusedge/campusedge/edge/store"
	"github.com/campusedge/campusedge/sync/outbox"
	"github.com/campusedge/campusedge/sync/schooldata"
	"github.com/campusedge/campusedge/sync/timetable"
	"github.com/campusedge/campusedge/sync/uplink"
)

// Migrations is the ordered schema history of edge.db. Append only: a
// migration that shipped is never edited, and its index+1 is its version.
func Migrations() []store.Migration {
	return []store.Migration{
		{Name: "foundation: identity, classrooms, terminals, pairing", Up: func(tx *bolt.Tx) error {
			for _, b := range [][]byte{identity.Bucket, fleet.BucketClassrooms, fleet.BucketTerminals, fleet.BucketPairing} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return fmt.Errorf("create bucket %s: %w", b, err)
				}
			}
			return nil
		}},
		{Name: "resource cache: catalogue items, sync cursor", Up: cache.Migrate},
		{Name: "resource cache: pins, timetable, upload queue", Up: cache.MigratePolicy},
		{Name: "sync: outbox, enrolment, downlink documents", Up: func(tx *bolt.Tx) error {
			return errors.Join(outbox.Migrate(tx), uplink.Migrate(tx))
		}},
		{Name: "classroom experience: learning records, local roster", Up: func(tx *bolt.Tx) error {
			return errors.Join(learning.Migrate(tx), attendance.Migrate(tx))
		}},
	}
}

// Options are hooks for callers (tests, supervisors).
type Options struct {
	// Ready is called with the bound address once HTTP is serving.
	Ready func(addr net.Addr)
	// ReadyTLS is called with the HTTPS address and the certificate
	// manager (its CA and pin) once HTTPS is serving; not with -https-listen off.
	ReadyTLS func(addr net.Addr, tm *certs.Manager)
}

// listenHTTPS sets up the certificate manager and binds the HTTPS port;
// both are nil with -https-listen off.
func listenHTTPS(cfg config.Config, log *slog.Logger) (*certs.Manager, net.Listener, error) {
	addr := cfg.HTTPSAddr()
	if addr == "" {
		log.Warn("HTTPS is off (-https-listen off): cameras work only on pages opened at 127.0.0.1, and tokens cross the LAN in clear")
		return nil, nil, nil
	}
	tm, err := certs.New(certs.Config{Dir: filepath.Join(cfg.DataDir, "tls"), Names: cfg.TLSNames,
		OperatorCert: cfg.TLSCert, OperatorKey: cfg.TLSKey, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s for HTTPS: %w (is another program using the port? choose one with -https-listen)", addr, err)
	}
	return tm, ln, nil
}

// Run starts the appliance and blocks until ctx is cancelled, then shuts
// down gracefully. It returns an error if start-up fails.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, opts Options) error {
	// restart ends Run like a stop does; the firmware updater uses it after
	// switching slots so that edgesup starts the new one.
	ctx, restart := context.WithCancel(ctx)
	defer restart()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", cfg.DataDir, err)
	}
	st, err := store.Open(cfg.DataDir, Migrations())
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("closing store", "err", err)
		} else {
			log.Info("store closed", "path", st.Path())
		}
	}()
	ver, _ := st.SchemaVersion()
	log.Info("store open", "path", st.Path(), "schema_version", ver)

	id, res, err := identity.LoadOrCreate(st.DB(), cfg.DataDir)
	if err != nil {
		return err
	}
	if res.Created {
		log.Info("new edge identity created", "edge_id", id.ID)
	}
	if res.AdminTokenFile != "" {
		log.Info("admin token written; use it to sign in to the console", "file", res.AdminTokenFile)
	}
	schoolName := cfg.SchoolName
	if schoolName == "" {
		schoolName = "CampusEdge " + id.ID
	}

	fl := fleet.New(st.DB(), nil)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another program using the port? choose one with -listen)", cfg.Listen, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	// HTTPS: cameras work only on secure pages, and tokens must not cross
	// the LAN in clear (edge/certs).
	tm, tln, err := listenHTTPS(cfg, log.With("component", "tls"))
	if err != nil {
		_ = ln.Close()
		return err
	}
	httpsPort := 0
	if tln != nil {
		httpsPort = tln.Addr().(*net.TCPAddr).Port
	}
	closeListeners := func() {
		_ = ln.Close()
		if tln != nil {
			_ = tln.Close()
		}
	}

	// The advertiser is set after HTTP is serving (it needs the bound port and
	// /healthz may already be asked), hence the atomic.
	var advp atomic.Pointer[discovery.Advertiser]
	checks := map[string]api.Check{
		"store": func(context.Context) error {
			return st.View(func(*bolt.Tx) error { return nil })
		},
		"discovery": func(context.Context) error {
			if !cfg.MDNS {
				return nil // turned off on purpose; terminals use -edge URL
			}
			adv := advp.Load()
			if adv == nil {
				return errors.New("not started")
			}
			if s := adv.Status(); !s.Active {
				return errors.New(s.Problem)
			}
			return nil
		},
	}
	srv := api.New(api.Config{Identity: id, Fleet: fl, School: cfg.School, SchoolName: schoolName, Logger: log, Checks: checks, Console: console.Handler(), HTTPSPort: httpsPort, ServerPin: serverPin(tm)})
	if tm != nil {
		tm.Register(srv)
	}
	quota, _ := cache.ParseSize(cfg.CacheQuota) // validated by config
	upMax, _ := cache.ParseSize(cfg.CacheUploadMax)
	bw, _ := cache.ParseSchedule(cfg.CacheBandwidth)
	var cloudCA []byte
	if cfg.CloudCA != "" {
		if cloudCA, err = certs.ReadRootsFile(cfg.CloudCA); err != nil {
			closeListeners()
			return fmt.Errorf("-cloud-ca: %w", err)
		}
	}
	// Every edge→hub request: an https:// hub only by the key pinned at
	// enrolment, or by CA (system roots + -cloud-ca) when enrolled without a pin.
	hc := uplink.HubClient(st.DB(), cloudCA)
	rc, err := cache.New(cache.Config{DB: st.DB(), DataDir: cfg.DataDir, Hub: cfg.Cloud, Client: hc, Logger: log.With("component", "cache"),
		Quota: quota, Bandwidth: bw, UploadMax: upMax, PrefetchHorizon: time.Duration(cfg.CachePrefetchDays) * 24 * time.Hour})
	if err != nil {
		closeListeners()
		return err
	}
	defer rc.Close() // before the store closes: downloads and sync write to it
	rc.Register(srv)
	rc.Start(ctx) // catalogue sync; a no-op without -cloud
	// Live classes: sessions, SFU, WHIP/WHEP (classroom/).
	// Quiz answers and attendance are learning records, each appended to the
	// sync outbox in the same transaction (swap outbox.AppendTx to reroute).
	learn := learning.New(st.DB(), outbox.AppendTx, nil)
	roster := &attendance.Source{DB: st.DB(), Docs: func(kind string) ([]byte, error) { return uplink.Doc(st.DB(), kind) },
		Room: func(cid string) string { c, _ := fl.Classroom(cid); return c.RoomCode }}
	live, err := classroom.Mount(classroom.Config{Server: srv, IsAdmin: id.CheckAdminToken, Listen: cfg.Listen, EdgeID: id.ID, Logger: log.With("component", "live"),
		Lessons: rc, RecordDir: filepath.Join(cfg.DataDir, "recordings"),
		Classroom: func(cid string) error { _, err := fl.Classroom(cid); return err },
		Learning:  learn, Attendance: roster,
		TerminalClassroom: func(tok string) (string, error) { t, err := fl.Authenticate(tok); return t.ClassroomID, err },
		ClassroomName:     func(cid string) string { c, _ := fl.Classroom(cid); return c.Name },
		UpstreamRoots:     upstreamRoots(tm)})
	if err != nil {
		closeListeners()
		return err
	}
	defer live.Close() // runs before the store closes
	// Firmware updates (firmware/): GET /api/v1/firmware; the updater runs with -fw-root.
	if err := mountFirmware(ctx, cfg, srv, id.ID, fl, live, restart, hc, log.With("component", "firmware")); err != nil {
		closeListeners()
		return err
	}
	// Sync with the city (sync/): the outbox every capability appends to, and
	// the uplink/downlink to -cloud. Both stop before the store closes.
	ob := outbox.New(outbox.Config{DB: st.DB()})
	defer ob.Close()
	// A timetable from the downlink drives the cache's prefetch: the feeder
	// runs after the document's transaction commits (bbolt has one writer,
	// so the cache cannot write inside the downlink's transaction).
	ttChanged := make(chan struct{}, 1)
	applyDoc := func(tx *bolt.Tx, kind string, _ []byte) error {
		if kind == schooldata.KindTimetable {
			tx.OnCommit(func() {
				select {
				case ttChanged <- struct{}{}:
				default:
				}
			})
		}
		return nil
	}
	up := uplink.New(uplink.Config{Hub: cfg.Cloud, CloudCA: cloudCA, DB: st.DB(), Outbox: ob, Identity: id, Client: hc, Certs: citySigner(tm), RateBytes: cfg.SyncRate, Apply: applyDoc, Logger: log.With("component", "sync")})
	up.Register(srv)
	checks["sync"] = up.Check // set before HTTP serves: the map is read-only from then on
	if en, ok, err := uplink.LoadEnrolment(st.DB()); err == nil && ok && en.School != cfg.School {
		log.Warn("this edge is enrolled for another school code than -school; records go to the enrolled school", "enrolled_school", en.School, "school_flag", cfg.School)
	}
	syncCtx, stopSync := context.WithCancel(ctx)
	syncDone := make(chan struct{})
	go func() { defer close(syncDone); up.Run(syncCtx) }()
	feeder := &timetable.Feeder{Doc: func() ([]byte, error) { return uplink.Doc(st.DB(), schooldata.KindTimetable) },
		Cache: rc, Days: cfg.CachePrefetchDays, Loc: time.Local, Now: time.Now, Every: time.Hour, Log: log.With("component", "timetable")}
	// Sessions tied to a timetable period start when it begins, and follow
	// the timetable when a new one arrives.
	live.Sessions.SetPeriodClock(func(p session.Period, after time.Time) (time.Time, bool) {
		doc, err := uplink.Doc(st.DB(), schooldata.KindTimetable)
		if err != nil || doc == nil {
			return time.Time{}, false
		}
		var tt schooldata.Timetable
		if json.Unmarshal(doc, &tt) != nil {
			return time.Time{}, false
		}
		return timetable.NextStart(tt, p.Day, p.Period, p.Room, after, time.Local)
	})
	feeder.OnSync = live.Sessions.Reschedule
	feederDone, scheduleDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(feederDone); feeder.Run(syncCtx, ttChanged) }()
	go func() { defer close(scheduleDone); live.RunSchedule(syncCtx) }()
	defer func() { stopSync(); <-syncDone; <-feederDone; <-scheduleDone }()
	hs := &http.Server{
		Handler:           plainHTTP{next: srv, httpsPort: httpsPort, redirect: cfg.HTTPSRedirect},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- hs.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "edge_id", id.ID, "version", buildinfo.Version)
	var hss *http.Server
	if tln != nil {
		hss = &http.Server{
			Handler:           srv,
			TLSConfig:         tm.TLSConfig(),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
		go tm.Run(ctx)
		// ServeTLS (not Serve on a tls listener) so that HTTP/2 is set up.
		go func() { serveErr <- hss.ServeTLS(tln, "", "") }()
		st := tm.Status()
		log.Info("listening https", "addr", tln.Addr().String(), "certificate", st.Source, "spki_pin", st.Pin, "fingerprint", st.Fingerprint)
	}

	if cfg.MDNS {
		adv, err := discovery.Advertise(ctx, discovery.Config{
			Instance:   discovery.InstanceName(schoolName),
			Port:       port,
			Info:       discovery.Info{Version: "1", EdgeID: id.ID, School: cfg.School, API: "/api/v1", HTTPSPort: httpsPort},
			Interfaces: cfg.MDNSInterfaces,
			Logger:     log.With("component", "discovery"),
		})
		if err != nil {
			_ = hs.Close()
			if hss != nil {
				_ = hss.Close()
			}
			return fmt.Errorf("DNS-SD: %w", err)
		}
		advp.Store(adv)
	} else {
		log.Info("DNS-SD advertisement off (-mdns=false); terminals need -edge URL", "url", edgeURL(port, httpsPort))
	}
	if opts.Ready != nil {
		opts.Ready(ln.Addr())
	}
	if opts.ReadyTLS != nil && tln != nil {
		opts.ReadyTLS(tln.Addr(), tm)
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("HTTP server stopped: %w", err)
	}
	log.Info("shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Stop accepting and finish in-flight requests; hijacked WebSockets are
	// not tracked by Shutdown, so close them explicitly (terminals reconnect).
	srv.CloseControl()
	if err := hs.Shutdown(shutCtx); err != nil {
		log.Warn("HTTP shutdown incomplete", "err", err)
	}
	if hss != nil {
		if err := hss.Shutdown(shutCtx); err != nil {
			log.Warn("HTTPS shutdown incomplete", "err", err)
		}
	}
	if adv := advp.Load(); adv != nil {
		if err := adv.Close(); err != nil {
			log.Warn("DNS-SD goodbye", "err", err)
		} else {
			log.Info("DNS-SD goodbye sent")
		}
	}
	return nil
}

// upstreamRoots are the CAs the cascade trusts for another edge: the
// system's and the root this edge's own certificate chains to (the city
// root once the city signed it, so city-signed edges trust each other).
func upstreamRoots(tm *certs.Manager) func() *x509.CertPool {
	if tm == nil {
		return nil
	}
	return func() *x509.CertPool { return certs.RootsWith(tm.CAPEM()) }
}

// serverPin is the pin of the key served on the LAN, which pairing binds
// to the pairing code; nil without HTTPS (pairing by code is then refused).
func serverPin(tm *certs.Manager) func() string {
	if tm == nil {
		return nil
	}
	return tm.Pin
}

// citySigner lets the uplink have the city CA sign the edge's certificate;
// nil (no HTTPS) asks for nothing.
func citySigner(tm *certs.Manager) uplink.CertSigner {
	if tm == nil {
		return nil
	}
	return tm
}

// edgeURL is the address terminals are told to use: HTTPS when it is on.
func edgeURL(port, httpsPort int) string {
	if httpsPort != 0 {
		return "https://<this host>:" + strconv.Itoa(httpsPort)
	}
	return "http://<this host>:" + strconv.Itoa(port)
}
