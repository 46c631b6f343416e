package e2e

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClassRecordLeavesAtOnce: on an enrolled, idle edge whose link is up,
// a record a class writes through the learning store (here the session
// log of a class that ends) is acknowledged by the hub within 2 s: every
// append wakes the uplink, not only the appends made through the outbox's
// own writer (before, such records waited for the uplink's next timer, up
// to a minute).
func TestClassRecordLeavesAtOnce(t *testing.T) {
	dir := t.TempDir()
	hubDir, edgeDir := filepath.Join(dir, "hub"), filepath.Join(dir, "edge")
	cli(t, "cityhub", "-data", hubDir, "school", "add", "s8", "第八中学")
	tok := strings.TrimSpace(cli(t, "cityhub", "-data", hubDir, "enrol-token", "s8"))
	_, hubURL := start(t, "cityhub", "-data", hubDir, "-listen", "127.0.0.1:0")
	_, url := start(t, "edged", "-data", edgeDir, "-listen", "127.0.0.1:0", "-mdns=false", "-cloud", hubURL, "-school", "s8")
	admin := adminToken(t, edgeDir)
	post := func(path, body string, want int) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	post("/api/v1/sync/enrol", `{"token":"`+tok+`"}`, http.StatusOK)
	waitStatus := func(what string, within time.Duration, ok func(syncStatus) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			st := getStatus(t, url, admin)
			if ok(st) {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("%s: not within %v: %+v", what, within, st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitStatus("link up", 30*time.Second, func(s syncStatus) bool { return s.Link == "up" && s.Backlog == 0 })
	time.Sleep(2 * time.Second) // idle: the uplink is waiting for its timer

	body := post("/api/v1/sessions", `{"title":"数学 初一(3)班"}`, http.StatusCreated)
	id := body[strings.Index(body, `"id":"`)+6:]
	id = id[:strings.Index(id, `"`)]
	post("/api/v1/sessions/"+id+"/start", "", http.StatusOK)
	before := getStatus(t, url, admin)
	post("/api/v1/sessions/"+id+"/end", "", http.StatusOK)
	took := waitStatus("the class's session log acknowledged by the hub", 10*time.Second, func(s syncStatus) bool {
		return s.LastSeq > before.LastSeq && s.AckedSeq >= s.LastSeq
	})
	if took > 2*time.Second {
		t.Errorf("a class record reached the hub %v after it was written, want under 2 s on an idle link", took)
	}
	t.Logf("class record acknowledged by the hub %v after the class ended", took.Round(time.Millisecond))
}
