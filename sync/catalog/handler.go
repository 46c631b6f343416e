package catalog

import (
	"errors"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/media"
)

// Handler serves the hub's catalogue API:
//
//	GET      /api/v1/catalog?since=CURSOR&limit=N  changes after CURSOR
//	GET|HEAD /api/v1/content/{id}                  the item's bytes (Range, strong ETag)
//	POST     /api/v1/uploads, PATCH /api/v1/uploads/{sha256}  resumable uploads (upload.go)
func Handler(s *Store, log *slog.Logger) http.Handler {
	return HandlerWith(s, log, HandlerOptions{})
}

// HandlerOptions change how Handler treats uploads.
type HandlerOptions struct {
	// Review holds verified school uploads for city staff to publish or
	// reject (Store.Decide) instead of publishing them at once.
	Review bool
}

// HandlerWith is Handler with options.
func HandlerWith(s *Store, log *slog.Logger, opt HandlerOptions) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/catalog", func(w http.ResponseWriter, r *http.Request) {
		since, err := media.ParseCursor(r.URL.Query().Get("since"))
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid_cursor", err.Error())
			return
		}
		limit := media.MaxPageItems
		if l := r.URL.Query().Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 1 || n > media.MaxPageItems {
				httpapi.WriteError(w, http.StatusBadRequest, "invalid_limit", "limit must be 1-"+strconv.Itoa(media.MaxPageItems))
				return
			}
			limit = n
		}
		ch, err := s.Changes(since, limit)
		if err != nil {
			log.Error("catalogue changes", "err", err)
			httpapi.WriteError(w, http.StatusInternalServerError, "internal", "could not read the catalogue: "+err.Error())
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, ch)
	})
	mux.HandleFunc("GET /api/v1/content/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !media.ValidID(id) {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid_id", "not a catalogue id")
			return
		}
		it, err := s.Get(id)
		if errors.Is(err, ErrNotFound) {
			httpapi.WriteError(w, http.StatusNotFound, "not_found", err.Error())
			return
		} else if err != nil {
			httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
			return
		}
		f, err := os.Open(media.BlobPath(s.BlobRoot(), it.SHA256))
		if err != nil {
			log.Error("catalogue blob missing", "id", id, "sha256", it.SHA256, "err", err)
			httpapi.WriteError(w, http.StatusInternalServerError, "blob_missing", "the content of "+id+" is missing on this hub (DATA/blobs); re-import it, or, with several replicas, give them one shared blob directory (docs/CITY-CONSOLE.md)")
			return
		}
		defer f.Close()
		w.Header().Set("ETag", media.ETag(it.SHA256))
		media.SetServeHeaders(w.Header(), it)
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		http.ServeContent(w, r, "", time.Time{}, f)
	})
	(&uploads{s: s, log: log, review: opt.Review}).register(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}
