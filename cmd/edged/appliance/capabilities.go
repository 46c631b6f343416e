package appliance

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/staff"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/classroom"
	"github.com/campusedge/campusedge/classroom/attendance"
	"github.com/campusedge/campusedge/classroom/learning"
	"github.com/campusedge/campusedge/classroom/livestate"
	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/edge/cache"
	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/diskwatch"
	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/sync/outbox"
	"github.com/campusedge/campusedge/sync/schooldata"
	"github.com/campusedge/campusedge/sync/timetable"
	"github.com/campusedge/campusedge/sync/uplink"
)

// startCapabilities mounts what the appliance does on the API server, in
// the order they depend on each other: the resource cache, live classes
// (which play the cache's lessons), firmware (which waits for live
// classes) and sync with the city (which feeds the cache and the live
// classes' timetable). Each closes before the store, in reverse order.
func (a *appliance) startCapabilities(ctx context.Context) error {
	if err := a.startCache(ctx); err != nil {
		return err
	}
	a.startDiskWatch(ctx)
	// The outbox exists before any capability that appends to it, so that
	// every append — learning records included — wakes the uplink at once
	// instead of waiting for its next timer (up to a minute).
	a.ob = outbox.New(outbox.Config{DB: a.st.DB()})
	a.onClose(func() { _ = a.ob.Close() })
	if err := a.mountLive(); err != nil {
		return err
	}
	// Firmware updates (firmware/): GET /api/v1/firmware; the updater runs with -fw-root.
	if err := mountFirmware(ctx, a.cfg, a.srv, a.id.ID, a.fl, a.live, a.restart, a.hc, a.log.With("component", "firmware")); err != nil {
		return err
	}
	a.startSync(ctx)
	return nil
}

// startCache sets up the hub client and starts the resource cache.
func (a *appliance) startCache(ctx context.Context) error {
	cfg := a.cfg
	quota, _ := cache.ParseSize(cfg.CacheQuota) // validated by config
	upMax, _ := cache.ParseSize(cfg.CacheUploadMax)
	bw, _ := cache.ParseSchedule(cfg.CacheBandwidth)
	if cfg.CloudCA != "" {
		var err error
		if a.cloudCA, err = certs.ReadRootsFile(cfg.CloudCA); err != nil {
			return fmt.Errorf("-cloud-ca: %w", err)
		}
	}
	// Every edge→hub request: an https:// hub only by the key pinned at
	// enrolment, or by CA (system roots + -cloud-ca) when enrolled without a
	// pin; each signed by the edge's key, as the hub serves its catalogue,
	// content, uploads and firmware only to enrolled edges.
	a.hc = uplink.SignedHubClient(a.st.DB(), a.cloudCA, a.id)
	rc, err := cache.New(cache.Config{DB: a.st.DB(), DataDir: cfg.DataDir, Hub: cfg.Cloud, Client: a.hc, Logger: a.log.With("component", "cache"),
		Quota: quota, Bandwidth: bw, UploadMax: upMax, PrefetchHorizon: time.Duration(cfg.CachePrefetchDays) * 24 * time.Hour})
	if err != nil {
		return err
	}
	a.rc = rc
	a.onClose(rc.Close) // before the store closes: downloads and sync write to it
	rc.Register(a.srv)
	rc.Start(ctx) // catalogue sync; a no-op without -cloud
	return nil
}

// mountLive mounts live classes: sessions, SFU, WHIP/WHEP (classroom/).
func (a *appliance) mountLive() error {
	db, fl := a.st.DB(), a.fl
	// Quiz answers and attendance are learning records, each appended to the
	// sync outbox in the same transaction (swap outbox.AppendTx to reroute).
	// Through the outbox's group commit: a class start's forty joins share
	// a few fsyncs, each acknowledged only once durable.
	learn := noSpaceNoted{learning.New(db, outbox.AppendTx, a.ob.Notify).GroupCommit(a.ob.Update), a.disk}
	roster := &attendance.Source{DB: db, Docs: func(kind string) ([]byte, error) { return uplink.Doc(db, kind) },
		Room:     func(cid string) string { c, _ := fl.Classroom(cid); return c.RoomCode },
		Homeroom: func(cid string) string { c, _ := fl.Classroom(cid); return c.Homeroom },
		Location: a.loc()}
	learn.SetClassroomNames(func(cid string) string { c, _ := fl.Classroom(cid); return c.Name })
	// Sessions, stage, hands, quizzes and presence survive a restart:
	// Mount resumes the classes this store holds.
	ls, err := livestate.New(db)
	if err != nil {
		return err
	}
	live, err := classroom.Mount(classroom.Config{Server: a.srv, IsAdmin: a.id.CheckAdminToken, Listen: a.cfg.Listen, EdgeID: a.id.ID, Logger: a.log.With("component", "live"),
		Lessons: a.rc, RecordDir: filepath.Join(a.cfg.DataDir, "recordings"),
		Classroom: func(cid string) error { _, err := fl.Classroom(cid); return err },
		Learning:  learn, Attendance: roster,
		ClassroomName: func(cid string) string { c, _ := fl.Classroom(cid); return c.Name },
		UpstreamRoots: upstreamRoots(a.tm), Location: a.loc(), Language: a.cfg.Language, Layers: a.cfg.SimulcastLayers, NoSVC: !a.cfg.SVCLayers,
		LiveState: ls, ReconnectGrace: a.cfg.ReconnectGrace})
	if err != nil {
		return err
	}
	a.live = live
	a.onClose(live.Close) // runs before the store closes
	return nil
}

