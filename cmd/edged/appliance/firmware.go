package appliance

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/campusedge/campusedge/classroom"
	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/buildinfo"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/ctlwire"
	"github.com/campusedge/campusedge/edge/fleet"
	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/release"
	"github.com/campusedge/campusedge/firmware/slot"
	"github.com/campusedge/campusedge/firmware/termimage"
	"github.com/campusedge/campusedge/firmware/update"
)

// liveClassRunning adapts the live classes to update.ClassGate: an update
// waits while any session at this school is live.
func liveClassRunning(live *classroom.Live) update.ClassGate {
	return update.ClassGateFunc(func() bool {
		for _, s := range live.Sessions.List() {
			if s.State == session.StateLive {
				return true
			}
		}
		return false
	})
}

// seenTerminals lists paired terminals with whether a live class includes
// their classroom.
func seenTerminals(fl *fleet.Fleet, live *classroom.Live) ([]termimage.Seen, error) {
	ts, err := fl.Terminals()
	if err != nil {
		return nil, err
	}
	inClass := map[string]bool{}
	for _, s := range live.Sessions.List() {
		if s.State == session.StateLive {
			for _, c := range s.Classrooms {
				inClass[c] = true
			}
		}
	}
	out := make([]termimage.Seen, 0, len(ts))
	for _, t := range ts {
		out = append(out, termimage.Seen{ID: t.ID, ClassroomID: t.ClassroomID, Online: t.Online, InClass: inClass[t.ClassroomID]})
	}
	return out, nil
}

// mountFirmware registers GET /api/v1/firmware and POST
// /api/v1/firmware/check and starts the updater when -fw-root is set; with
// -cloud too it serves terminal images at /api/v1/terminal-images/.
// restart makes edged exit so edgesup starts the slot it switched to; hc
// is the pinned hub client (uplink.HubClient) for bundles and images.
func mountFirmware(ctx context.Context, cfg config.Config, srv *api.Server, edgeID string, fl *fleet.Fleet, live *classroom.Live, restart func(), hc *http.Client, log *slog.Logger) error {
	classes := liveClassRunning(live)
	if cfg.FirmwareRoot == "" {
		disabled := map[string]any{"state": "disabled", "version": buildinfo.Version, "target": cfg.FirmwareTarget,
			"detail": "firmware updates are off: run edged under edgesup with -fw-root and -fw-keys (docs/FIRMWARE.md)"}
		srv.HandleFunc("GET /api/v1/firmware", func(w http.ResponseWriter, r *http.Request) { httpapi.WriteJSON(w, http.StatusOK, disabled) })
		srv.HandleFunc("POST /api/v1/firmware/check", srv.Admin(func(w http.ResponseWriter, r *http.Request) {
			httpapi.WriteError(w, http.StatusConflict, "firmware_disabled", disabled["detail"].(string))
		}))
		return nil
	}
	keys, err := bundle.LoadKeyring(strings.Split(cfg.FirmwareKeys, ",")...)
	if err != nil {
		return fmt.Errorf("firmware: %w", err)
	}
	be, err := slot.NewDir(cfg.FirmwareRoot)
	if err != nil {
		return err
	}
	var terminals func() []release.TerminalReport
	if cfg.Cloud != "" {
		// Terminal images: fetched once from the hub, served on the LAN,
		// offered to terminals in waves that skip classrooms in a live class.
		ti := termimage.New(ctx, termimage.Config{Hub: strings.TrimRight(cfg.Cloud, "/"), Client: hc, EdgeID: edgeID, Channel: cfg.FirmwareChannel, Keys: keys,
			Dir: filepath.Join(cfg.DataDir, "terminal-images"), Logger: log.With("part", "terminal-images")})
		ti.Register(srv)
		ro := termimage.NewRollout(termimage.RolloutConfig{Images: ti, Wave: cfg.FirmwareWave, Tick: cfg.FirmwareWaveInterval,
			Logger: log.With("part", "terminal-images"),
			List:   func() ([]termimage.Seen, error) { return seenTerminals(fl, live) },
			Send:   func(id string, o ctlwire.FirmwareOffer) bool { return srv.SendToTerminal(id, o) }})
		srv.HandleTerminal(ctlwire.TypeFirmwareStatus, ro.Report)
		srv.HandleFunc("GET /api/v1/terminal-images", srv.Admin(func(w http.ResponseWriter, r *http.Request) {
			httpapi.WriteJSON(w, http.StatusOK, ro.Status())
		}))
		terminals = ro.Reports
		go ro.Run(ctx)
	}
	u := update.New(update.Config{Terminals: terminals, Hub: strings.TrimRight(cfg.Cloud, "/"), Client: hc, EdgeID: edgeID, School: cfg.School, Product: buildinfo.Product,
		Target: cfg.FirmwareTarget, Channel: cfg.FirmwareChannel, Slots: slot.NewManager(be, keys, 0),
		Download: filepath.Join(cfg.DataDir, "firmware-download"), Classes: classes, Restart: restart,
		RateLimit: cfg.FirmwareRate, Logger: log, FallbackVersion: buildinfo.Version})
	st := u.Status()
	log.Info("firmware", "version", st.Version, "slot", st.Slot, "trial", st.Trial, "floor", st.Floor, "target", st.Target, "channel", st.Channel, "trusted_keys", st.TrustedKeys)
	srv.HandleFunc("GET /api/v1/firmware", func(w http.ResponseWriter, r *http.Request) { httpapi.WriteJSON(w, http.StatusOK, u.Status()) })
	srv.HandleFunc("POST /api/v1/firmware/check", srv.Admin(func(w http.ResponseWriter, r *http.Request) {
		if cfg.Cloud == "" {
			httpapi.WriteError(w, http.StatusConflict, "offline", "no -cloud hub is configured; firmware comes from the city hub")
			return
		}
		// The check runs on edged's lifetime, not the request's: a download
		// must not stop because the browser tab closed.
		go func() {
			if err := u.CheckOnce(ctx); err != nil {
				log.Warn("firmware check failed", "err", err)
			}
		}()
		httpapi.WriteJSON(w, http.StatusAccepted, u.Status())
	}))
	go u.Run(ctx)
	return nil
}
