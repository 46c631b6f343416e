package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/campusedge/campusedge/firmware/release"
	"github.com/campusedge/campusedge/sync/cityadmin"
)

// firmwareHandler is the firmware release channel (firmware/release) the
// hub serves at /api/v1/firmware/; hubHandler puts the edge routes behind
// the credential check.
func firmwareHandler(data string, log *slog.Logger) (http.Handler, cityadmin.Firmware, error) {
	st, err := release.Open(data)
	if err != nil {
		return nil, nil, err
	}
	h, err := release.Handler(st, log.With("component", "firmware"))
	return h, consoleFirmware{st}, err
}

// consoleFirmware is the release channel as the city console sees it.
type consoleFirmware struct{ st *release.Store }

func toConsole(r release.Release) cityadmin.FirmwareRelease {
	return cityadmin.FirmwareRelease{Target: r.Target, Version: r.Version, Channel: r.Channel, Rollout: r.Rollout, Published: r.Published}
}

func (f consoleFirmware) Releases() []cityadmin.FirmwareRelease {
	var out []cityadmin.FirmwareRelease
	for _, r := range f.st.Releases() {
		out = append(out, toConsole(r))
	}
	return out
}

func (f consoleFirmware) SetRollout(target, version, channel string, pct int) (cityadmin.FirmwareRelease, error) {
	r, err := f.st.SetRollout(target, version, channel, pct)
	if errors.Is(err, release.ErrNotFound) {
		return cityadmin.FirmwareRelease{}, fmt.Errorf("%w: %s %s", cityadmin.ErrNoRelease, target, version)
	}
	return toConsole(r), err
}

func (f consoleFirmware) Edges() []cityadmin.FirmwareEdge {
	var out []cityadmin.FirmwareEdge
	for _, e := range f.st.Edges() {
		out = append(out, cityadmin.FirmwareEdge{EdgeID: e.EdgeID, School: e.School, Target: e.Target, Channel: e.Channel, Version: e.Version, State: e.State, Seen: e.Seen})
	}
	return out
}
