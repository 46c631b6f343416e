package classroom_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/disktest"
)

// TestTeacherPageRetriesNotSaved: in real headless Chromium, the teacher
// page of a real edge whose data disk (64 MB, ext4 on a loop device or
// tmpfs) is full pushes a quiz. The edge refuses it with not_saved (the
// question could not be stored, so nobody sees it); the page shows "Not
// saved, retrying…" and sends it again with backoff; once space is freed
// the quiz is stored and acknowledged, the banner goes, and the quiz is
// in the session's records.
func TestTeacherPageRetriesNotSaved(t *testing.T) {
	// The disk is mounted outside the test's network namespace (mounting
	// needs the real root; the namespace shares the mounts) and named to
	// the run inside it.
	const diskEnv = "CAMPUSEDGE_TEST_NOTSAVED_DISK"
	mnt := os.Getenv(diskEnv)
	if mnt == "" {
		m, kind := disktest.Small(t, 64)
		t.Logf("data disk: %s", kind)
		t.Setenv(diskEnv, m)
		mnt = m
	}
	if !browsertest.OnLAN(t) {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	e := startLANEdge(t, ctx, func(c *config.Config) { c.DataDir = filepath.Join(mnt, "edge") })
	if resp, b := e.Do(t, ctx, "POST", "/api/v1/classrooms", e.admin, "application/json", []byte(`{"name":"Room 9C","room_code":"9C"}`)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("classroom: %d %s", resp.StatusCode, b)
	}
	teacher := browsertest.Start(ctx, t, browsertest.TrustPin(e.tls.Pin)).Context()
	navigate(t, teacher, e.url+"/teacher.html")
	browsertest.RequireSecureLAN(teacher, t)
	browserEval[bool](teacher, t, `document.getElementById("admin").value = `+jsString(e.admin)+`; document.getElementById("load").click(); true`)
	browserPoll(teacher, t, "classrooms listed", `document.querySelectorAll(".room").length === 1`)
	browserEval[bool](teacher, t, `document.getElementById("class-title").value = "化学 9C"; document.getElementById("start").click(); true`)
	browserPoll(teacher, t, "teacher publishing", `window.teacher.published === true`)
	sessionID := browserEval[string](teacher, t, `window.teacher.conn.welcome.session_id`)

	// Something else fills the disk; the store's last free pages go to
	// records until the edge refuses one (507), so the next record must
	// grow edge.db and cannot.
	disktest.Fill(t, filepath.Join(mnt, "filler"))
	for i := 0; ; i++ {
		resp, _ := e.Do(t, ctx, "POST", "/api/v1/sync/records", e.admin, "application/json",
			[]byte(`{"kind":"filler.test","payload":{"pad":"`+strings.Repeat("z", 8000)+`"}}`))
		if resp.StatusCode == http.StatusInsufficientStorage {
			break
		}
		if resp.StatusCode != http.StatusCreated || i > 2000 {
			t.Fatalf("record %d on a filling disk: %d", i, resp.StatusCode)
		}
	}

	// The banner may show for as little as one backoff step (a retry can
	// find room the failed write's rollback left): an observer keeps what
	// it showed.
	browserEval[bool](teacher, t, `window.seen = []; new MutationObserver(() => { const b = document.getElementById("not-saved"); if (b && !b.hidden) window.seen.push(b.textContent); }).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true }); true`)
	browserEval[bool](teacher, t, `document.getElementById("q-prompt").value = "`+strings.Repeat("氧化还原反应。", 140)+`"; document.getElementById("q-options").value = "对, 错"; document.getElementById("q-correct").value = "1"; document.getElementById("q-push").click(); true`)
	browserPoll(teacher, t, "not saved, retrying", `window.seen.some((s) => s.startsWith("Not saved, retrying"))`)
	if msg := browserEval[string](teacher, t, `document.getElementById("q-error").textContent`); msg != "" {
		t.Fatalf("the page reported the refusal as a failure instead of retrying: %q", msg)
	}

	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	browserPoll(teacher, t, "quiz acknowledged after the retry", `!!window.teacher.quiz && document.getElementById("not-saved").hidden && document.getElementById("q-error").textContent === ""`)
	resp, b := e.Do(t, ctx, "GET", "/api/v1/sessions/"+sessionID+"/records", e.admin, "", nil)
	var recs struct{ Records []struct{ Kind string } }
	if err := json.Unmarshal(b, &recs); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("records: %d %s", resp.StatusCode, b)
	}
	n := 0
	for _, r := range recs.Records {
		if r.Kind == "quiz.question" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the session holds %d quiz questions, want the one pushed: %s", n, b)
	}
}
