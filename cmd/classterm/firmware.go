package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/campusedge/campusedge/edge/ctlwire"
	"github.com/campusedge/campusedge/edge/termagent"
	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/slot"
	"github.com/campusedge/campusedge/firmware/termupdate"
)

// withFirmware makes the agent report its terminal model and firmware
// version after every welcome and install the images the edge offers into
// this terminal's own A/B slots (-fw-root), verified with -fw-keys. The
// new slot runs on trial at the terminal's next start (under edgesup).
func withFirmware(agent *termagent.Agent, model, root, keys, fallbackVersion, dataDir string, log *slog.Logger) error {
	ring, err := bundle.LoadKeyring(strings.Split(keys, ",")...)
	if err != nil {
		return err
	}
	be, err := slot.NewDir(root)
	if err != nil {
		return err
	}
	m := slot.NewManager(be, ring, 0)
	var (
		mu       sync.Mutex
		send     func(v any) error
		sctx     context.Context
		updating atomic.Bool
	)
	version := func() string {
		if v := termupdate.Installed(m); v != "" {
			return v
		}
		return fallbackVersion
	}
	report := func(state, version, errText string) {
		mu.Lock()
		s := send
		mu.Unlock()
		if s != nil {
			_ = s(ctlwire.FirmwareStatus{Header: ctlwire.New(ctlwire.TypeFirmwareStatus), Model: model, Version: version, State: state, Error: errText})
		}
	}
	agent.OnSession = func(ctx context.Context, s func(v any) error) {
		mu.Lock()
		send, sctx = s, ctx
		mu.Unlock()
		state := "idle"
		if updating.Load() {
			state = "updating"
		}
		report(state, version(), "")
	}
	agent.OnMessage = func(hdr ctlwire.Header, data []byte) {
		if hdr.Type != ctlwire.TypeFirmwareOffer {
			return
		}
		var offer ctlwire.FirmwareOffer
		if err := json.Unmarshal(data, &offer); err != nil || offer.Model != model {
			return
		}
		if !updating.CompareAndSwap(false, true) {
			return // one update at a time; the edge asks again later
		}
		mu.Lock()
		ctx := sctx
		mu.Unlock()
		go func() {
			defer updating.Store(false)
			report("updating", version(), "")
			log.Info("terminal image offered; installing", "version", offer.Version, "model", model)
			res, err := termupdate.Apply(ctx, termupdate.Config{Edge: agent.State.EdgeURL, Client: agent.HTTPClient(), Model: model, Slots: m,
				Dir: filepath.Join(dataDir, "firmware-download"), Logger: log})
			if err != nil {
				log.Warn("terminal image not installed", "err", err)
				report("failed", version(), err.Error())
				return
			}
			log.Info("terminal image installed", "from", res.From, "to", res.To, "slot", res.Slot)
			report("installed", version(), "")
		}()
	}
	return nil
}
