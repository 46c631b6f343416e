// Package termimage serves classroom terminal firmware on the school LAN.
// The hub publishes images per terminal model as ordinary signed bundles
// (product "classterm", target = the model); the edge fetches each image
// once over the WAN, however many terminals ask, verifies it completely,
// and serves it with Range to every terminal of that model. NextWave picks
// which terminals update next: a few at a time, never one in a class.
package termimage

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/release"
	"github.com/campusedge/campusedge/firmware/update"
)

// Product is the bundle product of terminal images.
const Product = "classterm"

var modelRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidModel reports whether m can name a terminal model.
func ValidModel(m string) bool { return modelRE.MatchString(m) }

// Config wires Images.
type Config struct {
	Hub     string
	EdgeID  string
	Channel string
	Keys    *bundle.Keyring
	Dir     string
	Client  *http.Client
	Limiter *rate.Limiter
	Logger  *slog.Logger
	// TTL is how long the hub's answer for a model is reused.
	TTL time.Duration
}

// Images is the edge's terminal image cache.
type Images struct {
	cfg  Config
	base context.Context

	// asking serialises questions to the hub: one in flight at a time.
	asking sync.Mutex

	mu sync.Mutex
	// latest is the newest image of every model the hub publishes for this
	// edge, from one list asked at most once per TTL. A model name a client
	// makes up costs neither a hub request nor a map entry.
	latest  map[string]*release.Release
	asked   time.Time // when latest was last asked for (answered or not)
	flights map[string]*flight
}

// retryAfterFailure is how soon a failed question to the hub is asked again.
const retryAfterFailure = 30 * time.Second

type flight struct {
	done chan struct{}
	path string
	err  error
}

// New returns the cache; fetches run on ctx's lifetime, not a request's.
func New(ctx context.Context, cfg Config) *Images {
	if cfg.TTL <= 0 {
		cfg.TTL = 5 * time.Minute
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Channel == "" {
		cfg.Channel = release.Stable
	}
	return &Images{cfg: cfg, base: ctx, flights: map[string]*flight{}}
}

// ErrNoImage means the hub has no image for the model (for this edge).
var ErrNoImage = errors.New("no terminal image published for this model")

// Latest returns the newest image for model that this edge's channel and
// rollout wave allow. The hub is asked for every model's images at once,
// at most once per TTL (once per retryAfterFailure while it fails), so
// however many model names clients send, the hub sees one request per TTL
// and the edge keeps one entry per published model.
func (im *Images) Latest(ctx context.Context, model string) (release.Release, error) {
	if !ValidModel(model) {
		return release.Release{}, fmt.Errorf("terminal model %q must be 1-64 characters of a-z 0-9 . _ -", model)
	}
	latest, err := im.list(ctx)
	if err != nil {
		return release.Release{}, err
	}
	rel := latest[model]
	if rel == nil {
		return release.Release{}, ErrNoImage
	}
	return *rel, nil
}

// list returns the newest image per model, asking the hub when the last
// answer is older than TTL.
func (im *Images) list(ctx context.Context) (map[string]*release.Release, error) {
	fresh := func() (map[string]*release.Release, bool) {
		im.mu.Lock()
		defer im.mu.Unlock()
		ttl := im.cfg.TTL
		if im.latest == nil {
			ttl = retryAfterFailure
		}
		return im.latest, !im.asked.IsZero() && time.Since(im.asked) <= ttl
	}
	if l, ok := fresh(); ok {
		if l == nil {
			return nil, errors.New("the hub did not answer the last question for terminal images; the edge asks again within " + retryAfterFailure.String())
		}
		return l, nil
	}
	im.asking.Lock()
	defer im.asking.Unlock()
	if l, ok := fresh(); ok && l != nil { // another caller just asked
		return l, nil
	}
	l, err := im.ask(ctx)
	im.mu.Lock()
	defer im.mu.Unlock()
	im.asked = time.Now()
	if err != nil {
		if im.latest != nil {
			im.asked = im.asked.Add(-im.cfg.TTL + retryAfterFailure) // keep serving; ask again soon
			return im.latest, nil                                    // hub unreachable: keep serving what we have
		}
		return nil, err
	}
	im.latest = l
	return l, nil
}

// ask fetches the hub's terminal images and keeps the newest per model.
func (im *Images) ask(ctx context.Context) (map[string]*release.Release, error) {
	if im.cfg.Hub == "" {
		return nil, errors.New("no -cloud hub configured")
	}
	q := url.Values{"product": {Product}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, im.cfg.Hub+"/api/v1/firmware/releases?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := im.cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask the hub for terminal images: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("hub answered with HTTP %d", resp.StatusCode)
	}
	var out struct{ Releases []release.Release }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("hub's release list: %w", err)
	}
	best := map[string]*release.Release{}
	for i := range out.Releases {
		r := &out.Releases[i]
		if r.Product != Product || !ValidModel(r.Target) || len(r.SHA256) != 64 {
			continue
		}
		if im.cfg.Channel == release.Stable && r.Channel != release.Stable {
			continue
		}
		if !release.InRollout(im.cfg.EdgeID, r.Target, r.Version, r.Rollout) {
			continue
		}
		if b := best[r.Target]; b == nil {
			best[r.Target] = r
		} else if c, err := bundle.CompareStrings(r.Version, b.Version); err == nil && c > 0 {
			best[r.Target] = r
		}
	}
	return best, nil
}

