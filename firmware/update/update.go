// Package update is the edge side of firmware updates: it asks the city
// hub's release channel for a release when connected, downloads the bundle
// resumably (Range) into the data dir under an optional bandwidth cap,
// checks its size and SHA-256, verifies signature and policy while
// installing it into the inactive slot, switches, and asks edged to exit so
// the supervisor (edgesup) starts the new slot on trial. It never installs
// while a live class is running at the school.
package update

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/release"
	"github.com/campusedge/campusedge/firmware/slot"
)

// ClassGate tells the updater whether a live class is running at the
// school; an update waits until none is. The consumer defines it so the
// classroom package needs no firmware knowledge.
type ClassGate interface {
	LiveClassRunning() bool
}

// ClassGateFunc adapts a function.
type ClassGateFunc func() bool

// LiveClassRunning calls f.
func (f ClassGateFunc) LiveClassRunning() bool { return f() }

// Config wires an Updater.
type Config struct {
	// Hub is the cityhub base URL; empty disables checking.
	Hub      string
	EdgeID   string
	School   string
	Product  string
	Target   string
	Channel  string
	Slots    *slot.Manager
	Download string // directory for bundle downloads, e.g. DATA/firmware-download
	Classes  ClassGate
	// Restart is called after a switch: edged should exit so the supervisor
	// starts the new slot.
	Restart  func()
	Interval time.Duration
	// RateLimit caps download bandwidth in bytes per second (0: no cap).
	RateLimit int64
	Client    *http.Client
	Logger    *slog.Logger
	// Step, if set, is called at each step ("download" after the first
	// bytes are on disk, "install" halfway through writing the slot,
	// "installed", "switch" after the pointer moved). Tests use it to kill
	// the process at that point.
	Step func(step string)
	// Terminals, if set, lists terminals' firmware for the report.
	Terminals func() []release.TerminalReport
	// FallbackVersion is reported when no slot is active (edged not run by
	// edgesup, e.g. in development).
	FallbackVersion string
}

// Status is the updater's state for the API, console and logs.
type Status struct {
	State        string           `json:"state"`
	Version      string           `json:"version"`
	Slot         string           `json:"slot,omitempty"`
	Trial        bool             `json:"trial"`
	Floor        string           `json:"floor,omitempty"`
	Target       string           `json:"target"`
	Channel      string           `json:"channel"`
	Hub          string           `json:"hub,omitempty"`
	Available    *release.Release `json:"available,omitempty"`
	Downloaded   int64            `json:"downloaded_bytes"`
	Total        int64            `json:"total_bytes"`
	Error        string           `json:"error,omitempty"`
	LastCheck    *time.Time       `json:"last_check,omitempty"`
	LastFallback *slot.Fallback   `json:"last_fallback,omitempty"`
	Bad          []string         `json:"bad_versions,omitempty"`
	TrustedKeys  []string         `json:"trusted_keys,omitempty"`
}

// Updater runs the edge's update checks.
type Updater struct {
	cfg Config
	log *slog.Logger
	lim *rate.Limiter

	mu sync.Mutex
	st Status
	// checking serialises CheckOnce: the periodic check and an admin's
	// "check now" must not download into the same file at once.
	checking sync.Mutex
	// refused are bundles (by SHA-256) whose signed manifest this edge
	// refused by policy (not newer, failed here, below the floor, without a
	// rollback for it): a hub offering one again is not downloaded again,
	// so an offer can make neither an install/fallback loop nor a download
	// loop. Guarded by checking; bounded by maxRefused.
	refused map[string]bool
}

// maxRefused bounds the refused bundles remembered.
const maxRefused = 64

// New returns an updater; Run starts it.
func New(cfg Config) *Updater {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Minute
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 0} // bodies can be long; stalls are handled per read
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Channel == "" {
		cfg.Channel = release.Stable
	}
	u := &Updater{cfg: cfg, log: cfg.Logger}
	if cfg.RateLimit > 0 {
		u.lim = rate.NewLimiter(rate.Limit(cfg.RateLimit), int(min(cfg.RateLimit, 256<<10)))
	}
	u.st = Status{State: "idle", Target: cfg.Target, Channel: cfg.Channel, Hub: cfg.Hub}
	if cfg.Hub == "" {
		u.st.State = "offline"
	}
	u.refresh()
	return u
}

