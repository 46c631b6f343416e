// Package appliance wires edged together: it opens the data dir and store,
// loads the identity, starts HTTP and DNS-SD, and shuts them down in order.
// cmd/edged is a thin shell around Run so tests can start a real appliance
// in-process as well as a real binary.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"github.com/campusedge/campusedge/edge/audit"
	"github.com/campusedge/campusedge/edge/staff"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/classroom"
	"github.com/campusedge/campusedge/classroom/attendance"
	"github.com/campusedge/campusedge/classroom/learning"
	"github.com/campusedge/campusedge/classroom/livestate"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/cache"
	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/console"
	"github.com/campusedge/campusedge/edge/discovery"
	"github.com/campusedge/campusedge/edge/diskwatch"
	"github.com/campusedge/campusedge/edge/fleet"
	"github.com/campusedge/campusedge/edge/identity"
	"github.com/campusedge/campusedge/edge/store"
	"github.com/campusedge/campusedge/sync/outbox"
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
		{Name: "people: staff accounts, audit log", Up: func(tx *bolt.Tx) error {
			return errors.Join(staff.Migrate(tx), audit.Migrate(tx))
		}},
		{Name: "live classes survive a restart: live state", Up: livestate.Migrate},
		{Name: "sign-ins survive a restart", Up: staff.MigrateSignIns},
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

// appliance is what the start-up steps of Run share. The steps run in
// order; each registers how to undo itself with onClose, and close undoes
// them in reverse, so the store that everything writes to closes last.
type appliance struct {
	cfg     config.Config
	log     *slog.Logger
	restart func() // ends Run; the firmware updater calls it after switching slots

	// store and identity
	st         *store.Store
	id         *identity.Identity
	staff      *staff.Store // staff accounts and browser sign-ins
	audit      *audit.Log
	schoolName string
	fl         *fleet.Fleet

	// listeners
	ln, tln   net.Listener // tln is nil with -https-listen off
	tm        *certs.Manager
	port      int
	httpsPort int // 0 with -https-listen off

	// the API server and what /healthz checks
	srv    *api.Server
	checks map[string]api.Check
	disk   *diskwatch.Watcher // the data disk's free space: ok, low, full
	// The advertiser is set after HTTP is serving (it needs the bound port and
	// /healthz may already be asked), hence the atomic.
	advp atomic.Pointer[discovery.Advertiser]
	// regp is the unicast DNS-SD registration (-dns-zone), set likewise.
	regp atomic.Pointer[discovery.Registrar]

	// capabilities
	cloudCA []byte
	hc      *http.Client // every edge→hub request
	rc      *cache.Cache
	live    *classroom.Live
	ob      *outbox.Outbox // every capability appends records here; the uplink sends them

	// serving
	hs, hss  *http.Server           // hss is nil with -https-listen off
	fast     []*cache.MediaListener // -media-fastpath: the listeners of hs and hss
	serveErr chan error

	closers []func()
}

// onClose registers f to run when Run returns, before what was registered
// earlier.
func (a *appliance) onClose(f func()) { a.closers = append(a.closers, f) }

// close runs the registered closers in reverse order.
func (a *appliance) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

// Run starts the appliance and blocks until ctx is cancelled, then shuts
// down gracefully. It returns an error if start-up fails.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, opts Options) error {
	// restart ends Run like a stop does; the firmware updater uses it after
	// switching slots so that edgesup starts the new one.
	ctx, restart := context.WithCancel(ctx)
	defer restart()
	a := &appliance{cfg: cfg, log: log, restart: restart}
	defer a.close()
	if err := a.openStore(); err != nil {
		return err
	}
	if err := a.listen(); err != nil {
		return err
	}
	a.newServer()
	if err := a.startCapabilities(ctx); err != nil {
		a.closeListeners()
		return err
	}
	if err := a.serve(ctx, opts); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-a.serveErr:
		return fmt.Errorf("HTTP server stopped: %w", err)
	}
	a.shutdown()
	return nil
}

// openStore creates the data dir, opens the store (closed last, when Run
// returns) and loads or creates the edge identity.
func (a *appliance) openStore() error {
	cfg, log := a.cfg, a.log
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", cfg.DataDir, err)
	}
	st, err := store.Open(cfg.DataDir, Migrations())
	if err != nil {
		return err
	}
	a.st = st
	a.onClose(func() {
		if err := st.Close(); err != nil {
			log.Error("closing store", "err", err)
		} else {
			log.Info("store closed", "path", st.Path())
		}
	})
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
	a.id = id
	a.schoolName = cfg.SchoolName
	if a.schoolName == "" {
		a.schoolName = "CampusEdge " + id.ID
	}
	a.fl = fleet.New(st.DB(), nil)
	return nil
}

