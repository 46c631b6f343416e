package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/campusedge/campusedge/firmware/release"
	"github.com/campusedge/campusedge/sync/cityadmin"
)

// firmwareHandler is the firmware release channel (firmware/release) the
// hub serves at /api/v1/firmware/; hubHandler puts the edge routes behind
// the credential check. With dbURL the release index and the edges'
// reports are in PostgreSQL, shared by every replica (closeState closes
// the pool); bundles are files under DATA/firmware either way.
func firmwareHandler(ctx context.Context, data, dbURL string, log *slog.Logger) (h http.Handler, fw cityadmin.Firmware, closeState func(), err error) {
	closeState = func() {}
	var st *release.Store
	if dbURL == "" {
		st, err = release.Open(data)
	} else {
		var ps *release.PGState
		if ps, err = release.OpenPGState(ctx, dbURL); err != nil {
			return nil, nil, closeState, err
		}
		closeState = ps.Close
		st, err = release.OpenWith(data, ps)
	}
	if err != nil {
		closeState()
		return nil, nil, func() {}, err
	}
	h, err = release.Handler(st, log.With("component", "firmware"))
	return h, consoleFirmware{st}, closeState, err
}

// consoleFirmware is the release channel as the city console sees it.
type consoleFirmware struct{ st *release.Store }

func toConsole(r release.Release) cityadmin.FirmwareRelease {
	return cityadmin.FirmwareRelease{Target: r.Target, Version: r.Version, Channel: r.Channel, Rollout: r.Rollout, Published: r.Published}
}

func (f consoleFirmware) Releases() ([]cityadmin.FirmwareRelease, error) {
	rels, err := f.st.Releases()
	var out []cityadmin.FirmwareRelease
	for _, r := range rels {
		out = append(out, toConsole(r))
	}
	return out, err
}

func (f consoleFirmware) SetRollout(target, version, channel string, pct int) (cityadmin.FirmwareRelease, error) {
	r, err := f.st.SetRollout(target, version, channel, pct)
	if errors.Is(err, release.ErrNotFound) {
		return cityadmin.FirmwareRelease{}, fmt.Errorf("%w: %s %s", cityadmin.ErrNoRelease, target, version)
	}
	return toConsole(r), err
}

func (f consoleFirmware) Edges() ([]cityadmin.FirmwareEdge, error) {
	reps, err := f.st.Edges()
	var out []cityadmin.FirmwareEdge
	for _, e := range reps {
		out = append(out, cityadmin.FirmwareEdge{EdgeID: e.EdgeID, School: e.School, Target: e.Target, Channel: e.Channel, Version: e.Version, State: e.State, Seen: e.Seen})
	}
	return out, err
}