func (u *Updater) fetcher() *Fetcher {
	return &Fetcher{Client: u.cfg.Client, Hub: u.cfg.Hub, Dir: u.cfg.Download, Limiter: u.lim, Logger: u.log, Step: u.cfg.Step,
		Progress: func(n int64) { u.set(func(s *Status) { s.Downloaded = n }) },
		State:    func(st string) { u.set(func(s *Status) { s.State = st }) }}
}

func (u *Updater) step(s string) {
	if u.cfg.Step != nil {
		u.cfg.Step(s)
	}
}

func (u *Updater) set(f func(*Status)) {
	u.mu.Lock()
	f(&u.st)
	u.mu.Unlock()
}

// refresh reads the slot state into the status.
func (u *Updater) refresh() slot.State {
	st, err := u.cfg.Slots.State()
	ver, keys := u.cfg.FallbackVersion, []string(nil)
	if err == nil && st.Active != "" {
		if m, err := u.cfg.Slots.Manifest(st.Active); err == nil {
			ver = m.Version
		}
	}
	if k := u.cfg.Slots.Keyring(); k != nil {
		keys = k.IDs()
	}
	u.set(func(s *Status) {
		s.Version, s.Slot, s.Trial, s.Floor, s.LastFallback, s.Bad, s.TrustedKeys = ver, st.Active, st.Trial, st.Floor, st.LastFallback, st.Bad, keys
		if err != nil {
			s.Error = err.Error()
		}
		if s.State == "trial" && err == nil && !st.Trial {
			s.State = "idle" // committed since the last check
		}
	})
	return st
}

// Status returns a snapshot.
func (u *Updater) Status() Status {
	u.refresh()
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.st
	s.Bad = append([]string(nil), s.Bad...)
	return s
}

