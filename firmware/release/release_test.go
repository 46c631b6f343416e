package release_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/internal/fwtest"
	"github.com/campusedge/campusedge/firmware/release"
)

func smallBundle(t *testing.T, k fwtest.Keys, target, version, minVersion string) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "edged"), []byte("bin "+version), 0o755)
	out := filepath.Join(t.TempDir(), "b")
	if _, err := bundle.Create(bundle.Build{Dir: dir, Product: "campusedge", Target: target, Version: version, MinVersion: minVersion, Entry: "edged"}, k.Priv, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func check(t *testing.T, h *fwtest.Hub, c release.Check) *release.Release {
	t.Helper()
	b, _ := json.Marshal(c)
	code, body := h.Do(t, http.MethodPost, "/api/v1/firmware/check", b, false)
	if code != 200 {
		t.Fatalf("check: %d %s", code, body)
	}
	var out struct{ Update *release.Release }
	json.Unmarshal(body, &out)
	return out.Update
}

func TestPublishRefusesBadBundlesAndStrangers(t *testing.T) {
	t.Parallel()
	k := fwtest.NewKeys(t, t.TempDir())
	h := fwtest.NewHub(t, k, nil)
	good, _ := os.ReadFile(smallBundle(t, k, "linux-amd64", "1.0.0", ""))
	if code, _ := h.Do(t, http.MethodPost, "/api/v1/firmware/releases", good, false); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	other := fwtest.NewKeys(t, t.TempDir())
	foreign, _ := os.ReadFile(smallBundle(t, other, "linux-amd64", "1.0.0", ""))
	if code, body := h.Do(t, http.MethodPost, "/api/v1/firmware/releases", foreign, true); code != http.StatusUnprocessableEntity || !strings.Contains(string(body), "bad_signature") {
		t.Fatalf("untrusted key: %d %s", code, body)
	}
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-1] ^= 1
	if code, body := h.Do(t, http.MethodPost, "/api/v1/firmware/releases", tampered, true); code != http.StatusUnprocessableEntity {
		t.Fatalf("tampered: %d %s", code, body)
	}
	if code, body := h.Do(t, http.MethodPost, "/api/v1/firmware/releases", good[:len(good)-3], true); code != http.StatusUnprocessableEntity || !strings.Contains(string(body), "truncated") {
		t.Fatalf("truncated: %d %s", code, body)
	}
	if code, body := h.Do(t, http.MethodPost, "/api/v1/firmware/releases?rollout=101", good, true); code != http.StatusUnprocessableEntity {
		t.Fatalf("rollout 101: %d %s", code, body)
	}
	if code, _ := h.Do(t, http.MethodPost, "/api/v1/firmware/releases", good, true); code != http.StatusCreated {
		t.Fatalf("good: %d", code)
	}
	// Same version, other bytes: versions are immutable.
	again, _ := os.ReadFile(smallBundle(t, k, "linux-amd64", "1.0.0", "0.1.0"))
	if code, body := h.Do(t, http.MethodPost, "/api/v1/firmware/releases", again, true); code != http.StatusConflict {
		t.Fatalf("republish other bytes: %d %s", code, body)
	}
	for _, body := range []string{`{`, `{"edge_id":"","product":"campusedge","target":"t","channel":"stable"}`,
		`{"edge_id":"e","product":"campusedge","target":"t","channel":"nightly"}`, `{"edge_id":"e","unknown":1}`,
		`{"edge_id":"e","product":"campusedge","target":"t","channel":"stable","version":"01.0.0"}`} {
		if code, _ := h.Do(t, http.MethodPost, "/api/v1/firmware/check", []byte(body), false); code != http.StatusBadRequest {
			t.Errorf("check %s: %d", body, code)
		}
	}
	if code, _ := h.Do(t, http.MethodPost, "/api/v1/firmware/check", []byte(`{"edge_id":"`+strings.Repeat("x", 70<<10)+`"}`), false); code != http.StatusBadRequest {
		t.Errorf("oversized check accepted: %d", code)
	}
}