// listen binds the HTTP port and, unless -https-listen is off, the HTTPS
// port with its certificate manager. Binding before anything serves lets
// the API know both ports.
func (a *appliance) listen() error {
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another program using the port? choose one with -listen)", a.cfg.Listen, err)
	}
	a.ln, a.port = ln, ln.Addr().(*net.TCPAddr).Port
	// HTTPS: cameras work only on secure pages, and tokens must not cross
	// the LAN in clear (edge/certs).
	tm, tln, err := listenHTTPS(a.cfg, a.log.With("component", "tls"))
	if err != nil {
		_ = ln.Close()
		return err
	}
	a.tm, a.tln = tm, tln
	if tln != nil {
		a.httpsPort = tln.Addr().(*net.TCPAddr).Port
	}
	return nil
}

// listenHTTPS sets up the certificate manager and binds the HTTPS port;
// both are nil with -https-listen off.
func listenHTTPS(cfg config.Config, log *slog.Logger) (*certs.Manager, net.Listener, error) {
	addr := cfg.HTTPSAddr()
	if addr == "" {
		log.Warn("HTTPS is off (-https-listen off): cameras work only on pages opened at 127.0.0.1, and tokens cross the LAN in clear")
		return nil, nil, nil
	}
	names := cfg.TLSNames
	if cfg.DNSZone != "" {
		// The name the school's DNS gives the edge (-dns-zone), which the
		// console's QR code links to.
		names = append(slices.Clone(names), discovery.WellKnownHost+"."+strings.TrimSuffix(cfg.DNSZone, "."))
	}
	tm, err := certs.New(certs.Config{Dir: filepath.Join(cfg.DataDir, "tls"), Names: names,
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

// closeListeners releases the ports when start-up fails before serving.
func (a *appliance) closeListeners() {
	_ = a.ln.Close()
	if a.tln != nil {
		_ = a.tln.Close()
	}
}

// newServer makes the API server the capabilities register on, with the
// /healthz checks of the store and DNS-SD (sync adds its own).
func (a *appliance) newServer() {
	cfg := a.cfg
	a.disk = diskwatch.New(diskwatch.Config{Dir: cfg.DataDir, Logger: a.log.With("component", "disk"),
		OnLow: func() (int64, error) { return a.rc.KeepReserve() }}) // Run starts once the cache exists
	a.checks = map[string]api.Check{
		"disk": a.disk.Check,
		"store": func(context.Context) error {
			return a.st.View(func(*bolt.Tx) error { return nil })
		},
		"discovery": func(context.Context) error {
			if !cfg.MDNS {
				return nil // turned off on purpose; terminals use -edge URL
			}
			adv := a.advp.Load()
			if adv == nil {
				return errors.New("not started")
			}
			if s := adv.Status(); !s.Active {
				return errors.New(s.Problem)
			}
			return nil
		},
	}
	// The audit log goes to the city through the outbox, made later (the
	// first entry can only come once HTTP serves, after it exists).
	a.audit = audit.New(a.st.DB(), func(tx *bolt.Tx, kind string, payload []byte, now time.Time) error {
		_, err := outbox.AppendTx(tx, kind, payload, now)
		return err
	}, func() {
		if a.ob != nil {
			a.ob.Notify()
		}
	}, a.log.With("component", "audit"))
	a.staff = staff.New(staff.Config{DB: a.st.DB(), IsAdminToken: a.id.CheckAdminToken, Logger: a.log.With("component", "staff"), Audit: a.audit})
	// Unicast DNS-SD (-dns-zone): degraded while the school's DNS refuses
	// or cannot take the edge's records.
	a.checks["dns_sd"] = func(context.Context) error {
		if reg := a.regp.Load(); reg != nil {
			if s := reg.Status(); s.Error != "" {
				return errors.New(s.Error)
			}
		}
		return nil
	}
	a.srv = api.New(api.Config{Identity: a.id, Fleet: a.fl, School: cfg.School, SchoolName: a.schoolName, TimeZone: cfg.TimeZone, Language: cfg.Language, Logger: a.log, Checks: a.checks,
		Console: console.Handler(), HTTPSPort: a.httpsPort, ServerPin: serverPin(a.tm), SignIns: a.staff, Audit: a.audit})
	a.staff.Register(a.srv)
	a.audit.Register(a.srv)
	a.srv.Registry().MustRegister(a.disk.Collectors()...)
	if a.tm != nil {
		a.tm.Register(a.srv)
	}
	a.mountDiscoveryAPI()
}

// serverPin is the pin of the key served on the LAN, which pairing binds
// to the pairing code; nil without HTTPS (pairing by code is then refused).
func serverPin(tm *certs.Manager) func() string {
	if tm == nil {
		return nil
	}
	return tm.Pin
}
