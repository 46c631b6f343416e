package recorder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/campusedge/campusedge/classroom/record"
	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/media"
)

// partMeta is a part's sidecar, <session>-<part>.json. The catalogue
// fields are inline, so a sidecar of an older edge (a media.Item) reads.
type partMeta struct {
	media.Item
	Session string `json:"session,omitempty"`
	Part    int    `json:"part,omitempty"`
	// LessonTitle is the title of the joined lesson (no part number).
	LessonTitle string `json:"lesson_title,omitempty"`
	// Began is when the part's connection was taken for recording.
	Began time.Time `json:"began"`
	// Start is when its first frame was captured (the file's time 0);
	// zero until that is known (a crash within syncEvery of the start).
	Start time.Time `json:"start"`
	// Recovered says the part was cut off and recovered at start-up.
	Recovered bool `json:"recovered,omitempty"`
	// Lesson, in a joined lesson's sidecar, is what Status reports.
	Lesson *Lesson `json:"lesson,omitempty"`
}

const (
	lessonSuffix  = "-lesson"
	joiningSuffix = ".joining"
	repairSuffix  = ".repair"
)

// diskPart is a finished (or recovered) part in the recordings directory.
type diskPart struct {
	n    int
	base string
	meta partMeta
}

// splitName parses "<session>-<n>" (the base of a part's files).
func splitName(base string) (string, int, bool) {
	i := strings.LastIndexByte(base, '-')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(base[i+1:])
	if err != nil || n <= 0 {
		return "", 0, false
	}
	return base[:i], n, true
}

// lastPartOnDisk is the highest part number of session id in the
// recordings directory (0 if none): a restored session's next part follows.
func (r *Manager) lastPartOnDisk(id string) int {
	names, _ := filepath.Glob(filepath.Join(r.dir, id+"-*"))
	last := 0
	for _, name := range names {
		base := filepath.Base(name)
		for _, suf := range []string{partialSuffix, ".webm", ".json"} {
			base = strings.TrimSuffix(base, suf)
		}
		if sid, n, ok := splitName(base); ok && sid == id && n > last {
			last = n
		}
	}
	return last
}

func readMeta(path string) (partMeta, error) {
	var m partMeta
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	return m, err
}

// recover deals with what the last run left: a part cut off by a crash is
// recovered (its frames up to the tear, finished as a WebM), and the parts
// of every session that is not live any more are joined and imported. A
// restored session's parts wait for its end.
func (r *Manager) recover() {
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		r.log.Error("cannot create the recordings directory; lessons will not be recorded", "dir", r.dir, "err", err)
		return
	}
	r.lessonMu.Lock()
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		r.lessonMu.Unlock()
		r.log.Error("cannot read the recordings directory", "dir", r.dir, "err", err)
		return
	}
	sessions := map[string]bool{}
	for _, e := range ents {
		name := filepath.Join(r.dir, e.Name())
		switch {
		case strings.HasPrefix(e.Name(), ".tmp-"), strings.HasSuffix(e.Name(), repairSuffix), strings.HasSuffix(e.Name(), joiningSuffix):
			_ = os.Remove(name) // cut off mid-write; done again below
		case strings.HasSuffix(e.Name(), partialSuffix):
			r.repair(strings.TrimSuffix(name, partialSuffix))
		}
	}
	ents, _ = os.ReadDir(r.dir)
	for _, e := range ents {
		base := strings.TrimSuffix(e.Name(), ".json")
		if base == e.Name() {
			continue
		}
		if strings.HasSuffix(base, lessonSuffix) {
			sessions[strings.TrimSuffix(base, lessonSuffix)] = true
			continue
		}
		sid, _, ok := splitName(base)
		if !ok {
			continue
		}
		if _, err := os.Stat(filepath.Join(r.dir, base+".webm")); errors.Is(err, os.ErrNotExist) {
			_ = os.Remove(filepath.Join(r.dir, e.Name())) // fields of a part that never had a frame
			continue
		}
		sessions[sid] = true
	}
	r.lessonMu.Unlock()
	for sid := range sessions {
		if s, err := r.sessions.Get(sid); err == nil && s.State != session.StateEnded {
			r.log.Info("recording parts from before the restart wait for their session to end", "session", sid)
			continue
		}
		r.joinLesson(sid)
	}
}

