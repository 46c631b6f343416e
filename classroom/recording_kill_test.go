package classroom_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/campusedge/campusedge/classroom/record"
	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/edge/logtest"
)

// runEdged starts the real edged binary on data and returns it as an edge;
// its log goes to the edge's buffer.
func runEdged(t *testing.T, bin, data string) (*bintest.Process, *edge) {
	t.Helper()
	logBuf := &logtest.Buffer{}
	p, err := bintest.Start(bin, []string{"-data", data, "-listen", "127.0.0.1:0", "-mdns=false"}, 20*time.Second, logBuf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("edged log:\n%s", logBuf.String())
		}
	})
	tok, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	return p, &edge{url: p.URL(), admin: strings.TrimSpace(string(tok)), log: logBuf}
}

// buildEdged builds the real edged binary into dir.
func buildEdged(t *testing.T, ctx context.Context, dir string) string {
	t.Helper()
	bins, err := bintest.Build(ctx, dir, bintest.BuildOptions{}, bintest.Cmd("edged"))
	if err != nil {
		t.Fatal(err)
	}
	return bins[0]
}

// TestShutdownFinalisesRecording: edged stopped (SIGTERM) mid-lesson
// finalises the recording and imports it before it exits; after a restart
// the lesson is in the catalogue and plays.
func TestShutdownFinalisesRecording(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edged")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	bin := buildEdged(t, ctx, dir)
	data := filepath.Join(dir, "data")
	p, e := runEdged(t, bin, data)
	s := e.createSession(t, ctx, "Stopped mid-lesson")
	publishKnown(t, ctx, e, s.ID, s.Tokens.Master)
	waitFor(t, 15*time.Second, "the recording to grow", func() bool { return e.recording(t, ctx, s.ID).VideoFrames > 30 })
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("edged did not stop within 30 s of SIGTERM")
	}
	if !strings.Contains(e.log.String(), "recorded lesson in the catalogue") {
		t.Fatalf("edged exited without importing the recording")
	}
	_, e2 := runEdged(t, bin, data)
	resp, b := e2.Do(t, ctx, "GET", "/api/v1/catalog?q=stopped", e2.admin, "", nil)
	var cat struct {
		Items []struct {
			ID   string `json:"id"`
			MIME string `json:"mime"`
		} `json:"items"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &cat) != nil || len(cat.Items) != 1 || cat.Items[0].MIME != "video/webm" {
		t.Fatalf("catalogue after the restart: %d %s", resp.StatusCode, b)
	}
	resp, media := e2.Do(t, ctx, "GET", "/media/"+cat.Items[0].ID, "", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /media: %d", resp.StatusCode)
	}
	if tracks := readWebM(t, media); len(tracks) != 2 || len(tracks[0]) < 30 || !tracks[0][0].key {
		t.Errorf("the recording holds %d tracks; want video (≥30 frames, opening on a keyframe) and audio", len(tracks))
	}
}

// TestKill9MidRecording: the real edged is killed with SIGKILL while it
// records a lesson. The half-written file is never served: the next start
// removes it, and the catalogue holds only a recording that had been
// finished (and whose import was cut short), imported at that start.
func TestKill9MidRecording(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edged")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	bin := buildEdged(t, ctx, dir)
	data := filepath.Join(dir, "data")
	p, e := runEdged(t, bin, data)
	s := e.createSession(t, ctx, "Killed mid-lesson")
	publishKnown(t, ctx, e, s.ID, s.Tokens.Master)
	waitFor(t, 15*time.Second, "the recording to grow", func() bool { return e.recording(t, ctx, s.ID).Bytes > 30000 })
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	recs := filepath.Join(data, "recordings")
	partials, _ := filepath.Glob(filepath.Join(recs, "*.webm.partial"))
	if len(partials) != 1 {
		t.Fatalf("after the kill the recordings directory holds %v, want one partial file", partials)
	}

	// A finished recording whose import a crash interrupted: the WebM
	// and its metadata, as the recorder leaves them before importing.
	done1 := filepath.Join(recs, "0123456789abcdef01234567-1")
	f, err := os.Create(done1 + ".webm")
	if err != nil {
		t.Fatal(err)
	}
	r, err := record.New(f, []record.Track{{MimeType: "video/VP8", ClockRate: 90000}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		fr := vp8Frame(i, i%30 == 0)
		_ = r.WriteRTP(0, &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(i * 3000), Marker: true}, Payload: append([]byte{0x10}, fr...)})
	}
	if _, err := r.Close(); err != nil {
		t.Fatal(err)
	}
	finished, _ := os.ReadFile(done1 + ".webm")
	meta, _ := json.Marshal(map[string]any{"title": "Recovered lesson", "mime": "video/webm", "duration_seconds": 2})
	if err := os.WriteFile(done1+".json", meta, 0o600); err != nil {
		t.Fatal(err)
	}

	_, e2 := runEdged(t, bin, data)
	var cat struct {
		Items []struct {
			ID    string `json:"id"`
			Title string `json:"title"`
		} `json:"items"`
		Total int `json:"total"`
	}
	waitFor(t, 15*time.Second, "the finished recording to be imported", func() bool {
		resp, b := e2.Do(t, ctx, "GET", "/api/v1/catalog", e2.admin, "", nil)
		return resp.StatusCode == http.StatusOK && json.Unmarshal(b, &cat) == nil && cat.Total > 0
	})
	if cat.Total != 1 || cat.Items[0].Title != "Recovered lesson" {
		t.Fatalf("catalogue after the restart: %+v (want only the finished recording)", cat)
	}
	resp, b := e2.Do(t, ctx, "GET", "/media/"+cat.Items[0].ID, "", "", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, finished) {
		t.Errorf("the recovered lesson is served as %d, %d bytes (want the %d finished bytes)", resp.StatusCode, len(b), len(finished))
	}
	left, _ := os.ReadDir(recs)
	if len(left) != 0 {
		var names []string
		for _, l := range left {
			names = append(names, l.Name())
		}
		t.Errorf("the recordings directory still holds %v", names)
	}
	if !strings.Contains(e2.log.String(), "removing a recording cut off by a crash") {
		t.Error("the restart did not log the removal of the partial recording")
	}
}
