package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/media"
)

// UploadEntry is a local resource waiting to reach the city catalogue.
type UploadEntry struct {
	ID string `json:"id"`
	// Sent is how many bytes the hub acknowledged last time.
	Sent int64     `json:"sent"`
	At   time.Time `json:"queued_at"`
}

// LocalIDPrefix starts the id of every school-made resource
// (media.UploadID: "l" + 20 hex digits of its SHA-256), so it can never
// collide with an imported one.
const LocalIDPrefix = "l"

// uploader stores school-made resources and sends them to the hub's
// catalogue, resuming each from the offset the hub holds.
type uploader struct {
	layout
	db       *bolt.DB
	hub      string
	client   *http.Client
	log      *slog.Logger
	max      int64
	interval time.Duration
	space    *space
	shaper   *shaper
	item     func(id string) (media.Item, bool, error)
	stored   func() // after an item is written (served items are read again)

	kick chan struct{} // wakes the loop

	mu   sync.Mutex
	errs map[string]string // upload id -> last error
}

// lastError is the last failed attempt of upload id ("" after success).
func (c *uploader) lastError(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errs[id]
}

// AddLocal stores a school-made resource read from r (at most
// cfg.UploadMax bytes): hashed while it streams to a temp file, fsynced,
// renamed into blobs/sha256/…, recorded in the catalogue and queued for
// upload to the hub. meta supplies title, subject, grade and MIME type.
func (c *uploader) AddLocal(ctx context.Context, r io.Reader, declared int64, meta media.Item) (media.Item, error) {
	if declared > c.max {
		return media.Item{}, fmt.Errorf("%w: the upload is %d bytes; the limit is %d (-cache-upload-max)", errTooLarge, declared, c.max)
	}
	if declared > 0 {
		key := "upload-" + strconv.FormatInt(time.Now().UnixNano(), 36) // a reservation per upload
		if err := c.space.makeRoom(media.Item{ID: key, Size: declared}, declared); err != nil {
			return media.Item{}, err
		}
		defer c.space.release(key)
	}
	tmp, err := os.CreateTemp(filepath.Join(c.blobs, "tmp"), "upload-*")
	if err != nil {
		return media.Item{}, fmt.Errorf("create temp file: %w", err)
	}
	defer func() { _ = tmp.Close(); _ = os.Remove(tmp.Name()) }()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, c.max+1))
	if err != nil {
		return media.Item{}, fmt.Errorf("receive upload after %d bytes: %w", n, err)
	}
	if n > c.max {
		return media.Item{}, fmt.Errorf("%w: the limit is %d bytes (-cache-upload-max)", errTooLarge, c.max)
	}
	if n == 0 {
		return media.Item{}, fmt.Errorf("%w: empty upload", media.ErrInvalid)
	}
	if declared > 0 && n != declared {
		return media.Item{}, fmt.Errorf("%w: got %d bytes, Content-Length said %d", media.ErrInvalid, n, declared)
	}
	if err := tmp.Sync(); err != nil {
		return media.Item{}, fmt.Errorf("fsync upload: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return media.Item{}, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	it := meta
	it.ID, it.SHA256, it.Size, it.Seq = media.UploadID(sum), sum, n, 0
	if err := it.Validate(); err != nil {
		return media.Item{}, err
	}
	if err := media.PlaceBlob(tmp.Name(), c.blobs, sum); err != nil {
		return media.Item{}, fmt.Errorf("store blob: %w", err)
	}
	err = c.db.Update(func(tx *bolt.Tx) error {
		v, err := json.Marshal(it)
		if err != nil {
			return err
		}
		if err := tx.Bucket(BucketItems).Put([]byte(it.ID), v); err != nil {
			return err
		}
		q, err := json.Marshal(UploadEntry{ID: it.ID, At: time.Now().UTC()})
		if err != nil {
			return err
		}
		return tx.Bucket(BucketUploads).Put([]byte(it.ID), q)
	})
	if err != nil {
		return media.Item{}, fmt.Errorf("record upload: %w", err)
	}
	if c.stored != nil {
		c.stored()
	}
	c.log.Info("local resource stored; queued for the hub", "id", it.ID, "bytes", n, "title", it.Title)
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return it, nil
}

var errTooLarge = errors.New("upload too large")

// uploadQueue lists the queued uploads.
func (c *uploader) uploadQueue() ([]UploadEntry, error) {
	var out []UploadEntry
	err := c.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(BucketUploads).ForEach(func(k, v []byte) error {
			var e UploadEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("upload entry %s: %w", k, err)
			}
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

// uploadLoop sends queued local resources to the hub, resuming each from
// the offset the hub reports.
func (c *uploader) uploadLoop(ctx context.Context) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		q, err := c.uploadQueue()
		if err != nil {
			c.log.Error("upload queue", "err", err)
		}
		for _, e := range q {
			if ctx.Err() != nil {
				return
			}
			err := c.uploadOne(ctx, e)
			c.mu.Lock()
			if err != nil {
				c.errs[e.ID] = err.Error()
			} else {
				delete(c.errs, e.ID)
			}
			c.mu.Unlock()
			if err != nil {
				c.log.Warn("upload to hub failed; will retry", "id", e.ID, "err", err, "retry_in", c.interval)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}

func (c *uploader) uploadOne(ctx context.Context, e UploadEntry) error {
	it, ok, err := c.item(e.ID)
	if err != nil || !ok {
		return fmt.Errorf("queued upload %s has no catalogue item: %v", e.ID, err)
	}
	meta, _ := json.Marshal(it)
	st, err := c.hubUpload(ctx, http.MethodPost, "/api/v1/uploads", "", bytes.NewReader(meta), -1)
	if err != nil {
		return err
	}
	for i := 0; !st.Done && i < 3; i++ {
		f, err := os.Open(c.blobPath(it))
		if err != nil {
			return fmt.Errorf("open blob of %s: %w", it.ID, err)
		}
		if _, err := f.Seek(st.Offset, io.SeekStart); err != nil {
			f.Close()
			return err
		}
		c.setSent(it.ID, st.Offset)
		pctx, cancel := context.WithCancel(ctx)
		stall := time.AfterFunc(stallTimeout, cancel) // the hub stopped taking bytes
		body := &shapedReader{ctx: pctx, r: f, s: c.shaper, progress: func() { stall.Reset(stallTimeout) }}
		st, err = c.hubUpload(pctx, http.MethodPatch, "/api/v1/uploads/"+it.SHA256, strconv.FormatInt(st.Offset, 10), body, it.Size-st.Offset)
		stall.Stop()
		cancel()
		f.Close()
		if err != nil {
			return err
		}
	}
	if !st.Done {
		return fmt.Errorf("hub holds %d of %d bytes of %s", st.Offset, it.Size, it.ID)
	}
	c.log.Info("local resource uploaded to the hub", "id", it.ID, "bytes", it.Size)
	return c.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(BucketUploads).Delete([]byte(it.ID)) })
}

func (c *uploader) setSent(id string, n int64) {
	_ = c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketUploads)
		v := b.Get([]byte(id))
		if v == nil {
			return nil
		}
		var e UploadEntry
		if json.Unmarshal(v, &e) != nil {
			return nil
		}
		e.Sent = n
		v, _ = json.Marshal(e)
		return b.Put([]byte(id), v)
	})
}