// Run checks at start and then every Interval (every 30 s while an update
// waits for a class to end or the running version is on trial) until ctx
// ends.
func (u *Updater) Run(ctx context.Context) {
	if u.cfg.Hub == "" {
		u.log.Info("firmware updates off: no -cloud hub configured")
		return
	}
	for {
		wait := u.cfg.Interval
		if err := u.CheckOnce(ctx); err != nil && ctx.Err() == nil {
			u.log.Warn("firmware update check failed; will retry", "err", err, "retry_in", wait)
		}
		// A running class or a trial (edgesup commits within its deadline)
		// ends soon: look again shortly rather than after a full interval.
		if s := u.Status().State; s == "waiting_for_class" || s == "trial" {
			wait = min(wait, 30*time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// CheckOnce asks the hub and, if there is a release for this edge,
// downloads, verifies and installs it. It returns nil when there is nothing
// to do or the update waits for a class.
func (u *Updater) CheckOnce(ctx context.Context) error {
	if !u.checking.TryLock() {
		return nil // a check is already running; its progress is in Status
	}
	defer u.checking.Unlock()
	st := u.refresh()
	now := time.Now().UTC()
	u.set(func(s *Status) { s.LastCheck = &now; s.Error = "" })
	if st.Trial {
		u.set(func(s *Status) { s.State = "trial" })
		return u.report(ctx, "trial", "") // report only; installing now would overwrite the way back
	}
	u.set(func(s *Status) { s.State = "checking" })
	rel, err := u.ask(ctx, st, "idle", "")
	if err != nil {
		u.fail(err)
		return err
	}
	if rel == nil {
		u.set(func(s *Status) { s.State, s.Available, s.Downloaded, s.Total = "idle", nil, 0, 0 })
		return nil
	}
	if u.refused[rel.SHA256] {
		u.set(func(s *Status) { s.State, s.Available, s.Downloaded, s.Total = "idle", nil, 0, 0 })
		u.log.Debug("the hub offers a bundle this edge refused before; not downloading it again", "version", rel.Version, "sha256", rel.SHA256)
		return nil
	}
	u.set(func(s *Status) { s.Available, s.Total = rel, rel.Size })
	u.log.Info("firmware release available", "version", rel.Version, "channel", rel.Channel, "bytes", rel.Size)
	path, err := u.fetcher().Fetch(ctx, *rel)
	if err != nil {
		u.fail(err)
		return err
	}
	if u.cfg.Classes != nil && u.cfg.Classes.LiveClassRunning() {
		u.set(func(s *Status) { s.State = "waiting_for_class" })
		u.log.Info("firmware update downloaded and verified; waiting for the live class to end", "version", rel.Version)
		return nil
	}
	if err := u.install(ctx, path, *rel); err != nil {
		if errors.Is(err, bundle.ErrNotNewer) || errors.Is(err, bundle.ErrFailedHere) || errors.Is(err, bundle.ErrRollback) {
			if u.refused == nil || len(u.refused) >= maxRefused {
				u.refused = map[string]bool{}
			}
			u.refused[rel.SHA256] = true
		}
		u.fail(err)
		return err
	}
	return nil
}

func (u *Updater) fail(err error) {
	u.set(func(s *Status) { s.State, s.Error = "error", err.Error() })
}

func (u *Updater) report(ctx context.Context, state, detail string) error {
	st, _ := u.cfg.Slots.State()
	_, err := u.ask(ctx, st, state, detail)
	return err
}

func (u *Updater) ask(ctx context.Context, st slot.State, state, detail string) (*release.Release, error) {
	u.mu.Lock()
	ver := u.st.Version
	u.mu.Unlock()
	c := release.Check{EdgeID: u.cfg.EdgeID, School: u.cfg.School, Product: u.cfg.Product, Target: u.cfg.Target, Channel: u.cfg.Channel,
		Version: ver, State: state, Detail: detail, Bad: st.Bad}
	if u.cfg.Terminals != nil {
		c.Terminals = u.cfg.Terminals()
	}
	body, _ := json.Marshal(c)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.cfg.Hub+"/api/v1/firmware/check", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := u.cfg.Client.Do(req.WithContext(cctx))
	if err != nil {
		return nil, fmt.Errorf("ask the hub for firmware: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("ask the hub for firmware: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("hub answered the firmware check with HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	var out struct {
		Update *release.Release `json:"update"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("hub's firmware answer: %w", err)
	}
	if r := out.Update; r != nil {
		if len(r.SHA256) != 64 || r.Size <= 0 || r.Size > bundle.MaxTotalBytes+bundle.MaxManifestBytes+1024 || r.Target != u.cfg.Target {
			return nil, fmt.Errorf("hub offered an unusable release %+v", *r)
		}
		if _, err := hex.DecodeString(r.SHA256); err != nil {
			return nil, fmt.Errorf("hub offered a release with a bad sha256")
		}
	}
	return out.Update, nil
}

// halfway calls f once when more than half of total bytes were read.
type halfway struct {
	r     io.Reader
	n     int64
	total int64
	f     func()
}

func (h *halfway) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.n += int64(n)
	if h.f != nil && h.n > h.total/2 {
		f := h.f
		h.f = nil
		f()
	}
	return n, err
}

func (u *Updater) install(ctx context.Context, path string, rel release.Release) error {
	u.set(func(s *Status) { s.State = "installing" })
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	pol, err := u.cfg.Slots.Policy(u.cfg.Product, u.cfg.Target)
	if err != nil {
		return err
	}
	// A signed rollback lifts "newer than running, not failed here, not
	// below the floor" only when it names this edge and has not expired.
	pol.Edge, pol.Now = u.cfg.EdgeID, time.Now()
	hw := &halfway{r: f, total: rel.Size, f: func() { u.step("install") }}
	r, err := bundle.Open(bufio.NewReaderSize(hw, 256<<10), u.cfg.Slots.Keyring(), pol)
	if err != nil {
		os.Remove(path) // signature or policy refused it: it will not get better
		return fmt.Errorf("refused firmware %s: %w", rel.Version, err)
	}
	s, err := u.cfg.Slots.Install(ctx, r)
	if err != nil {
		if errors.Is(err, bundle.ErrTampered) || errors.Is(err, bundle.ErrTruncated) || errors.Is(err, bundle.ErrMalformed) {
			os.Remove(path)
		}
		return fmt.Errorf("install firmware %s: %w", rel.Version, err)
	}
	u.step("installed")
	u.set(func(s *Status) { s.State = "switching" })
	if err := u.cfg.Slots.Switch(s); err != nil {
		return fmt.Errorf("switch to firmware %s: %w", rel.Version, err)
	}
	u.step("switch")
	os.Remove(path)
	u.log.Info("firmware installed and switched; restarting into it (the supervisor falls back if it is not healthy)", "version", rel.Version, "slot", s)
	u.set(func(st *Status) { st.State = "restarting" })
	_ = u.report(ctx, "restarting", "installed "+rel.Version+" into slot "+s)
	if u.cfg.Restart != nil {
		u.cfg.Restart()
	}
	return nil
}
