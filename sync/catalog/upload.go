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
	defer u.lock(it.SHA256)()
	if fi, err := os.Stat(media.BlobPath(u.s.BlobRoot(), it.SHA256)); err == nil && fi.Size() == it.Size {
		if _, err := u.s.Put(it); err != nil {
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
	b, _ := json.Marshal(it)
	if err := os.WriteFile(meta, b, 0o600); err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
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
	if free, err := fsutil.FreeBytes(u.dir()); err == nil && free-uploadReserve < it.Size-off {
		httpapi.WriteError(w, http.StatusInsufficientStorage, "disk_full", fmt.Sprintf("the hub has %d bytes free and needs %d more for this upload; try later", free, it.Size-off))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, media.UploadState{Offset: off})
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
	b, err := os.ReadFile(meta)
	if errors.Is(err, fs.ErrNotExist) {
		httpapi.WriteError(w, http.StatusNotFound, "no_upload", "no upload of "+sum+"; POST /api/v1/uploads first")
		return
	}
	var it media.Item
	if err == nil {
		err = json.Unmarshal(b, &it)
	}
	if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
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
	if _, err := u.s.Put(it); err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	_ = os.Remove(meta)
	u.log.Info("upload completed", "id", it.ID, "bytes", it.Size)
	httpapi.WriteJSON(w, http.StatusOK, media.UploadState{Offset: off, Done: true})
}
