package release

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/firmware/bundle"
)

// maxCheckBytes bounds an edge's check request (its report included).
const maxCheckBytes = 64 << 10

// Handler serves the release channel:
//
//	POST     /api/v1/firmware/releases?channel=C&rollout=N   publish a bundle (publish token)
//	GET      /api/v1/firmware/releases?product=P&target=T    list releases (filters optional)
//	PATCH    /api/v1/firmware/releases/{target}/{version}    {"channel":…,"rollout_percent":…} (publish token)
//	POST     /api/v1/firmware/check                          an edge's report and question
//	GET|HEAD /api/v1/firmware/bundles/{sha256}               bundle bytes (Range, ETag)
//	GET      /api/v1/firmware/edges                          edge reports (publish token)
func Handler(s *Store, log *slog.Logger) (http.Handler, error) {
	if log == nil {
		log = slog.Default()
	}
	token, tokenFile, err := s.PublishToken()
	if err != nil {
		return nil, fmt.Errorf("firmware publish token: %w", err)
	}
	log.Info("firmware release channel ready", "publish_token_file", tokenFile, "trusted_keys", keyIDs(s), "keys_dir", s.KeysDir())
	h := &handler{s: s, log: log, token: token, tokenFile: tokenFile}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/firmware/releases", h.authed(h.publish))
	mux.HandleFunc("GET /api/v1/firmware/releases", h.releases)
	mux.HandleFunc("PATCH /api/v1/firmware/releases/{target}/{version}", h.authed(h.setRollout))
	mux.HandleFunc("POST /api/v1/firmware/check", h.check)
	mux.HandleFunc("GET /api/v1/firmware/edges", h.authed(h.edges))
	mux.HandleFunc("GET /api/v1/firmware/bundles/{sha256}", h.bundle)
	return mux, nil
}

// handler is the release channel's routes over its store.
type handler struct {
	s         *Store
	log       *slog.Logger
	token     string // the publish token
	tokenFile string // where it is kept, named in the 401 answer
}

// authed lets a request through to next only with the publish token.
func (h *handler) authed(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := httpapi.BearerToken(r)
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(h.token)) != 1 {
			httpapi.WriteError(w, http.StatusUnauthorized, httpapi.CodeUnauthorized, "this call needs the publish token: 'Authorization: Bearer <token>' from "+h.tokenFile)
			return
		}
		next(w, r)
	}
}

// publish: POST /api/v1/firmware/releases?channel=C&rollout=N with a bundle.
func (h *handler) publish(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	channel := q.Get("channel")
	if channel == "" {
		channel = Stable
	}
	rollout := 100
	if v := q.Get("rollout"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid_rollout", "rollout must be a whole percentage 0-100")
			return
		}
		rollout = n
	}
	rel, err := h.s.Publish(r.Body, channel, rollout)
	switch {
	case errors.Is(err, ErrConflict):
		httpapi.WriteError(w, http.StatusConflict, "version_exists", err.Error())
		return
	case errors.Is(err, bundle.ErrUntrusted), errors.Is(err, bundle.ErrBadSignature), errors.Is(err, bundle.ErrUnsigned):
		httpapi.WriteError(w, http.StatusUnprocessableEntity, "bad_signature", err.Error())
		return
	case err != nil:
		httpapi.WriteError(w, http.StatusUnprocessableEntity, "bad_bundle", err.Error())
		return
	}
	h.log.Info("firmware release published", "target", rel.Target, "version", rel.Version, "channel", rel.Channel, "rollout_percent", rel.Rollout, "sha256", rel.SHA256, "bytes", rel.Size)
	httpapi.WriteJSON(w, http.StatusCreated, rel)
}

// releases: GET /api/v1/firmware/releases?product=P&target=T.
func (h *handler) releases(w http.ResponseWriter, r *http.Request) {
	product, target := r.URL.Query().Get("product"), r.URL.Query().Get("target")
	rels, err := h.s.Releases()
	if err != nil {
		h.log.Error("firmware releases", "err", err)
		httpapi.WriteError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error()+"; retry shortly")
		return
	}
	out := []Release{}
	for _, rel := range rels {
		if (product == "" || rel.Product == product) && (target == "" || rel.Target == target) {
			out = append(out, rel)
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"releases": out})
}

// setRollout: PATCH /api/v1/firmware/releases/{target}/{version}.
func (h *handler) setRollout(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Channel string `json:"channel"`
		Rollout *int   `json:"rollout_percent"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Rollout == nil {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidJSON, `send {"channel":"stable"|"beta","rollout_percent":0-100}`)
		return
	}
	rel, err := h.s.SetRollout(r.PathValue("target"), r.PathValue("version"), body.Channel, *body.Rollout)
	if errors.Is(err, ErrNotFound) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, err.Error())
		return
	} else if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_rollout", err.Error())
		return
	}
	h.log.Info("firmware rollout changed", "target", rel.Target, "version", rel.Version, "channel", rel.Channel, "rollout_percent", rel.Rollout)
	httpapi.WriteJSON(w, http.StatusOK, rel)
}

// check: POST /api/v1/firmware/check, an edge's report and question.
func (h *handler) check(w http.ResponseWriter, r *http.Request) {
	var c Check
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCheckBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidJSON, "the body is not a firmware check: "+err.Error())
		return
	}
	// Behind the hub's credential check, an edge reports about itself only,
	// for the school it is enrolled in; city staff may ask as any edge.
	if caller, ok := httpapi.CallerFrom(r.Context()); ok && !caller.Staff {
		if c.EdgeID != caller.Edge {
			httpapi.WriteError(w, http.StatusForbidden, "wrong_edge", "this check is signed by edge "+caller.Edge+" but reports for edge "+c.EdgeID+"; an edge reports only about itself")
			return
		}
		c.School = caller.School
	}
	rel, err := h.s.Answer(c)
	if errors.Is(err, ErrInvalidCheck) {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_check", err.Error())
		return
	} else if err != nil {
		h.log.Error("firmware check", "edge", c.EdgeID, "err", err)
		httpapi.WriteError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error()+"; ask again later")
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"update": rel})
}

// edges: GET /api/v1/firmware/edges, the edges' reports and bundle counters.
func (h *handler) edges(w http.ResponseWriter, r *http.Request) {
	req, bytes := h.s.Stats()
	edges, err := h.s.Edges()
	if err != nil {
		h.log.Error("firmware edge reports", "err", err)
		httpapi.WriteError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error()+"; retry shortly")
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"edges": edges, "bundle_requests": req, "bundle_bytes": bytes})
}

// bundle: GET|HEAD /api/v1/firmware/bundles/{sha256}, with Range and ETag.
func (h *handler) bundle(w http.ResponseWriter, r *http.Request) {
	sum := r.PathValue("sha256")
	if len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_id", "a bundle is named by its 64-hex-digit SHA-256")
		return
	}
	f, err := os.Open(h.s.blobPath(sum))
	if err != nil {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "no bundle with that SHA-256 on this hub")
		return
	}
	defer f.Close()
	if r.Method == http.MethodGet {
		h.s.bundleRequests.Add(1)
	}
	w.Header().Set("ETag", `"`+sum+`"`)
	w.Header().Set("Content-Type", "application/vnd.campusedge.firmware")
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", time.Time{}, f)
	h.s.bundleBytes.Add(cw.n)
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func keyIDs(s *Store) []string {
	if s.keys == nil {
		return nil
	}
	return s.keys.IDs()
}
