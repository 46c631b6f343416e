package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/sync/outbox"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "campusedge-sync-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	if _, err := bintest.Build(context.Background(), dir, bintest.LikeThisTest(), bintest.Cmd("edged"), bintest.Cmd("cityhub")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running binary; its stderr is kept and scanned for the address.
type proc struct{ *bintest.Process }

// start runs the built binary name with args until the test ends and
// returns it with its base URL once it logs the address it listens on.
func start(t *testing.T, name string, args ...string) (*proc, string) {
	t.Helper()
	p := bintest.Serve(t, filepath.Join(binDir, name), args...)
	return &proc{p}, p.URL()
}

func (p *proc) logs() string { return p.Logs() }

func (p *proc) kill() { p.Kill() }

func (p *proc) stop(t *testing.T) {
	t.Helper()
	if p.Exited() {
		return
	}
	if _, _, err := p.Stop(20 * time.Second); err != nil {
		t.Fatalf("did not stop on SIGTERM: %v\n%s", err, p.logs())
	}
}

func cli(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s%s", name, args, err, out, stderr.String())
	}
	return string(out)
}

func adminToken(t *testing.T, dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

type syncStatus struct {
	Link     string `json:"link"`
	Backlog  uint64 `json:"backlog"`
	LastSeq  uint64 `json:"last_seq"`
	AckedSeq uint64 `json:"acked_seq"`
}

func getStatus(t *testing.T, url, tok string) syncStatus {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/api/v1/sync", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s syncStatus
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /api/v1/sync: %d %v", resp.StatusCode, err)
	}
	return s
}

// TestKill9UnderLoadThenSyncExactlyOnce: a real edged, enrolled with a real
// cityhub and syncing to it, takes appends from 16 concurrent clients and
// is killed with SIGKILL at random moments, six times (in three of the
// rounds the hub is killed and restarted mid-load too). After each kill,
// every append that had answered 201 is in the outbox or already
// acknowledged; at the end the hub holds each record exactly once (ids and
// count compared through cityhub export-records).
func TestKill9UnderLoadThenSyncExactlyOnce(t *testing.T) {
	dir := t.TempDir()
	hubDir, edgeDir := filepath.Join(dir, "hub"), filepath.Join(dir, "edge")
	cli(t, "cityhub", "-data", hubDir, "school", "add", "s042", "No. 42 Middle School")
	tok := strings.TrimSpace(cli(t, "cityhub", "-data", hubDir, "enrol-token", "s042"))
	// A fixed address, so the hub can be killed and restarted where the edge expects it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hubAddr := ln.Addr().String()
	_ = ln.Close()
	hubP, hubURL := start(t, "cityhub", "-data", hubDir, "-listen", hubAddr)
	out := cli(t, "edged", "enrol", "-data", edgeDir, "-cloud", hubURL, "-token", tok)
	if !strings.Contains(out, "for school s042") {
		t.Fatalf("enrol: %s", out)
	}
	edgeArgs := []string{"-data", edgeDir, "-listen", "127.0.0.1:0", "-mdns=false", "-cloud", hubURL, "-school", "s042"}
	confirmed := map[uint64]string{}
	var mu sync.Mutex
	for round := range 6 {
		edge, url := start(t, "edged", edgeArgs...)
		admin := adminToken(t, edgeDir)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var n int
		for c := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Timeout: 10 * time.Second}
				for i := 0; ctx.Err() == nil; i++ {
					body := fmt.Sprintf(`{"kind":"attendance.mark","payload":{"student":"s%04d","period":%d,"status":"present"}}`, (c*1000+i)%1100, i%8+1)
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/api/v1/sync/records", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+admin)
					resp, err := client.Do(req)
					if err != nil {
						return // killed
					}
					var r struct {
						Seq uint64 `json:"seq"`
						ID  string `json:"id"`
					}
					err = json.NewDecoder(resp.Body).Decode(&r)
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated || err != nil {
						return
					}
					mu.Lock()
					if old, ok := confirmed[r.Seq]; ok && old != r.ID {
						t.Errorf("seq %d answered twice with different ids", r.Seq)
					}
					confirmed[r.Seq] = r.ID
					n++
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
		if round%2 == 1 {
			// The hub dies too (kill -9 mid-batch), and comes back on the same address.
			hubP.kill()
			time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
			hubP, _ = start(t, "cityhub", "-data", hubDir, "-listen", hubAddr)
			time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
		}
		edge.kill()
		cancel()
		wg.Wait()

		// Read the dead edge's store directly.
		db, err := bolt.Open(filepath.Join(edgeDir, "edge.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ob := outbox.New(outbox.Config{DB: db})
		st, _ := ob.Stats()
		pend, err := ob.Pending(0, 1<<30, 1<<40)
		if err != nil {
			t.Fatal(err)
		}
		have := map[uint64]string{}
		for _, r := range pend {
			have[r.Seq] = r.ID
		}
		mu.Lock()
		for seq, id := range confirmed {
			if seq > st.AckedSeq && have[seq] != id {
				t.Fatalf("round %d: append seq %d (%s) answered 201 but is neither acknowledged (acked %d) nor in the outbox", round, seq, id, st.AckedSeq)
			}
		}
		t.Logf("round %d: %d appends answered before SIGKILL; last seq %d, acked %d, backlog %d", round, n, st.LastSeq, st.AckedSeq, st.Backlog)
		mu.Unlock()
		_ = ob.Close()
		_ = db.Close()
		if n == 0 {
			t.Fatalf("round %d: no append answered; edged log:\n%s", round, edge.logs())
		}
	}
	// Restart once more and let it drain.
	edge, url := start(t, "edged", edgeArgs...)
	admin := adminToken(t, edgeDir)
	var s syncStatus
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		s = getStatus(t, url, admin)
		if s.Backlog == 0 && s.AckedSeq == s.LastSeq && s.Link == "up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not drained: %+v\n%s", s, edge.logs())
		}
	}
	edge.stop(t)
	hubP.stop(t)
	rows, err := csv.NewReader(strings.NewReader(cli(t, "cityhub", "-data", hubDir, "export-records", "s042"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	bySeq := map[uint64]string{}
	ids := map[string]bool{}
	for _, r := range rows[1:] {
		seq, _ := strconv.ParseUint(r[1], 10, 64)
		if _, dup := bySeq[seq]; dup || ids[r[2]] {
			t.Fatalf("hub holds seq %d / id %s twice", seq, r[2])
		}
		bySeq[seq], ids[r[2]] = r[2], true
	}
	if uint64(len(bySeq)) != s.LastSeq {
		t.Fatalf("hub holds %d records, the edge appended %d", len(bySeq), s.LastSeq)
	}
	for seq, id := range confirmed {
		if bySeq[seq] != id {
			t.Fatalf("confirmed append seq %d id %s: hub has %q", seq, id, bySeq[seq])
		}
	}
	t.Logf("hub holds %d records exactly once; %d were confirmed to clients before kills", len(bySeq), len(confirmed))
}