func (c *uploader) hubUpload(ctx context.Context, method, path, offset string, body io.Reader, n int64) (media.UploadState, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.hub+path, body)
	if err != nil {
		return media.UploadState{}, err
	}
	if n >= 0 {
		req.ContentLength = n
	}
	if offset != "" {
		req.Header.Set("Upload-Offset", offset)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.client.Do(req)
	if err != nil {
		return media.UploadState{}, fmt.Errorf("hub unreachable: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var st media.UploadState
	if resp.StatusCode == http.StatusConflict { // hub holds another offset: resume from it
		if err := json.Unmarshal(b, &st); err != nil {
			return st, fmt.Errorf("hub answered %s: %s", resp.Status, b)
		}
		return st, nil
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("hub answered %s to %s %s: %s", resp.Status, method, path, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("hub upload answer: %w", err)
	}
	return st, nil
}

// shapedReader paces an upload body under the same WAN schedule.
type shapedReader struct {
	ctx      context.Context
	r        io.Reader
	s        *shaper
	progress func()
}

func (s *shapedReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p[:min(len(p), 32<<10)])
	if n > 0 {
		if s.progress != nil {
			s.progress()
		}
		if werr := s.s.wait(s.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// uploadMeta reads an upload's descriptive fields from the query string
// and the Content-Type header.
func uploadMeta(r *http.Request) (media.Item, error) {
	q := r.URL.Query()
	it := media.Item{Title: strings.TrimSpace(q.Get("title")), Subject: q.Get("subject"), Grade: q.Get("grade")}
	if it.Title == "" {
		return it, fmt.Errorf("%w: title is required (?title=...)", media.ErrInvalid)
	}
	if d := q.Get("duration_seconds"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return it, fmt.Errorf("%w: duration_seconds must be a whole number", media.ErrInvalid)
		}
		it.DurationSeconds = n
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt == "" {
		return it, fmt.Errorf("%w: Content-Type must name the resource's type (e.g. video/mp4)", media.ErrInvalid)
	}
	if !media.Uploadable(mt) {
		return it, fmt.Errorf("%w: media type %s is not accepted (video, audio, pictures, PDF and office documents are)", media.ErrInvalid, mt)
	}
	it.MIME = mt
	return it, nil
}
