package termimage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/campusedge/campusedge/edge/ctlwire"
	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/release"
)

// Seen is what the edge knows of a terminal besides its firmware report.
type Seen struct {
	ID          string
	ClassroomID string
	Online      bool
	// InClass: a live class includes this terminal's classroom.
	InClass bool
}

// RolloutConfig wires a Rollout.
type RolloutConfig struct {
	Images *Images
	// List returns the paired terminals.
	List func() ([]Seen, error)
	// Send delivers an offer over the terminal's control connection.
	Send func(terminalID string, offer ctlwire.FirmwareOffer) bool
	// Wave is how many terminals may update at once (default 5).
	Wave int
	// Tick is how often a wave is planned (default 10 s).
	Tick time.Duration
	// Timeout is how long an offered terminal counts as updating without
	// reporting back (default 10 min); then it may be offered again.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Rollout tells terminals to update, a wave at a time, never one in a class.
type Rollout struct {
	cfg RolloutConfig

	mu          sync.Mutex
	reports     map[string]*termReport
	waves       int
	maxInFlight int
}

type termReport struct {
	Model     string    `json:"model"`
	Version   string    `json:"version"`
	State     string    `json:"state"`
	Error     string    `json:"error,omitempty"`
	Offered   string    `json:"offered_version,omitempty"`
	OfferedAt time.Time `json:"offered_at,omitempty"`
	Reported  time.Time `json:"reported_at"`
}

// NewRollout returns a rollout; Run drives it.
func NewRollout(cfg RolloutConfig) *Rollout {
	if cfg.Wave <= 0 {
		cfg.Wave = 5
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 10 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Rollout{cfg: cfg, reports: map[string]*termReport{}}
}

// Report takes a terminal's fw.status message (an api.TerminalHandler).
func (r *Rollout) Report(terminalID string, data []byte) error {
	var st ctlwire.FirmwareStatus
	if err := ctlwire.DecodeBody(data, &st); err != nil {
		return err
	}
	if !ValidModel(st.Model) {
		return fmt.Errorf("fw.status: model %q must be 1-64 characters of a-z 0-9 . _ -", st.Model)
	}
	if st.Version != "" {
		if _, err := bundle.ParseVersion(st.Version); err != nil {
			return fmt.Errorf("fw.status: %w", err)
		}
	}
	switch st.State {
	case "idle", "updating", "installed", "failed":
	default:
		return errors.New("fw.status: state must be idle, updating, installed or failed")
	}
	if len(st.Error) > 1024 {
		st.Error = st.Error[:1024]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rep, ok := r.reports[terminalID]
	if !ok {
		rep = &termReport{}
		r.reports[terminalID] = rep
	}
	rep.Model, rep.Version, rep.State, rep.Error, rep.Reported = st.Model, st.Version, st.State, st.Error, time.Now().UTC()
	if st.State == "installed" || st.State == "failed" {
		if st.State == "installed" {
			r.cfg.Logger.Info("terminal installed its image", "terminal", terminalID, "model", st.Model, "version", st.Version)
		} else {
			r.cfg.Logger.Warn("terminal image install failed", "terminal", terminalID, "model", st.Model, "err", st.Error)
		}
		rep.Offered = ""
	}
	return nil
}

// Run plans a wave every Tick until ctx ends.
func (r *Rollout) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Tick)
	defer t.Stop()
	for {
		if err := r.Step(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("terminal image wave", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Step plans and sends one wave.
func (r *Rollout) Step(ctx context.Context) error {
	seen, err := r.cfg.List()
	if err != nil {
		return err
	}
	r.mu.Lock()
	models := map[string]bool{}
	for _, rep := range r.reports {
		models[rep.Model] = true
	}
	r.mu.Unlock()
	latest := map[string]string{}
	rels := map[string]release.Release{}
	for m := range models {
		rel, err := r.cfg.Images.Latest(ctx, m)
		if err != nil {
			continue // no image for this model, or hub unreachable with nothing cached
		}
		latest[m], rels[m] = rel.Version, rel
	}
	now := time.Now()
	r.mu.Lock()
	var ts []Terminal
	for _, s := range seen {
		rep, ok := r.reports[s.ID]
		if !ok {
			continue
		}
		updating := rep.State == "updating" || (rep.Offered != "" && now.Sub(rep.OfferedAt) < r.cfg.Timeout)
		ts = append(ts, Terminal{ID: s.ID, Model: rep.Model, Version: rep.Version, Online: s.Online, InClass: s.InClass, Updating: updating})
	}
	r.mu.Unlock()
	ids := NextWave(ts, latest, r.cfg.Wave)
	if len(ids) == 0 {
		return nil
	}
	// Fetch each image once before the wave, so terminals read it from
	// the edge's disk rather than all waiting on the WAN.
	byID := map[string]Terminal{}
	for _, t := range ts {
		byID[t.ID] = t
	}
	busy := 0
	for _, t := range ts {
		if t.Updating {
			busy++
		}
	}
	var sent []string
	for _, id := range ids {
		rel := rels[byID[id].Model]
		if _, err := r.cfg.Images.Ensure(ctx, rel); err != nil {
			return err
		}
		offer := ctlwire.FirmwareOffer{Header: ctlwire.New(ctlwire.TypeFirmwareOffer), Model: rel.Target, Version: rel.Version,
			SHA256: rel.SHA256, Size: rel.Size, URL: "/api/v1/terminal-images/" + rel.Target + "/bundle"}
		if !r.cfg.Send(id, offer) {
			continue
		}
		r.mu.Lock()
		if rep := r.reports[id]; rep != nil {
			rep.Offered, rep.OfferedAt = rel.Version, now
		}
		r.mu.Unlock()
		sent = append(sent, id)
	}
	if len(sent) > 0 {
		r.mu.Lock()
		r.waves++
		r.maxInFlight = max(r.maxInFlight, busy+len(sent))
		n := r.waves
		r.mu.Unlock()
		r.cfg.Logger.Info("terminal image wave", "wave", n, "terminals", sent, "already_updating", busy)
	}
	return nil
}

// TerminalStatus is one terminal's firmware as the edge knows it.
type TerminalStatus struct {
	ID string `json:"id"`
	termReport
}

// RolloutStatus is the API view.
type RolloutStatus struct {
	Terminals   []TerminalStatus `json:"terminals"`
	Waves       int              `json:"waves"`
	MaxInFlight int              `json:"max_in_flight"`
	WaveSize    int              `json:"wave_size"`
}

// Status returns every terminal's last report.
func (r *Rollout) Status() RolloutStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := RolloutStatus{Waves: r.waves, MaxInFlight: r.maxInFlight, WaveSize: r.cfg.Wave, Terminals: []TerminalStatus{}}
	for id, rep := range r.reports {
		out.Terminals = append(out.Terminals, TerminalStatus{ID: id, termReport: *rep})
	}
	sort.Slice(out.Terminals, func(i, j int) bool { return out.Terminals[i].ID < out.Terminals[j].ID })
	return out
}

// Reports lists terminals' versions for the edge's report to the hub.
func (r *Rollout) Reports() []release.TerminalReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]release.TerminalReport, 0, len(r.reports))
	for id, rep := range r.reports {
		out = append(out, release.TerminalReport{ID: id, Model: rep.Model, Version: rep.Version})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if len(out) > 512 {
		out = out[:512]
	}
	return out
}
