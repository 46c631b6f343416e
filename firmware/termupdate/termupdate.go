// Package termupdate is the terminal side of terminal images: a classroom
// terminal asks its edge for its model's image, downloads it from the edge
// (never the WAN), verifies it with the release keys it trusts, installs it
// into its own inactive slot and switches, exactly like the edge does for
// itself (firmware/slot). The edge decides when a terminal may update
// (termimage.NextWave); this package does the update once told.
package termupdate

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/release"
	"github.com/campusedge/campusedge/firmware/slot"
	"github.com/campusedge/campusedge/firmware/termimage"
	"github.com/campusedge/campusedge/firmware/update"
)

// Config wires a terminal updater.
type Config struct {
	Edge   string // edge base URL
	Model  string
	Slots  *slot.Manager
	Dir    string // download dir
	Client *http.Client
	Logger *slog.Logger
}

// Result says what Apply did.
type Result struct {
	From, To string
	Slot     string
	Updated  bool
}

// Installed is the version in the terminal's active slot ("" if none).
func Installed(m *slot.Manager) string {
	st, err := m.State()
	if err != nil || st.Active == "" {
		return ""
	}
	man, err := m.Manifest(st.Active)
	if err != nil {
		return ""
	}
	return man.Version
}

// Apply asks the edge for the model's image and installs it if it is newer
// than what the terminal runs. The new slot is switched to on trial; the
// terminal's own start-up commits it (or its boot counter falls back).
func Apply(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	res := Result{From: Installed(cfg.Slots)}
	img, err := ask(ctx, cfg)
	if err != nil {
		return res, err
	}
	if res.From != "" {
		if c, err := bundle.CompareStrings(img.Version, res.From); err == nil && c <= 0 {
			return res, nil
		}
	}
	fe := &update.Fetcher{Client: cfg.Client, Hub: cfg.Edge, Dir: cfg.Dir, Logger: cfg.Logger}
	path, err := fe.Fetch(ctx, release.Release{Product: termimage.Product, Target: img.Model, Version: img.Version, SHA256: img.SHA256, Size: img.Size, URL: img.URL})
	if err != nil {
		return res, err
	}
	f, err := os.Open(path)
	if err != nil {
		return res, err
	}
	defer f.Close()
	pol, err := cfg.Slots.Policy(termimage.Product, cfg.Model)
	if err != nil {
		return res, err
	}
	r, err := bundle.Open(bufio.NewReaderSize(f, 1<<20), cfg.Slots.Keyring(), pol)
	if err != nil {
		os.Remove(path)
		return res, fmt.Errorf("refused terminal image %s: %w", img.Version, err)
	}
	s, err := cfg.Slots.Install(ctx, r)
	if err != nil {
		return res, err
	}
	if err := cfg.Slots.Switch(s); err != nil {
		return res, err
	}
	os.Remove(path)
	cfg.Logger.Info("terminal image installed; restart into it", "version", img.Version, "slot", s)
	return Result{From: res.From, To: img.Version, Slot: s, Updated: true}, nil
}

func ask(ctx context.Context, cfg Config) (termimage.Image, error) {
	var img termimage.Image
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Edge+"/api/v1/terminal-images/"+cfg.Model, nil)
	if err != nil {
		return img, err
	}
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return img, fmt.Errorf("ask the edge for a terminal image: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return img, err
	}
	if resp.StatusCode != http.StatusOK {
		return img, fmt.Errorf("edge answered HTTP %d: %s", resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &img); err != nil {
		return img, err
	}
	if img.Model != cfg.Model || len(img.SHA256) != 64 || img.Size <= 0 || filepath.Base(img.URL) != "bundle" {
		return img, errors.New("edge offered an unusable image")
	}
	return img, nil
}