// repair recovers base.webm.partial, cut off by a crash or power cut,
// into base.webm: its whole frames written again as a finished WebM.
func (r *Manager) repair(base string) {
	partial := base + partialSuffix
	log := r.log.With("file", partial)
	meta, err := readMeta(base + ".json")
	if err != nil {
		// Without its catalogue fields (an older edge's part, or cut off
		// before they were written) it cannot become a lesson.
		log.Warn("removing a recording cut off by a crash: its catalogue fields are missing", "err", err)
		_ = os.Remove(partial)
		return
	}
	in, err := os.Open(partial)
	if err != nil {
		log.Error("cannot read a recording cut off by a crash; it stays on disk", "err", err)
		return
	}
	defer in.Close()
	size := int64(0)
	if st, err := in.Stat(); err == nil {
		size = st.Size()
	}
	out, err := os.OpenFile(base+repairSuffix, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		log.Error("cannot recover a recording cut off by a crash; it stays on disk and is tried at the next start", "err", err)
		return
	}
	j, err := record.Join(syncCloser{out}, []io.ReadSeeker{in})
	if errors.Is(err, record.ErrNotRecording) {
		log.Warn("removing a recording cut off by a crash before its first frame: nothing to replay", "bytes", size)
		_ = errors.Join(os.Remove(base+repairSuffix), os.Remove(partial), os.Remove(base+".json"))
		return
	}
	if err != nil {
		_ = os.Remove(base + repairSuffix)
		log.Error("cannot recover a recording cut off by a crash; it stays on disk and is tried at the next start", "err", err)
		return
	}
	meta.DurationSeconds = int(math.Round(j.Duration.Seconds()))
	meta.Recovered = true
	b, err := json.Marshal(meta)
	if err == nil {
		err = fsutil.WriteFileAtomic(base+".json", b, 0o600)
	}
	if err == nil {
		err = fsutil.RenameDurable(base+repairSuffix, base+".webm")
	}
	if err != nil {
		log.Error("cannot keep a recovered recording; it is tried again at the next start", "err", err)
		return
	}
	if err := os.Remove(partial); err != nil {
		log.Warn("cannot remove a recovered recording's partial file", "err", err)
	}
	log.Info("recovered a recording cut off by a crash", "bytes", size, "frames", j.Frames, "duration", j.Duration, "torn", j.Parts[0].Torn)
}

// syncCloser fsyncs a file before closing it.
type syncCloser struct{ *os.File }

func (s syncCloser) Close() error { return errors.Join(s.File.Sync(), s.File.Close()) }

// partsOnDisk lists session id's finished parts, in order.
func (r *Manager) partsOnDisk(id string) []diskPart {
	names, _ := filepath.Glob(filepath.Join(r.dir, id+"-*.webm"))
	var parts []diskPart
	for _, name := range names {
		base := strings.TrimSuffix(name, ".webm")
		sid, n, ok := splitName(filepath.Base(base))
		if !ok || sid != id {
			continue
		}
		meta, err := readMeta(base + ".json")
		if err != nil {
			r.log.Error("a recorded part has unreadable catalogue fields; import it by hand with POST /api/v1/media", "file", name, "err", err)
			continue
		}
		parts = append(parts, diskPart{n: n, base: base, meta: meta})
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].n < parts[j].n })
	return parts
}

