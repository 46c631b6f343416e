package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/media"
)

// Resumable uploads of school-made resources into the city catalogue:
//
//	POST  /api/v1/uploads              body: media.Item JSON (seq ignored) → media.UploadState
//	PATCH /api/v1/uploads/{sha256}     header Upload-Offset: N, body: bytes from N → media.UploadState
//
// The POST announces the item and answers how many bytes the hub already
// holds, so an edge cut mid-upload continues from there. The item enters
// the catalogue only when the bytes match its size and SHA-256.

// uploadReserve is disk the hub keeps free for its store and imports.
const uploadReserve = 1 << 30

// maxUploadMeta bounds the POST body.
const maxUploadMeta = 8 << 10

type uploads struct {
	s   *Store
	log *slog.Logger
	// review holds verified uploads for city staff (Submit) instead of
	// publishing them at once.
	review bool

	mu    sync.Mutex
	locks map[string]*keyLock // per SHA-256: one writer per partial file
}

type keyLock struct {
	sync.Mutex
	refs int
}

// lock serializes work on one upload without holding up the others (a
// slow school link must not block every other school's upload).
func (u *uploads) lock(sum string) (unlock func()) {
	u.mu.Lock()
	if u.locks == nil {
		u.locks = map[string]*keyLock{}
	}
	l := u.locks[sum]
	if l == nil {
		l = &keyLock{}
		u.locks[sum] = l
	}
	l.refs++
	u.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		u.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(u.locks, sum)
		}
		u.mu.Unlock()
	}
}

// uploadStall is how long a PATCH body may send nothing before the hub
// drops it (the bytes so far are kept for the resume).
const uploadStall = 60 * time.Second

// stallBody extends the connection's read deadline on every read, so a
// stalled sender cannot hold an upload's lock forever.
type stallBody struct {
	r  io.Reader
	rc *http.ResponseController
}

func (b stallBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(uploadStall))
	return b.r.Read(p)
}

func (u *uploads) dir() string { return filepath.Join(u.s.dir, "blobs", "uploads") }

func (u *uploads) paths(sum string) (part, meta string) {
	return filepath.Join(u.dir(), sum+".part"), filepath.Join(u.dir(), sum+".json")
}

func (u *uploads) register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/uploads", u.start)
	mux.HandleFunc("PATCH /api/v1/uploads/{sha256}", u.patch)
}

// Limits on uploads in progress, so no edge can fill the hub's disk or
// directory with announcements it never finishes.
const (
	// uploadTTL is how long an upload may make no progress before its
	// partial bytes and announcement are deleted (and their reservation freed).
	uploadTTL = 24 * time.Hour
	// maxPending is how many uploads may be in progress at once on the hub,
	// maxPendingPerEdge for one edge.
	maxPending        = 1024
	maxPendingPerEdge = 16
)

// pending is an upload in progress as DATA/blobs/uploads/{sha256}.json
// keeps it: the announced item and who announced it, so only that edge
// (or city staff) continues it.
type pending struct {
	Item   media.Item `json:"item"`
	Edge   string     `json:"edge,omitempty"`
	School string     `json:"school,omitempty"`
}

