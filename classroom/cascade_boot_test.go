package classroom

import (
	"testing"
	"time"
)

// TestEdgeBootRestartedSince: the cascade tells an upstream edge's restart
// from a blip by what GET /api/v1/edge says, also for a restart within the
// same second as the start it knew (start times are to the second).
func TestEdgeBootRestartedSince(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	prev := edgeBoot{StartedAt: "2026-12-02T07:59:50Z", Uptime: 10, at: t0}
	for _, c := range []struct {
		name string
		b    edgeBoot
		want bool
	}{
		{"same process later", edgeBoot{StartedAt: prev.StartedAt, Uptime: 16, at: t0.Add(6 * time.Second)}, false},
		{"same process, a second of rounding", edgeBoot{StartedAt: prev.StartedAt, Uptime: 15, at: t0.Add(6900 * time.Millisecond)}, false},
		{"new start time", edgeBoot{StartedAt: "2026-12-02T08:00:05Z", Uptime: 1, at: t0.Add(6 * time.Second)}, true},
		{"same second, less uptime", edgeBoot{StartedAt: prev.StartedAt, Uptime: 0, at: t0.Add(5 * time.Second)}, true},
		{"an upstream that does not say", edgeBoot{at: t0.Add(6 * time.Second)}, false},
	} {
		if got := c.b.restartedSince(prev); got != c.want {
			t.Errorf("%s: restartedSince = %v, want %v", c.name, got, c.want)
		}
	}
	if (edgeBoot{StartedAt: "x", Uptime: 99, at: t0}).restartedSince(edgeBoot{}) {
		t.Error("restarted since an unknown boot")
	}
}