// joinLesson joins session id's parts on disk into one lesson and imports
// it. A lesson joined before a crash is imported as it is.
func (r *Manager) joinLesson(id string) {
	r.lessonMu.Lock()
	defer r.lessonMu.Unlock()
	log := r.log.With("session", id)
	lessonBase := filepath.Join(r.dir, id+lessonSuffix)
	parts := r.partsOnDisk(id)
	if _, err := os.Stat(lessonBase + ".webm"); err == nil {
		// Joined before a crash: the parts are in it.
		for _, p := range parts {
			_ = errors.Join(os.Remove(p.base+".webm"), os.Remove(p.base+".json"))
		}
		meta, err := readMeta(lessonBase + ".json")
		if err != nil {
			log.Error("a joined lesson has unreadable catalogue fields; import it by hand with POST /api/v1/media", "file", lessonBase+".webm", "err", err)
			return
		}
		r.importLesson(id, lessonBase, meta)
		return
	}
	if len(parts) == 0 {
		return
	}
	first := parts[0].meta
	title := first.LessonTitle
	if title == "" {
		title = first.Title // an older edge's sidecar
	}
	lesson := &Lesson{Title: title}
	if len(parts) == 1 {
		p := parts[0]
		lesson.DurationSeconds = float64(p.meta.DurationSeconds)
		lesson.Parts = []LessonPart{{Part: p.n, DurationSeconds: float64(p.meta.DurationSeconds), Recovered: p.meta.Recovered}}
		meta := p.meta
		meta.Title, meta.Lesson = title, lesson
		b, err := json.Marshal(meta)
		if err == nil {
			err = fsutil.WriteFileAtomic(lessonBase+".json", b, 0o600)
		}
		if err == nil {
			err = fsutil.RenameDurable(p.base+".webm", lessonBase+".webm")
		}
		if err != nil {
			log.Error("cannot keep the recorded lesson; it is tried again at the next start", "err", err)
			r.partsFailed(id, "cannot keep the recorded lesson (it is tried again at the next start): "+err.Error())
			return
		}
		_ = os.Remove(p.base + ".json")
		r.importLesson(id, lessonBase, meta)
		return
	}
	var files []io.ReadSeeker
	for _, p := range parts {
		f, err := os.Open(p.base + ".webm")
		if err != nil {
			log.Error("cannot read a recorded part; the lesson is joined at the next start", "file", p.base+".webm", "err", err)
			r.partsFailed(id, "cannot read a recorded part: "+err.Error())
			return
		}
		defer f.Close()
		files = append(files, f)
	}
	out, err := os.OpenFile(lessonBase+joiningSuffix, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		log.Error("cannot join the recorded parts; they are joined at the next start", "err", err)
		r.partsFailed(id, "cannot join the recorded parts: "+err.Error())
		return
	}
	j, err := record.Join(syncCloser{out}, files)
	if errors.Is(err, record.ErrIncompatible) {
		_ = os.Remove(lessonBase + joiningSuffix)
		log.Warn("the recorded parts cannot be one file (another video codec after a reconnect): each is its own lesson", "err", err)
		r.importSeparately(id, parts, lesson)
		return
	}
	if err != nil {
		_ = os.Remove(lessonBase + joiningSuffix)
		log.Error("cannot join the recorded parts; they are joined at the next start", "err", err)
		r.partsFailed(id, "cannot join the recorded parts: "+err.Error())
		return
	}
	lesson.DurationSeconds = round1(j.Duration)
	var prev *diskPart
	var prevJ record.JoinedPart
	for i, jp := range j.Parts {
		if jp.Skipped {
			continue
		}
		p := parts[i]
		lesson.Parts = append(lesson.Parts, LessonPart{Part: p.n, OffsetSeconds: round1(jp.Offset), DurationSeconds: round1(jp.Duration), Recovered: p.meta.Recovered})
		if prev != nil {
			g := Gap{AtSeconds: round1(jp.Offset)}
			if !prev.meta.Start.IsZero() && !p.meta.Start.IsZero() {
				if miss := p.meta.Start.Sub(prev.meta.Start.Add(prevJ.Duration)); miss > 0 {
					g.MissingSeconds = round1(miss)
				}
			}
			lesson.Gaps = append(lesson.Gaps, g)
		}
		prev, prevJ = &parts[i], jp
	}
	meta := partMeta{Item: media.Item{Title: title, Subject: first.Subject, MIME: "video/webm", DurationSeconds: int(math.Round(j.Duration.Seconds()))},
		Session: id, LessonTitle: title, Began: first.Began, Start: first.Start, Lesson: lesson}
	b, err := json.Marshal(meta)
	if err == nil {
		err = fsutil.WriteFileAtomic(lessonBase+".json", b, 0o600)
	}
	if err == nil {
		err = fsutil.RenameDurable(lessonBase+joiningSuffix, lessonBase+".webm")
	}
	if err != nil {
		log.Error("cannot keep the joined lesson; its parts are joined again at the next start", "err", err)
		r.partsFailed(id, "cannot keep the joined lesson: "+err.Error())
		return
	}
	for _, p := range parts {
		_ = errors.Join(os.Remove(p.base+".webm"), os.Remove(p.base+".json"))
	}
	log.Info("joined the recorded parts into one lesson", "parts", len(lesson.Parts), "gaps", len(lesson.Gaps), "duration", j.Duration, "gap_list", fmt.Sprintf("%+v", lesson.Gaps))
	r.importLesson(id, lessonBase, meta)
}

