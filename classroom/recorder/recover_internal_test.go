package recorder

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/campusedge/campusedge/classroom/record"
	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/edge/logtest"
	"github.com/campusedge/campusedge/edge/media"
)

// writePart records secs seconds of video to path (finished, or left as a
// crash leaves it: never finalised) and returns when its first frame was.
func writePart(t *testing.T, path string, secs int, finish bool) time.Time {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := record.New(f, []record.Track{{MimeType: "video/VP8", ClockRate: 90000}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := []byte{0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00}
	for i := range secs * 30 {
		pl := append([]byte{0x10, 0x01, 0, 0}, make([]byte, 400)...)
		if i%30 == 0 {
			pl = append(append([]byte(nil), key...), make([]byte, 400)...)
		}
		if err := r.WriteRTP(0, &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(i * 3000), Marker: true}, Payload: pl}); err != nil {
			t.Fatal(err)
		}
	}
	st := r.Stats()
	if finish {
		if _, err := r.Close(); err != nil {
			t.Fatal(err)
		}
		return st.Start
	}
	// Copy what is on disk while it is still open, as SIGKILL leaves it.
	time.Sleep(200 * time.Millisecond)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = r.Close()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return st.Start
}

func writeMetaFile(t *testing.T, path string, m partMeta) {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestStartRecoversAndJoins: what a crash leaves in the recordings
// directory, handled at start-up. Session A (ended): part 1 cut off, part
// 2 finished — part 1 is recovered and both are one lesson with one gap.
// Session B: a lesson joined just before the crash with its parts not yet
// removed — the lesson is imported once, the parts go. Session C (still
// live, restored): its parts wait, and its next part is numbered after
// them.
func TestStartRecoversAndJoins(t *testing.T) {
	dir := t.TempDir()
	sessions := session.NewManager(nil)
	live, _, err := sessions.Create(session.CreateRequest{Title: "Live 语文"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sessions.Start(live.ID); err != nil {
		t.Fatal(err)
	}
	a, b := "aaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbb"
	p := func(sid string, n int, suffix string) string {
		return filepath.Join(dir, sid+"-"+string(rune('0'+n))+suffix)
	}
	start1 := writePart(t, p(a, 1, partialSuffix), 3, false)
	writeMetaFile(t, p(a, 1, ".json"), partMeta{Item: media.Item{Title: "Maths — part 1 alone", Subject: "maths", MIME: "video/webm"}, Session: a, Part: 1, LessonTitle: "Maths 数学", Start: start1})
	start2 := start1.Add(3*time.Second + 4*time.Second) // 4 s after part 1's last frame
	writePart(t, p(a, 2, ".webm"), 2, true)
	writeMetaFile(t, p(a, 2, ".json"), partMeta{Item: media.Item{Title: "Maths (part 2)", MIME: "video/webm", DurationSeconds: 2}, Session: a, Part: 2, LessonTitle: "Maths 数学", Start: start2})

	writePart(t, filepath.Join(dir, b+lessonSuffix+".webm"), 2, true)
	writeMetaFile(t, filepath.Join(dir, b+lessonSuffix+".json"), partMeta{Item: media.Item{Title: "Joined before the crash", MIME: "video/webm"}, Lesson: &Lesson{Title: "Joined before the crash"}})
	writePart(t, p(b, 1, ".webm"), 1, true)
	writeMetaFile(t, p(b, 1, ".json"), partMeta{Item: media.Item{Title: "B1"}})
	_ = os.WriteFile(filepath.Join(dir, b+lessonSuffix+joiningSuffix), []byte("half"), 0o600)

	writePart(t, p(live.ID, 1, partialSuffix), 1, false)
	writeMetaFile(t, p(live.ID, 1, ".json"), partMeta{Item: media.Item{Title: "Live"}, Session: live.ID, Part: 1})

	store := &memLessons{}
	var logBuf logtest.Buffer
	rec := New(store, dir, sessions, slog.New(slog.NewTextHandler(&logBuf, nil)))
	rec.Start()
	rec.wg.Wait()

	store.mu.Lock()
	items := append([]media.Item(nil), store.items...)
	store.mu.Unlock()
	titles := map[string]media.Item{}
	for _, it := range items {
		titles[it.Title] = it
	}
	if len(items) != 2 || titles["Joined before the crash"].ID == "" {
		t.Fatalf("imported %+v; want session A's lesson and session B's joined lesson", items)
	}
	la := titles["Maths 数学"]
	if la.ID == "" || la.Subject != "maths" || la.DurationSeconds < 4 || la.DurationSeconds > 6 {
		t.Errorf("session A's lesson: %+v (want the lesson title, its subject and about 3 + 2 s)", la)
	}
	// Session A: part 1 recovered, one gap of the 4 s between the parts.
	lg := logBuf.String()
	if !strings.Contains(lg, "recovered a recording cut off by a crash") || !strings.Contains(lg, `msg="joined the recorded parts into one lesson" session=`+a+" parts=2 gaps=1") || !strings.Contains(lg, "MissingSeconds:4.") {
		t.Errorf("the log does not show part 1 recovered and the two parts joined with one gap:\n%s", lg)
	}
	left, _ := os.ReadDir(dir)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	want := []string{live.ID + "-1.json", live.ID + "-1.webm"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("left in the recordings directory: %v; want the live session's recovered part only: %v", names, want)
	}
	rec.mu.Lock()
	if n := rec.lastPartOnDisk(live.ID); n != 1 {
		t.Errorf("the live session's last part on disk is %d, want 1", n)
	}
	rec.mu.Unlock()

	// The live session ends: its recovered part alone is its lesson.
	if _, err := sessions.End(live.ID); err != nil {
		t.Fatal(err)
	}
	rec.wg.Wait()
	st := rec.Status(live.ID).(Status)
	if st.State != StateDone || st.Lesson == nil || len(st.Lesson.Parts) != 1 || !st.Lesson.Parts[0].Recovered || st.MediaID == "" {
		t.Errorf("the live session's recording after its end: %+v lesson %+v", st, st.Lesson)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("%d files left after every lesson was imported", len(left))
	}
}
