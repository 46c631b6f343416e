package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/sync/schooldata"
)

// TestAdminCommandsWhileServing: with the default bbolt store held by a
// serving hub, every admin command works through the hub's admin API
// while a real edge (bbolt, outbox, uplink over pinned HTTPS) keeps
// sending records and pulling changes: the edge sees no sync error, all
// its records arrive, the imported roster reaches it, and the hub is the
// same process throughout.
func TestAdminCommandsWhileServing(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	data := t.TempDir()
	h := runHub(ctx, t, data, "127.0.0.1:0")
	mustCLI := func(args ...string) string { t.Helper(); return h.cli(args...) + "\n" }
	// The store is locked: this goes through the API.
	mustCLI("school", "add", "north", "North Middle")
	tok := strings.TrimSpace(mustCLI("enrol-token", "north"))
	hubURL := h.base()
	e := enrolEdge(ctx, t, hubURL, tok)
	ob := e.ob
	var mu sync.Mutex
	var roster []byte
	up := e.uplink(hubURL, 100*time.Millisecond, func(_ *bolt.Tx, kind string, d []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if kind == schooldata.KindRoster {
			roster = bytes.Clone(d)
		}
		return nil
	})
	uctx, ustop := context.WithCancel(ctx)
	defer ustop()
	go up.Run(uctx)

	// Sync traffic: 300 records over ~3 s, while the commands run; the
	// status is watched for any error the whole time.
	const records = 300
	var syncErrs []string
	trafficDone := make(chan struct{})
	go func() {
		defer close(trafficDone)
		for i := 0; i < records; i++ {
			if _, err := ob.Append(ctx, "attendance.mark", []byte(`{"n":1}`)); err != nil {
				syncErrs = append(syncErrs, err.Error())
				return
			}
			if st, _ := up.Status(); st.LastError != "" {
				syncErrs = append(syncErrs, st.LastError)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	if out := mustCLI("school", "list"); !strings.Contains(out, "north\tNorth Middle") {
		t.Errorf("school list: %q", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.csv")
	good := filepath.Join(t.TempDir(), "good.csv")
	os.WriteFile(bad, []byte("student_id,name,homeroom,groups\ns1,,7A,\n"), 0o600)
	os.WriteFile(good, []byte("student_id,name,homeroom,groups\ns1,Wang Fang,7A,\ns2,Li Lei,7B,\n"), 0o600)
	if code, out, _ := cli(ctx, "-data", data, "import-roster", "-preview", "north", bad); code != 1 || !strings.Contains(out, "error: row 2, column name") {
		t.Errorf("preview of a bad roster: exit %d, %q", code, out)
	}
	if out := mustCLI("import-roster", "-preview", "north", good); !strings.Contains(out, "2 rows: 2 added, 0 removed") {
		t.Errorf("preview: %q", out)
	}
	if out := mustCLI("import-roster", "north", good); !strings.Contains(out, "imported as change 1") {
		t.Errorf("import: %q", out)
	}
	t.Setenv("CITYHUB_PASSWORD", "a long enough password")
	mustCLI("account", "add", "-school", "north", "li", "school_admin")
	if out := mustCLI("enrol-token", "north"); !strings.Contains(out, "~") {
		t.Errorf("second token %q", out)
	}
	<-trafficDone
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, _ := up.Status()
		mu.Lock()
		got := roster
		mu.Unlock()
		if st.AckedSeq == records && got != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge status %+v, roster %q", st, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := mustCLI("edge", "list"); !strings.Contains(out, "acked=300") || !strings.Contains(out, "health=ok") || !strings.Contains(out, "backlog=") {
		t.Errorf("edge list: %q", out)
	}
	// Exports and a catalogue import, all through the running hub.
	if out := mustCLI("export-roster", "north"); !strings.HasPrefix(out, "\ufeff") || !strings.Contains(out, "Wang Fang") || !strings.Contains(out, "Li Lei") {
		t.Errorf("export-roster: %q", out)
	}
	if out := mustCLI("export-records", "-tz", "Asia/Urumqi", "north"); strings.Count(out, "attendance.mark") != records {
		t.Errorf("export-records has %d attendance records, want %d", strings.Count(out, "attendance.mark"), records)
	}
	if code, _, errs := cli(ctx, "-data", data, "export-timetable", "north"); code != 1 || !strings.Contains(errs, "no timetable imported") {
		t.Errorf("export of nothing: exit %d %s", code, errs)
	}
	lessons := t.TempDir()
	os.WriteFile(filepath.Join(lessons, "分数的初步认识.mp4"), []byte("lesson video bytes"), 0o600)
	os.WriteFile(filepath.Join(lessons, ".hidden"), []byte("x"), 0o600)
	out := mustCLI("import", lessons)
	id, path, _ := strings.Cut(strings.TrimSpace(out), "\t")
	if strings.Count(out, "\n") != 1 || path != filepath.Join(lessons, "分数的初步认识.mp4") || id == "" {
		t.Fatalf("import through the running hub printed %q", out)
	}
	resp, err := staffGet(t, data, "http://"+h.plain.String()+"/api/v1/catalog")
	if err != nil {
		t.Fatal(err)
	}
	cat, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(cat), `"id":"`+id+`"`) || !strings.Contains(string(cat), "分数的初步认识") || !strings.Contains(string(cat), "video/mp4") {
		t.Errorf("catalogue after the import: %s", cat)
	}
	if len(syncErrs) > 0 {
		t.Errorf("sync errors during admin commands: %q", syncErrs)
	}
	var r schooldata.Roster
	mu.Lock()
	_ = json.Unmarshal(roster, &r)
	mu.Unlock()
	if len(r.Students) != 2 {
		t.Errorf("edge's roster %+v", r)
	}
	// From "another machine": -hub over HTTPS, pinned, with the staff token.
	staffTok, err := os.ReadFile(filepath.Join(data, "staff-token"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(apiKeyEnv, strings.TrimSpace(string(staffTok)))
	pin := mustCLI("tls-pin")
	if code, out, errs := cli(ctx, "-hub", hubURL, "-hub-pin", strings.TrimSpace(pin), "school", "list"); code != 0 || !strings.Contains(out, "north\tNorth Middle") {
		t.Errorf("school list through -hub: exit %d %q %s", code, out, errs)
	}
	if code, _, errs := cli(ctx, "-hub", hubURL, "-hub-pin", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "school", "list"); code != 1 || !strings.Contains(errs, "pin") {
		t.Errorf("a wrong pin: exit %d %s", code, errs)
	}
	t.Setenv(apiKeyEnv, "not-a-key")
	if code, _, errs := cli(ctx, "-hub", hubURL, "-hub-pin", strings.TrimSpace(pin), "school", "list"); code != 1 || !strings.Contains(errs, "unauthenticated") {
		t.Errorf("a wrong key: exit %d %s", code, errs)
	}
	if code, ok := h.exited(); ok {
		t.Fatalf("the hub stopped (exit %d) during the commands", code)
	}
	if code := h.stop(); code != 0 {
		t.Fatalf("hub exit %d", code)
	}
}

// TestPreviewOnTheStore: with no hub running, import -preview works on the
// store itself and applies nothing.
func TestPreviewOnTheStore(t *testing.T) {
	ctx := t.Context()
	data := t.TempDir()
	if code, _, errs := cli(ctx, "-data", data, "school", "add", "n", "North"); code != 0 {
		t.Fatal(errs)
	}
	good := filepath.Join(t.TempDir(), "good.csv")
	os.WriteFile(good, []byte("student_id,name,homeroom,groups\ns1,Wang Fang,7A,\n"), 0o600)
	code, out, errs := cli(ctx, "-data", data, "import-roster", "-preview", "n", good)
	if code != 0 || !strings.Contains(out, "1 rows: 1 added") {
		t.Fatalf("preview: %d %q %s", code, out, errs)
	}
	if code, _, errs := cli(ctx, "-data", data, "export-roster", "n"); code != 1 || !strings.Contains(errs, "no roster imported") {
		t.Fatalf("the preview applied something: %d %s", code, errs)
	}
}
