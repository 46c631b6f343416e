package classroom_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/url"
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
// finalises the part being recorded and keeps it; the session is restored
// at the restart, and when it ends the lesson is in the catalogue and
// plays.
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
	if !strings.Contains(e.log.String(), "recording part saved") {
		t.Fatalf("edged exited without saving the part it was recording")
	}
	if _, err := os.Stat(filepath.Join(data, "recordings", s.ID+"-1.webm")); err != nil {
		t.Fatalf("the finished part is not on disk: %v", err)
	}
	_, e2 := runEdged(t, bin, data)
	if resp, b := e2.Do(t, ctx, "POST", "/api/v1/sessions/"+s.ID+"/end", e2.admin, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("end the restored session: %d %s", resp.StatusCode, b)
	}
	var cat struct {
		Items []struct {
			ID   string `json:"id"`
			MIME string `json:"mime"`
		} `json:"items"`
	}
	waitFor(t, 15*time.Second, "the lesson in the catalogue", func() bool {
		resp, b := e2.Do(t, ctx, "GET", "/api/v1/catalog?q=stopped", e2.admin, "", nil)
		return resp.StatusCode == http.StatusOK && json.Unmarshal(b, &cat) == nil && len(cat.Items) > 0
	})
	if len(cat.Items) != 1 || cat.Items[0].MIME != "video/webm" {
		t.Fatalf("catalogue after the restart: %+v", cat)
	}
	resp, media := e2.Do(t, ctx, "GET", "/media/"+cat.Items[0].ID, "", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /media: %d", resp.StatusCode)
	}
	if tracks := readWebM(t, media); len(tracks) != 2 || len(tracks[0]) < 30 || !tracks[0][0].key {
		t.Errorf("the recording holds %d tracks; want video (≥30 frames, opening on a keyframe) and audio", len(tracks))
	}
}

// frameNumber is the number vp8Frame put in a frame.
func frameNumber(f []byte, key bool) (int, bool) {
	at := 3
	if key {
		at = 10
	}
	if len(f) < at+4 {
		return 0, false
	}
	return int(binary.BigEndian.Uint32(f[at:])), true
}

