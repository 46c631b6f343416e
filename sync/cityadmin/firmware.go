package cityadmin

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/campusedge/campusedge/edge/httpapi"
)

// Firmware is the hub's release channel as the console uses it; cityhub
// adapts firmware/release to it (sync does not import firmware).
type Firmware interface {
	Releases() ([]FirmwareRelease, error)
	SetRollout(target, version, channel string, percent int) (FirmwareRelease, error)
	Edges() ([]FirmwareEdge, error)
}

// ErrNoRelease is what SetRollout wraps for an unknown release.
var ErrNoRelease = errors.New("no such release")

// FirmwareRelease is one published release and its rollout stage.
type FirmwareRelease struct {
	Target    string    `json:"target"`
	Version   string    `json:"version"`
	Channel   string    `json:"channel"`
	Rollout   int       `json:"rollout_percent"`
	Published time.Time `json:"published"`
}

// FirmwareEdge is what an edge last reported to the release channel.
type FirmwareEdge struct {
	EdgeID  string    `json:"edge_id"`
	School  string    `json:"school,omitempty"`
	Target  string    `json:"target"`
	Channel string    `json:"channel"`
	Version string    `json:"version"`
	State   string    `json:"state"`
	Seen    time.Time `json:"seen"`
}

// Waves are the rollout stages the console steps through.
var Waves = []int{1, 5, 25, 50, 100}

// RolloutView is a release with its wave's progress.
type RolloutView struct {
	FirmwareRelease
	NextWave int `json:"next_wave"` // 0 when at 100 %
	Edges    int `json:"edges"`     // edges of its target and channel that report
	Updated  int `json:"updated"`   // of them, running this version
	Failing  int `json:"failing"`   // of them, reporting a failed or rolled-back state
}

func nextWave(p int) int {
	for _, w := range Waves {
		if w > p {
			return w
		}
	}
	return 0
}

func (a *API) listFirmware(w http.ResponseWriter, _ *http.Request, _ Principal) {
	if a.fw == nil {
		httpapi.WriteError(w, http.StatusNotImplemented, "no_firmware", "this hub serves no firmware channel")
		return
	}
	edges, err := a.fw.Edges()
	if err != nil {
		a.storeErr(w, "firmware reports", err)
		return
	}
	rels, err := a.fw.Releases()
	if err != nil {
		a.storeErr(w, "firmware releases", err)
		return
	}
	out := []RolloutView{}
	for _, r := range rels {
		v := RolloutView{FirmwareRelease: r, NextWave: nextWave(r.Rollout)}
		for _, e := range edges {
			if e.Target != r.Target || e.Channel != r.Channel {
				continue
			}
			v.Edges++
			if e.Version == r.Version {
				v.Updated++
			}
			if s := strings.ToLower(e.State); strings.Contains(s, "fail") || strings.Contains(s, "rollback") || strings.Contains(s, "rolled_back") {
				v.Failing++
			}
		}
		out = append(out, v)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"releases": out, "waves": Waves})
}

func (a *API) setRollout(w http.ResponseWriter, r *http.Request, p Principal) {
	if a.fw == nil {
		httpapi.WriteError(w, http.StatusNotImplemented, "no_firmware", "this hub serves no firmware channel")
		return
	}
	var req struct {
		Channel string `json:"channel"`
		Rollout *int   `json:"rollout_percent"`
	}
	if !httpapi.DecodeJSON(w, r, maxJSONBody, &req) {
		return
	}
	if req.Rollout == nil || *req.Rollout < 0 || *req.Rollout > 100 || (req.Channel != "stable" && req.Channel != "beta") {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_rollout", `send {"channel":"stable"|"beta","rollout_percent":0-100}; 0 stops the rollout`)
		return
	}
	rel, err := a.fw.SetRollout(r.PathValue("target"), r.PathValue("version"), req.Channel, *req.Rollout)
	switch {
	case errors.Is(err, ErrNoRelease):
		httpapi.WriteError(w, http.StatusNotFound, "not_found", err.Error())
		return
	case err != nil:
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_rollout", err.Error())
		return
	}
	a.log.Info("firmware rollout changed", "target", rel.Target, "version", rel.Version, "channel", rel.Channel, "rollout_percent", rel.Rollout, "by", p.User)
	httpapi.WriteJSON(w, http.StatusOK, rel)
}
