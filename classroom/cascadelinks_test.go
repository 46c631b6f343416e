package classroom_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

type cascadeLinkJSON struct {
	Direction   string  `json:"direction"`
	Session     string  `json:"session"`
	Peer        string  `json:"peer"`
	State       string  `json:"state"`
	Since       string  `json:"since"`
	Measured    bool    `json:"measured"`
	Estimate    int64   `json:"estimate_kbps"`
	ReceiveKbps int64   `json:"receive_kbps"`
	Quality     string  `json:"quality"`
	Layers      int     `json:"layers"`
	LossPct     float64 `json:"loss_pct"`
	Paused      bool    `json:"paused"`
}

func (e *edge) cascadeLinks(t *testing.T, ctx context.Context) []cascadeLinkJSON {
	t.Helper()
	resp, b := e.Do(t, ctx, "GET", "/api/v1/cascade/links", e.admin, "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/cascade/links: %d %s", resp.StatusCode, b)
	}
	var v struct{ Links []cascadeLinkJSON }
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v.Links
}

// checkCascadeLinks (TestCascade): with B pulling session sa of A into
// sb, both edges show the link: B its upstream, connected and measured by
// A (A answers B's question about it), with what arrives; A the school
// pulling from it. A's per-pull answer is only for the token that made
// the pull; /metrics has the link.
func checkCascadeLinks(t *testing.T, ctx context.Context, a, b *edge, sa, sb string, cascadeToken string) {
	t.Helper()
	var up cascadeLinkJSON
	waitFor(t, 15*time.Second, "B's cascade link measured by A", func() bool {
		ls := b.cascadeLinks(t, ctx)
		if len(ls) != 1 {
			return false
		}
		up = ls[0]
		return up.State == "connected" && up.Measured && up.ReceiveKbps > 0
	})
	if up.Direction != "upstream" || up.Session != sb || up.Layers != 1 || up.Quality != "" || up.Since == "" {
		t.Errorf("B's link %+v: want upstream, session %s, the lesson's one layer", up, sb)
	}
	down := a.cascadeLinks(t, ctx)
	if len(down) != 1 || down[0].Direction != "downstream" || down[0].Session != sa || down[0].State != "connected" || down[0].Peer == "" {
		t.Errorf("A's links %+v: want B's school pulling session %s, connected", down, sa)
	}
	// Someone else's resource, or none: not found; no token: refused.
	if resp, body := a.Do(t, ctx, "GET", "/whep/"+sa+"/0123456789abcdef0123456789abcdef/link", cascadeToken, "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET an unknown pull's link: %d %s", resp.StatusCode, body)
	}
	if resp, body := a.Do(t, ctx, "GET", "/whep/"+sa+"/0123456789abcdef0123456789abcdef/link", "", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET a pull's link without a token: %d %s", resp.StatusCode, body)
	}
	_, m := b.Do(t, ctx, "GET", "/metrics", "", "", nil)
	if !strings.Contains(string(m), `campusedge_cascade_link_connected{direction="upstream",peer=`) {
		t.Errorf("B's /metrics has no cascade link")
	}
}