// TestKill9RecordingGoesOn: the real edged is killed with SIGKILL while it
// records a lesson and restarted on the same data dir, as systemd would.
// The part being written is not lost: the restart recovers it (up to
// within a couple of seconds of the kill), the restored session records
// its next part when the teacher publishes again, and when the session
// ends the two parts are one lesson in the catalogue: every frame of part
// 1, then every frame of part 2, with one gap that holds nothing of the
// downtime. A finished recording whose import a crash interrupted (as an
// older edge leaves it) is imported at that start too.
func TestKill9RecordingGoesOn(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edged")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	dir := t.TempDir()
	bin := buildEdged(t, ctx, dir)
	data := filepath.Join(dir, "data")
	p, e := runEdged(t, bin, data)
	s := e.createSession(t, ctx, "Killed mid-lesson 物理")
	pub1 := publishKnown(t, ctx, e, s.ID, s.Tokens.Master)
	waitFor(t, 15*time.Second, "three seconds of recording", func() bool { return e.recording(t, ctx, s.ID).VideoFrames > 90 })
	pub1.mu.Lock()
	sentAtKill := len(pub1.vid)
	pub1.mu.Unlock()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	killedAt := time.Now()
	pub1.stop()
	<-pub1.done
	recs := filepath.Join(data, "recordings")
	partials, _ := filepath.Glob(filepath.Join(recs, "*.webm.partial"))
	if len(partials) != 1 {
		t.Fatalf("after the kill the recordings directory holds %v, want one partial file", partials)
	}

	// A finished recording whose import a crash interrupted: the WebM
	// and its catalogue fields, as an older edge left them.
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
	type catalogue struct {
		Items []struct {
			ID              string `json:"id"`
			Title           string `json:"title"`
			DurationSeconds int    `json:"duration_seconds"`
		} `json:"items"`
		Total int `json:"total"`
	}
	var cat catalogue
	waitFor(t, 15*time.Second, "the finished recording to be imported", func() bool {
		resp, b := e2.Do(t, ctx, "GET", "/api/v1/catalog", e2.admin, "", nil)
		return resp.StatusCode == http.StatusOK && json.Unmarshal(b, &cat) == nil && cat.Total > 0
	})
	if cat.Total != 1 || cat.Items[0].Title != "Recovered lesson" {
		t.Fatalf("catalogue after the restart: %+v (want only the finished recording: the lesson is still live)", cat)
	}
	if resp, b := e2.Do(t, ctx, "GET", "/media/"+cat.Items[0].ID, "", "", nil); resp.StatusCode != http.StatusOK || !bytes.Equal(b, finished) {
		t.Errorf("the older recording is served as %d, %d bytes (want the %d finished bytes)", resp.StatusCode, len(b), len(finished))
	}
	waitFor(t, 15*time.Second, "the cut-off part to be recovered", func() bool {
		return strings.Contains(e2.log.String(), "recovered a recording cut off by a crash")
	})
	if _, err := os.Stat(filepath.Join(recs, s.ID+"-1.webm")); err != nil {
		t.Fatalf("the recovered part is not kept for the lesson: %v", err)
	}

	// The teacher publishes again: part 2 of the same lesson.
	pub2 := publishKnown(t, ctx, e2, s.ID, s.Tokens.Master)
	var st recordingStatus
	waitFor(t, 15*time.Second, "two seconds of part 2", func() bool {
		st = e2.recording(t, ctx, s.ID)
		return st.VideoFrames > 60
	})
	if len(st.Parts) != 1 || st.Parts[0].Part != 2 {
		t.Errorf("after the restart the recording's parts are %+v, want part 2", st.Parts)
	}
	if resp, b := e2.Do(t, ctx, "POST", "/api/v1/sessions/"+s.ID+"/end", e2.admin, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("end: %d %s", resp.StatusCode, b)
	}
	waitFor(t, 20*time.Second, "the lesson to be joined and imported", func() bool {
		st = e2.recording(t, ctx, s.ID)
		return st.State == "done" || st.State == "failed"
	})
	pub2.stop()
	<-pub2.done
	l := st.Lesson
	if st.State != "done" || l == nil || l.MediaID != st.MediaID || len(l.Parts) != 2 || len(l.Gaps) != 1 || !l.Parts[0].Recovered || l.Parts[1].Recovered {
		t.Fatalf("the recording after the session ended: %+v lesson %+v", st, l)
	}
	// The gap is where part 2 begins; it lasted from the kill to the
	// restored session's first frame (the restart, the publisher's ICE).
	if g := l.Gaps[0]; g.AtSeconds != l.Parts[1].OffsetSeconds || g.MissingSeconds <= 0 || g.MissingSeconds > time.Since(killedAt).Seconds() {
		t.Errorf("the gap %+v (part 2 at %.1f s, killed %.1f s ago)", g, l.Parts[1].OffsetSeconds, time.Since(killedAt).Seconds())
	}
	resp, b := e2.Do(t, ctx, "GET", "/api/v1/catalog?q="+url.QueryEscape("Killed mid-lesson"), e2.admin, "", nil)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &cat) != nil || cat.Total != 1 || cat.Items[0].ID != l.MediaID {
		t.Fatalf("the catalogue lists %s: want the one lesson %s", b, l.MediaID)
	}
	if strings.Contains(cat.Items[0].Title, "part") {
		t.Errorf("the lesson is titled %q: one lesson, not a part", cat.Items[0].Title)
	}
	resp, media := e2.Do(t, ctx, "GET", "/media/"+l.MediaID, "", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /media: %d", resp.StatusCode)
	}
	tracks := readWebM(t, media)
	if len(tracks) != 2 || len(tracks[0]) == 0 || !tracks[0][0].key {
		t.Fatalf("the lesson holds %d tracks; want video (opening on a keyframe) and audio", len(tracks))
	}
	// The frames: 0, 1, … up to the kill, then 0, 1, … again (part 2's
	// publisher counts from 0): one restart of the count, one gap.
	restarts, last1, prev := 0, -1, -1
	var prevMS, jumpMS int64
	for i, fb := range tracks[0] {
		n, ok := frameNumber(fb.data, fb.key)
		if !ok {
			t.Fatalf("video frame %d is not the publisher's", i)
		}
		if n < prev {
			restarts++
			last1, jumpMS = prev, fb.ms-prevMS
			if !fb.key {
				t.Errorf("part 2 opens on a delta frame (%d)", n)
			}
		} else if prev >= 0 && n != prev+1 {
			t.Errorf("frames %d to %d: %d missing inside a part", prev, n, n-prev-1)
		}
		if fb.ms < prevMS {
			t.Errorf("video frame %d at %d ms, before the one before it (%d ms)", i, fb.ms, prevMS)
		}
		prev, prevMS = n, fb.ms
	}
	if restarts != 1 {
		t.Fatalf("the frame count restarts %d times in the lesson; want once (one gap)", restarts)
	}
	// Part 1 goes on to within 2 s (60 frames) of what was sent when
	// edged was killed; the downtime is not in the file (the next frame
	// follows within a frame or two).
	if last1 < sentAtKill-60 || last1 > sentAtKill+30 {
		t.Errorf("part 1 ends at frame %d; %d had been sent at the kill", last1, sentAtKill)
	}
	if jumpMS > 200 {
		t.Errorf("the join puts %d ms between the parts: the gap is in the file", jumpMS)
	}
	// The lesson is the two parts' media: no more (the downtime is not
	// in it) and no less.
	if d, sum := float64(cat.Items[0].DurationSeconds), l.Parts[0].DurationSeconds+l.Parts[1].DurationSeconds; d < l.DurationSeconds-1 || d > l.DurationSeconds+1 || l.DurationSeconds < sum-0.15 || l.DurationSeconds > sum+0.25 {
		t.Errorf("the lesson lasts %.0f s in the catalogue, %.1f s in the status; its parts %.1f s", d, l.DurationSeconds, sum)
	}
	left, _ := os.ReadDir(recs)
	if len(left) != 0 {
		var names []string
		for _, l := range left {
			names = append(names, l.Name())
		}
		t.Errorf("the recordings directory still holds %v", names)
	}
	t.Logf("part 1: frames 0-%d of %d sent at the kill; gap %+v; lesson %.1f s", last1, sentAtKill, l.Gaps[0], l.DurationSeconds)
}