// startSync starts sync with the city (sync/): the outbox every capability
// appends to, the uplink/downlink to -cloud, and what follows the
// timetable it brings (the cache's prefetch, scheduled sessions). All stop
// before the store closes.
func (a *appliance) startSync(ctx context.Context) {
	cfg, db := a.cfg, a.st.DB()
	ob := a.ob
	// A timetable from the downlink drives the cache's prefetch: the feeder
	// runs after the document's transaction commits (bbolt has one writer,
	// so the cache cannot write inside the downlink's transaction).
	ttChanged := make(chan struct{}, 1)
	applyDoc := func(tx *bolt.Tx, kind string, data []byte) error {
		if kind == schooldata.KindStaff {
			return a.applyStaff(tx, data)
		}
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
	up := uplink.New(uplink.Config{Hub: cfg.Cloud, CloudCA: a.cloudCA, DB: db, Outbox: ob, Identity: a.id, Client: a.hc, Certs: citySigner(a.tm),
		RateBytes: cfg.SyncRate, Apply: applyDoc, Logger: a.log.With("component", "sync"), OnNoSpace: a.disk.NoteFull})
	up.Register(a.srv)
	a.checks["sync"] = up.Check // set before HTTP serves: the map is read-only from then on
	if en, ok, err := uplink.LoadEnrolment(db); err == nil && ok && en.School != cfg.School {
		a.log.Warn("this edge is enrolled for another school code than -school; records go to the enrolled school", "enrolled_school", en.School, "school_flag", cfg.School)
	}
	syncCtx, stopSync := context.WithCancel(ctx)
	syncDone := make(chan struct{})
	go func() { defer close(syncDone); up.Run(syncCtx) }()
	feeder := &timetable.Feeder{Doc: func() ([]byte, error) { return uplink.Doc(db, schooldata.KindTimetable) },
		Cache: a.rc, Days: cfg.CachePrefetchDays, Loc: a.loc(), Now: time.Now, Every: time.Hour, Log: a.log.With("component", "timetable")}
	// Sessions tied to a timetable period start when it begins, and follow
	// the timetable when a new one arrives.
	a.live.Sessions.SetPeriodClock(func(p session.Period, after time.Time) (time.Time, bool) {
		doc, err := uplink.Doc(db, schooldata.KindTimetable)
		if err != nil || doc == nil {
			return time.Time{}, false
		}
		var tt schooldata.Timetable
		if json.Unmarshal(doc, &tt) != nil {
			return time.Time{}, false
		}
		return timetable.NextStart(tt, p.Day, p.Period, p.Room, after, a.loc())
	})
	feeder.OnSync = a.live.Sessions.Reschedule
	feederDone, scheduleDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(feederDone); feeder.Run(syncCtx, ttChanged) }()
	go func() { defer close(scheduleDone); a.live.RunSchedule(syncCtx) }()
	a.onClose(func() { stopSync(); <-syncDone; <-feederDone; <-scheduleDone })
}

// startDiskWatch keeps the data disk's state current (the "disk" check of
// /healthz, the disk gauges) and has the cache evict to keep the store's
// reserve; it stops before the cache closes.
func (a *appliance) startDiskWatch(ctx context.Context) {
	ctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); a.disk.Run(ctx) }()
	a.onClose(func() { stop(); <-done })
}

// noSpaceNoted tells the disk watcher at once when a learning record was
// refused for lack of space, so /healthz says "full" within that write.
type noSpaceNoted struct {
	*learning.Store
	disk *diskwatch.Watcher
}

func (n noSpaceNoted) Add(ctx context.Context, r learning.Record) (learning.Record, error) {
	out, err := n.Store.Add(ctx, r)
	if fsutil.IsNoSpace(err) {
		n.disk.NoteFull()
	}
	return out, err
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

// citySigner lets the uplink have the city CA sign the edge's certificate;
// nil (no HTTPS) asks for nothing.
func citySigner(tm *certs.Manager) uplink.CertSigner {
	if tm == nil {
		return nil
	}
	return tm
}

// applyStaff applies the city's staff list (downlink document "staff") to
// the edge's accounts in the downlink's transaction: a person removed at
// the city can no longer sign in once it commits.
func (a *appliance) applyStaff(tx *bolt.Tx, data []byte) error {
	l, err := schooldata.ValidateStaff(data)
	if err != nil {
		return err
	}
	list := make([]staff.CityPerson, 0, len(l.Staff))
	for _, m := range l.Staff {
		roles := make([]api.Role, len(m.Roles))
		for i, r := range m.Roles {
			roles[i] = api.Role(r)
		}
		list = append(list, staff.CityPerson{ID: m.ID, Name: m.Name, Roles: roles, Rooms: m.Rooms, Hash: m.Hash})
	}
	_, err = a.staff.ApplyCityTx(tx, list)
	return err
}

// loc is the school's time zone (-time-zone; validated at start).
func (a *appliance) loc() *time.Location {
	if loc, err := a.cfg.Location(); err == nil {
		return loc
	}
	return time.Local
}
