package recorder

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/campusedge/campusedge/edge/media"
)

// recover cleans up after a crash: partial files are removed (a WebM cut
// off mid-write has no cues and may end mid-frame: it is never served as a
// lesson), complete ones are imported.
func (r *Manager) recover() {
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		r.log.Error("cannot create the recordings directory; lessons will not be recorded", "dir", r.dir, "err", err)
		return
	}
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		r.log.Error("cannot read the recordings directory", "dir", r.dir, "err", err)
		return
	}
	for _, e := range ents {
		name := filepath.Join(r.dir, e.Name())
		switch {
		case strings.HasPrefix(e.Name(), ".tmp-"):
			_ = os.Remove(name) // catalogue fields cut off mid-write (fsutil.WriteFileAtomic's temp file)
		case strings.HasSuffix(e.Name(), partialSuffix):
			info, _ := e.Info()
			var size int64
			if info != nil {
				size = info.Size()
			}
			r.log.Warn("removing a recording cut off by a crash or power loss (incomplete WebM, not replayable)", "file", name, "bytes", size)
			if err := os.Remove(name); err != nil {
				r.log.Error("cannot remove a partial recording", "file", name, "err", err)
			}
		case strings.HasSuffix(e.Name(), ".json"):
			base := strings.TrimSuffix(name, ".json")
			if _, err := os.Stat(base + ".webm"); errors.Is(err, os.ErrNotExist) {
				_ = os.Remove(name) // metadata of a recording that never completed
				continue
			}
			var meta media.Item
			b, err := os.ReadFile(name)
			if err == nil {
				err = json.Unmarshal(b, &meta)
			}
			if err != nil {
				r.log.Error("unreadable metadata of a finished recording; import it by hand with POST /api/v1/media", "file", base+".webm", "err", err)
				continue
			}
			r.log.Info("importing a finished recording left from the last run", "file", base+".webm", "title", meta.Title)
			if it, err := r.importFile(base, meta); err != nil {
				r.log.Error("importing a finished recording failed; it stays on disk and is retried at the next start", "file", base+".webm", "err", err)
			} else {
				r.log.Info("recorded lesson in the catalogue", "media_id", it.ID, "title", it.Title, "bytes", it.Size)
			}
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