func (u *uploads) start(w http.ResponseWriter, r *http.Request) {
	var it media.Item
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxUploadMeta))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&it); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_json", "upload: "+err.Error())
		return
	}
	it.Seq = 0
	if err := it.Validate(); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_item", err.Error())
		return
	}
	if !media.Uploadable(it.MIME) {
		httpapi.WriteError(w, http.StatusBadRequest, "mime_not_allowed", "upload: media type "+it.MIME+" is not accepted (video, audio, pictures, PDF and office documents are)")
		return
	}
	// The id is bound to the content, so an upload can add an item but
	// never replace another one (an imported lesson or another school's).
	if want := media.UploadID(it.SHA256); it.ID != want {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_id", "an uploaded item's id must be "+want+" (\"l\" + the first 20 hex digits of its SHA-256)")
		return
	}
	caller, _ := httpapi.CallerFrom(r.Context())
	u.sweep(time.Now())
	defer u.lock(it.SHA256)()
	// An item already in the catalogue is never rewritten by an upload: the
	// same bytes under the same id are the same item, whoever sends them,
	// and its title and type stay those of the first upload.
	if prev, err := u.s.Get(it.ID); err == nil {
		httpapi.WriteJSON(w, http.StatusOK, media.UploadState{Offset: prev.Size, Done: true})
		return
	}
	// Waiting for review (or reviewed) counts as done for the edge: the hub
	// holds the bytes, and a rejection is the city's answer, not a reason
	// to send them again.
	if u.review && u.s.Submitted(it.ID) {
		httpapi.WriteJSON(w, http.StatusOK, media.UploadState{Offset: it.Size, Done: true})
		return
	}
	if fi, err := os.Stat(media.BlobPath(u.s.BlobRoot(), it.SHA256)); err == nil && fi.Size() == it.Size {
		if err := u.complete(it, caller); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid_item", err.Error())
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, media.UploadState{Offset: it.Size, Done: true})
		return
	}
	if err := fsutil.MkdirAllDurable(u.dir(), 0o700); err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	part, meta := u.paths(it.SHA256)
	if p, err := readPending(meta); err == nil && !caller.Staff && p.Edge != caller.Edge {
		httpapi.WriteError(w, http.StatusConflict, "upload_in_progress", "another edge is uploading these bytes; the item enters the catalogue when it finishes (or its upload expires after "+uploadTTL.String()+" without progress)")
		return
	}
	var off int64
	if fi, err := os.Stat(part); err == nil {
		off = fi.Size()
	}
	if off > it.Size {
		_ = os.Remove(part)
		off = 0
	}
	others, mine, reserved := u.inProgress(it.SHA256, caller.Edge)
	if others >= maxPending || (!caller.Staff && mine >= maxPendingPerEdge) {
		httpapi.WriteError(w, http.StatusTooManyRequests, "too_many_uploads", fmt.Sprintf("the hub holds %d uploads in progress (%d of them this edge's; at most %d, %d per edge); finish or let them expire first", others, mine, maxPending, maxPendingPerEdge))
		return
	}
	// Every announced upload's missing bytes are reserved: two uploads that
	// each fit the free space but not together are not both accepted.
	if free, err := fsutil.FreeBytes(u.dir()); err == nil && free-uploadReserve-reserved < it.Size-off {
		httpapi.WriteError(w, http.StatusInsufficientStorage, "disk_full", fmt.Sprintf("the hub has %d bytes free, %d reserved for uploads in progress, and needs %d more for this upload; try later", free, reserved, it.Size-off))
		return
	}
	b, _ := json.Marshal(pending{Item: it, Edge: caller.Edge, School: caller.School})
	if err := fsutil.WriteFileAtomic(meta, b, 0o600); err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, media.UploadState{Offset: off})
}

// complete takes a verified upload: into the catalogue, or, with review
// on, into the queue city staff review.
func (u *uploads) complete(it media.Item, from httpapi.Caller) error {
	if !u.review {
		_, err := u.s.Put(it)
		return err
	}
	return u.s.Submit(Submission{Item: it, Edge: from.Edge, School: from.School, Received: time.Now().UTC()})
}

// readPending reads an upload's announcement.
func readPending(meta string) (pending, error) {
	b, err := os.ReadFile(meta)
	if err != nil {
		return pending{}, err
	}
	var p pending
	if err := json.Unmarshal(b, &p); err != nil {
		return pending{}, fmt.Errorf("upload announcement %s: %w", meta, err)
	}
	if p.Item.SHA256 == "" {
		return pending{}, fmt.Errorf("upload announcement %s names no item", meta)
	}
	return p, nil
}

// inProgress counts the uploads in progress other than sum's, those of
// edge among them, and the bytes they still need.
func (u *uploads) inProgress(sum, edge string) (others, mine int, reserved int64) {
	ents, _ := os.ReadDir(u.dir())
	for _, e := range ents {
		s, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || s == sum {
			continue
		}
		part, meta := u.paths(s)
		p, err := readPending(meta)
		if err != nil {
			continue
		}
		others++
		if p.Edge == edge {
			mine++
		}
		var have int64
		if fi, err := os.Stat(part); err == nil {
			have = fi.Size()
		}
		reserved += max(0, p.Item.Size-have)
	}
	return others, mine, reserved
}

// sweep deletes uploads that made no progress for uploadTTL, and partial
// files without an announcement: their reservations end with them.
func (u *uploads) sweep(now time.Time) {
	ents, _ := os.ReadDir(u.dir())
	for _, e := range ents {
		name := e.Name()
		sum, ok := strings.CutSuffix(name, ".json")
		if !ok {
			sum, ok = strings.CutSuffix(name, ".part")
		}
		if !ok || !media.ValidSHA256(sum) {
			continue
		}
		part, meta := u.paths(sum)
		last := time.Time{}
		for _, p := range []string{part, meta} {
			if fi, err := os.Stat(p); err == nil && fi.ModTime().After(last) {
				last = fi.ModTime()
			}
		}
		if now.Sub(last) < uploadTTL {
			continue
		}
		unlock := u.lock(sum)
		_ = os.Remove(part)
		_ = os.Remove(meta)
		unlock()
		u.log.Info("abandoned upload removed", "sha256", sum, "idle", now.Sub(last).Round(time.Minute))
	}
}