func TestChannelsRolloutAndMinVersion(t *testing.T) {
	t.Parallel()
	k := fwtest.NewKeys(t, t.TempDir())
	h := fwtest.NewHub(t, k, nil)
	h.Publish(t, smallBundle(t, k, "linux-amd64", "1.1.0", ""), release.Stable, 100)
	h.Publish(t, smallBundle(t, k, "linux-amd64", "1.2.0", ""), release.Beta, 100)
	h.Publish(t, smallBundle(t, k, "linux-arm64", "9.0.0", ""), release.Stable, 100)
	base := release.Check{EdgeID: "e1", Product: "campusedge", Target: "linux-amd64", Channel: release.Stable, Version: "1.0.0"}
	if r := check(t, h, base); r == nil || r.Version != "1.1.0" {
		t.Fatalf("stable edge got %+v", r)
	}
	beta := base
	beta.Channel = release.Beta
	if r := check(t, h, beta); r == nil || r.Version != "1.2.0" {
		t.Fatalf("beta edge got %+v", r)
	}
	bad := beta
	bad.Bad = []string{"1.2.0"}
	if r := check(t, h, bad); r == nil || r.Version != "1.1.0" {
		t.Fatalf("edge that failed 1.2.0 got %+v", r)
	}
	current := base
	current.Version = "1.1.0"
	if r := check(t, h, current); r != nil {
		t.Fatalf("up-to-date edge got %+v", r)
	}
	// A release that needs at least 1.1.0 is not offered to 1.0.0 edges.
	h.Publish(t, smallBundle(t, k, "linux-amd64", "2.0.0", "1.1.0"), release.Stable, 100)
	if r := check(t, h, base); r == nil || r.Version != "1.1.0" {
		t.Fatalf("1.0.0 edge got %+v, want the stepping stone 1.1.0", r)
	}
	if r := check(t, h, current); r == nil || r.Version != "2.0.0" {
		t.Fatalf("1.1.0 edge got %+v", r)
	}

	// Staged rollout: 30% of 200 edges get 3.0.0; raising it only adds edges.
	h.Publish(t, smallBundle(t, k, "linux-amd64", "3.0.0", ""), release.Stable, 30)
	wave := func() map[string]bool {
		got := map[string]bool{}
		for i := range 200 {
			c := current
			c.Version = "2.0.0"
			c.EdgeID = fmt.Sprintf("edge-%d", i)
			if r := check(t, h, c); r != nil && r.Version == "3.0.0" {
				got[c.EdgeID] = true
			}
		}
		return got
	}
	first := wave()
	if len(first) < 35 || len(first) > 85 {
		t.Fatalf("30%% rollout reached %d of 200 edges", len(first))
	}
	code, body := h.Do(t, http.MethodPatch, "/api/v1/firmware/releases/linux-amd64/3.0.0", []byte(`{"channel":"stable","rollout_percent":60}`), true)
	if code != 200 {
		t.Fatalf("patch: %d %s", code, body)
	}
	second := wave()
	for e := range first {
		if !second[e] {
			t.Fatalf("%s lost the release when the rollout grew", e)
		}
	}
	if len(second) < 95 || len(second) > 145 {
		t.Fatalf("60%% rollout reached %d of 200 edges", len(second))
	}
	code, body = h.Do(t, http.MethodGet, "/api/v1/firmware/edges", nil, true)
	if code != 200 || !strings.Contains(string(body), `"edge-199"`) {
		t.Fatalf("edges: %d", code)
	}
}

func FuzzCheckValidate(f *testing.F) {
	f.Add(`{"edge_id":"e","product":"campusedge","target":"t","channel":"stable","version":"1.0.0"}`)
	f.Add(`{"edge_id":"e","bad":["1"],"terminals":[{"id":"t"}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		var c release.Check
		if json.Unmarshal([]byte(s), &c) != nil {
			return
		}
		if c.Validate() == nil {
			if c.EdgeID == "" || !release.ValidChannel(c.Channel) {
				t.Fatalf("accepted %+v", c)
			}
		}
	})
}
