package classroom_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/disktest"
	"github.com/campusedge/campusedge/edge/logtest"
)

// TestRecordingOnFullDisk: a recorded class on an edge whose data disk (64
// MB, ext4 on a loop device or tmpfs) fills up mid-lesson. The lesson goes
// on being forwarded at full rate; the recording fails with a reason
// naming the full disk once the class ends; and edged still shuts down
// within appliancetest's 15 s (before, the WebM muxer's pipeline stopped on
// the write error and the next frame blocked the recorder, and edged's
// shutdown with it, for ever).
func TestRecordingOnFullDisk(t *testing.T) {
	mnt, kind := disktest.Small(t, 64)
	t.Logf("data disk: %s", kind)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	var lb logtest.Buffer
	e := startEdgeAt(t, ctx, "127.0.0.1:0", &lb, func(c *config.Config) { c.DataDir = filepath.Join(mnt, "edge") })
	s := e.createClass(t, ctx, "物理 录课", 1)
	pub := mediatest.Publish(t, ctx, e, s.ID, s.Tokens.Master)
	sub := mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Classrooms[s.Classrooms[0]].Terminal)
	waitFor(t, 15*time.Second, "the recording to start", func() bool {
		st := e.recording(t, ctx, s.ID)
		return st.State == "recording" && st.Bytes > 0
	})
	disktest.Fill(t, filepath.Join(mnt, "filler"))
	if got, sent := mediatest.KeptUp(sub, pub, 2*time.Second); sent == 0 || float64(got) < mediatest.FullRate*float64(sent) {
		t.Errorf("forwarding on a full disk: got %d of %d video packets", got, sent)
	}
	if resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions/"+s.ID+"/end", e.admin, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("end: %d %s", resp.StatusCode, b)
	}
	var st recordingStatus
	waitFor(t, 15*time.Second, "the recording to fail", func() bool {
		st = e.recording(t, ctx, s.ID)
		return st.State == "failed"
	})
	if !strings.Contains(st.Reason, "no space left") {
		t.Errorf("the failed recording's reason does not name the full disk: %q", st.Reason)
	}
	t.Logf("recording on a full disk: %s (%s)", st.State, st.Reason)
}