func (u *uploads) patch(w http.ResponseWriter, r *http.Request) {
	sum := r.PathValue("sha256")
	if !media.ValidSHA256(sum) {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_sha256", "want 64 lowercase hex digits")
		return
	}
	off, err := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	if err != nil || off < 0 {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_offset", "Upload-Offset must be a byte offset")
		return
	}
	defer u.lock(sum)()
	part, meta := u.paths(sum)
	p, err := readPending(meta)
	if errors.Is(err, fs.ErrNotExist) {
		httpapi.WriteError(w, http.StatusNotFound, "no_upload", "no upload of "+sum+"; POST /api/v1/uploads first")
		return
	} else if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	if caller, _ := httpapi.CallerFrom(r.Context()); !caller.Staff && p.Edge != caller.Edge {
		httpapi.WriteError(w, http.StatusForbidden, "not_your_upload", "this upload was announced by another edge; only it continues it")
		return
	}
	it := p.Item
	// The announcement's time is the upload's last progress (sweep).
	now := time.Now()
	_ = os.Chtimes(meta, now, now)
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	if fi.Size() != off {
		httpapi.WriteJSON(w, http.StatusConflict, map[string]any{"error": map[string]string{"code": "offset_mismatch", "message": fmt.Sprintf("the hub holds %d bytes; resume from there", fi.Size())}, "offset": fi.Size()})
		return
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	// At most the rest of the item: one byte more is refused.
	body := stallBody{r: r.Body, rc: http.NewResponseController(w)}
	n, cerr := io.Copy(f, io.LimitReader(body, it.Size-off+1))
	if off+n > it.Size {
		_ = f.Truncate(off)
		httpapi.WriteError(w, http.StatusRequestEntityTooLarge, "too_long", fmt.Sprintf("the item is %d bytes; the body goes past it", it.Size))
		return
	}
	// The offset answered is one the edge may resume from after a power
	// cut here: only what fsync made durable.
	err = f.Sync()
	if err == nil && off == 0 {
		// The part file may be new: its name must survive too before any
		// offset is acknowledged.
		err = fsutil.SyncDir(u.dir())
	}
	if err != nil {
		_ = f.Truncate(off)
		w.Header().Set("Retry-After", "10")
		status, code := http.StatusServiceUnavailable, "store_unavailable"
		if fsutil.IsNoSpace(err) {
			status, code = http.StatusInsufficientStorage, "disk_full"
		}
		httpapi.WriteError(w, status, code, fmt.Sprintf("the hub could not make the upload durable (%v); resume from offset %d later", err, off))
		return
	}
	off += n
	if fsutil.IsNoSpace(cerr) {
		w.Header().Set("Retry-After", "60")
		httpapi.WriteError(w, http.StatusInsufficientStorage, "disk_full", fmt.Sprintf("the hub's disk filled during the upload; %d bytes are kept, resume from there later", off))
		return
	}
	if cerr != nil || off < it.Size {
		httpapi.WriteJSON(w, http.StatusOK, media.UploadState{Offset: off})
		return
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		_ = os.Remove(part)
		httpapi.WriteError(w, http.StatusUnprocessableEntity, "hash_mismatch", "the uploaded bytes hash to "+got+", not "+sum+"; the upload was discarded, start again")
		return
	}
	_ = f.Close()
	if err := media.PlaceBlob(part, u.s.BlobRoot(), sum); err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	// Someone else's item with these bytes (made while this upload ran) is
	// not rewritten.
	if _, err := u.s.Get(it.ID); errors.Is(err, ErrNotFound) {
		if err := u.complete(it, httpapi.Caller{Edge: p.Edge, School: p.School}); err != nil {
			httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
			return
		}
	}
	_ = os.Remove(meta)
	u.log.Info("upload completed", "id", it.ID, "bytes", it.Size, "school", p.School, "review", u.review)
	httpapi.WriteJSON(w, http.StatusOK, media.UploadState{Offset: off, Done: true})
}