// Ensure returns the path of rel's verified bundle, fetching it from the hub
// if this edge does not have it yet. Concurrent callers for the same image
// share one fetch: the WAN sees it once.
func (im *Images) Ensure(ctx context.Context, rel release.Release) (string, error) {
	im.mu.Lock()
	f, ok := im.flights[rel.SHA256]
	if ok && isDone(f) && f.err != nil {
		ok = false // a failed fetch is tried again by the next caller
	}
	if !ok {
		f = &flight{done: make(chan struct{})}
		im.flights[rel.SHA256] = f
		go func() {
			f.path, f.err = im.fetch(rel)
			close(f.done)
		}()
	}
	im.mu.Unlock()
	select {
	case <-f.done:
		return f.path, f.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func isDone(f *flight) bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

func (im *Images) fetch(rel release.Release) (string, error) {
	fe := &update.Fetcher{Client: im.cfg.Client, Hub: im.cfg.Hub, Dir: im.cfg.Dir, Limiter: im.cfg.Limiter, Logger: im.cfg.Logger, KeepOthers: true}
	path, err := fe.Fetch(im.base, rel)
	if err != nil {
		return "", err
	}
	// The edge never serves an image a terminal would refuse.
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	r, err := bundle.Open(bufio.NewReaderSize(f, 1<<20), im.cfg.Keys, bundle.Policy{Product: Product, Target: rel.Target})
	if err == nil {
		err = r.Verify()
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("terminal image %s %s refused: %w", rel.Target, rel.Version, err)
	}
	im.cfg.Logger.Info("terminal image cached", "model", rel.Target, "version", rel.Version, "bytes", rel.Size)
	return path, nil
}

// Mux is where Register adds routes (api.Server or http.ServeMux).
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Image is what a terminal learns about its model's image.
type Image struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	URL     string `json:"url"`
}

// Register adds, for terminals on the LAN:
//
//	GET      /api/v1/terminal-images/{model}          the newest image: version, sha256, size, url
//	GET|HEAD /api/v1/terminal-images/{model}/bundle   its bytes (Range, ETag)
func (im *Images) Register(mux Mux) {
	mux.Handle("GET /api/v1/terminal-images/{model}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rel, ok := im.latestOrError(w, r)
		if !ok {
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, Image{Model: rel.Target, Version: rel.Version, SHA256: rel.SHA256, Size: rel.Size,
			URL: "/api/v1/terminal-images/" + rel.Target + "/bundle"})
	}))
	mux.Handle("GET /api/v1/terminal-images/{model}/bundle", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rel, ok := im.latestOrError(w, r)
		if !ok {
			return
		}
		path, err := im.Ensure(r.Context(), rel)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadGateway, "image_unavailable", "the edge could not fetch this image from the hub: "+err.Error())
			return
		}
		f, err := os.Open(path)
		if err != nil {
			httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
			return
		}
		defer f.Close()
		w.Header().Set("ETag", `"`+rel.SHA256+`"`)
		w.Header().Set("Content-Type", "application/vnd.campusedge.firmware")
		http.ServeContent(w, r, "", time.Time{}, f)
	}))
}

func (im *Images) latestOrError(w http.ResponseWriter, r *http.Request) (release.Release, bool) {
	model := r.PathValue("model")
	if !ValidModel(model) {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_model", "a terminal model is 1-64 characters of a-z 0-9 . _ -")
		return release.Release{}, false
	}
	rel, err := im.Latest(r.Context(), model)
	if errors.Is(err, ErrNoImage) {
		httpapi.WriteError(w, http.StatusNotFound, "no_image", "the city has published no image for model "+model)
		return rel, false
	}
	if err != nil {
		httpapi.WriteError(w, http.StatusBadGateway, "hub_unreachable", err.Error())
		return rel, false
	}
	return rel, true
}

// Terminal is what the wave planner knows of one terminal.
type Terminal struct {
	ID       string
	Model    string
	Version  string
	Online   bool
	InClass  bool
	Updating bool
}

// NextWave returns the ids of terminals to tell to update now: at most
// size updating at once (those already updating count), only online
// terminals not in a class, only those older than their model's latest
// version. Order is by id so waves are predictable in logs.
func NextWave(ts []Terminal, latest map[string]string, size int) []string {
	busy := 0
	for _, t := range ts {
		if t.Updating {
			busy++
		}
	}
	var cand []Terminal
	for _, t := range ts {
		want, ok := latest[t.Model]
		if !ok || t.Updating || !t.Online || t.InClass {
			continue
		}
		if t.Version != "" {
			if c, err := bundle.CompareStrings(t.Version, want); err == nil && c >= 0 {
				continue
			}
		}
		cand = append(cand, t)
	}
	sort.Slice(cand, func(i, j int) bool { return cand[i].ID < cand[j].ID })
	n := max(0, min(size-busy, len(cand)))
	out := make([]string, 0, n)
	for _, t := range cand[:n] {
		out = append(out, t.ID)
	}
	return out
}