func round1(d time.Duration) float64 { return math.Round(d.Seconds()*10) / 10 }

// importLesson imports base.webm as session id's lesson.
func (r *Manager) importLesson(id, base string, meta partMeta) {
	lesson := meta.Lesson
	if lesson == nil { // an older edge's finished recording
		lesson = &Lesson{Title: meta.Title, DurationSeconds: float64(meta.DurationSeconds)}
	}
	it, err := r.importFile(base, meta.Item)
	if err != nil {
		r.log.Error("importing the recorded lesson into the resource cache failed; it stays in the recordings directory and is imported at the next start", "session", id, "file", base+".webm", "err", err)
		r.partsFailed(id, "importing the recording into the resource cache failed (the file stays in "+r.dir+" and is imported at the next start): "+err.Error())
		return
	}
	lc := *lesson
	lc.MediaID = it.ID
	r.doneTotal.Add(1)
	r.lessonDone(id, &lc)
	r.log.Info("recorded lesson in the catalogue", "session", id, "media_id", it.ID, "title", it.Title, "bytes", it.Size, "duration_seconds", it.DurationSeconds, "parts", len(lc.Parts), "gaps", len(lc.Gaps))
}

// importSeparately imports each part as its own lesson ("… (part 2)").
func (r *Manager) importSeparately(id string, parts []diskPart, lesson *Lesson) {
	lesson.Separate = true
	for _, p := range parts {
		it, err := r.importFile(p.base, p.meta.Item)
		if err != nil {
			r.log.Error("importing a recorded part failed; it stays in the recordings directory and is imported at the next start", "file", p.base+".webm", "err", err)
			r.partsFailed(id, "importing the recording into the resource cache failed: "+err.Error())
			continue
		}
		if lesson.MediaID == "" {
			lesson.MediaID = it.ID
		}
		lesson.Parts = append(lesson.Parts, LessonPart{Part: p.n, DurationSeconds: float64(p.meta.DurationSeconds), Recovered: p.meta.Recovered, MediaID: it.ID})
		lesson.DurationSeconds += float64(p.meta.DurationSeconds)
		r.doneTotal.Add(1)
		r.log.Info("recorded lesson in the catalogue", "session", id, "part", p.n, "media_id", it.ID, "title", it.Title)
	}
	if lesson.MediaID != "" {
		r.lessonDone(id, lesson)
	}
}

// lessonDone records session id's lesson for Status and marks its parts
// of this run done.
func (r *Manager) lessonDone(id string, l *Lesson) {
	// Kept while the session is (a restored session whose teacher never
	// came back has no parts in this run); not for a forgotten one.
	_, err := r.sessions.Get(id)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.lessons[id] = l
	}
	sr := r.bySession[id]
	if sr == nil {
		return
	}
	for _, p := range sr.parts {
		p.mu.Lock()
		if p.state == StateSaved {
			p.state, p.mediaID = StateDone, l.MediaID
		}
		p.mu.Unlock()
	}
}

// partsFailed marks session id's saved parts of this run failed.
func (r *Manager) partsFailed(id, reason string) {
	r.failedTotal.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if sr := r.bySession[id]; sr != nil {
		for _, p := range sr.parts {
			p.mu.Lock()
			if p.state == StateSaved {
				p.state, p.reason = StateFailed, reason
			}
			p.mu.Unlock()
		}
	}
}

// importFile adds base.webm to the lesson store with meta, then removes
// base.webm and base.json.
func (r *Manager) importFile(base string, meta media.Item) (media.Item, error) {
	f, err := os.Open(base + ".webm")
	if err != nil {
		return media.Item{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return media.Item{}, err
	}
	meta.ID, meta.Size, meta.SHA256, meta.Seq = "", 0, "", 0
	it, err := r.store.AddLocal(r.ctx, &ctxReader{ctx: r.ctx, r: f}, info.Size(), meta)
	if err != nil {
		return media.Item{}, err
	}
	_ = f.Close()
	if err := errors.Join(os.Remove(base+".webm"), os.Remove(base+".json")); err != nil {
		r.log.Warn("imported recording could not be removed from the recordings directory", "file", base+".webm", "err", err)
	}
	return it, nil
}

// ctxReader stops a long import when the edge gives up waiting at shutdown.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
