package fwtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/campusedge/campusedge/firmware/release"
)

// Hub is a real HTTP release channel on loopback.
type Hub struct {
	URL   string
	Store *release.Store
	Token string
	// Wrap, if set before requests arrive, wraps the handler (to cut
	// connections, count requests, ...).
	Srv *httptest.Server
}

// NewHub starts a release channel trusting k, optionally wrapped.
func NewHub(t testing.TB, k Keys, wrap func(http.Handler) http.Handler) *Hub {
	t.Helper()
	data := t.TempDir()
	st, err := release.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(k.PubPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(st.KeysDir(), filepath.Base(k.PubPath)), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err = release.Open(data) // reload with the key
	if err != nil {
		t.Fatal(err)
	}
	h, err := release.Handler(st, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	tok, _, err := st.PublishToken()
	if err != nil {
		t.Fatal(err)
	}
	return &Hub{URL: srv.URL, Store: st, Token: tok, Srv: srv}
}

// Publish uploads a bundle file over HTTP.
func (h *Hub) Publish(t testing.TB, path, channel string, rollout int) release.Release {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	code, body := h.Do(t, http.MethodPost, fmt.Sprintf("/api/v1/firmware/releases?channel=%s&rollout=%d", channel, rollout), b, true)
	if code != http.StatusCreated {
		t.Fatalf("publish: HTTP %d %s", code, body)
	}
	var rel release.Release
	if err := json.Unmarshal(body, &rel); err != nil {
		t.Fatal(err)
	}
	return rel
}

// Do sends a request and returns status and body.
func (h *Hub) Do(t testing.TB, method, path string, body []byte, auth bool) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, h.URL+path, bytes.NewReader(body))
	if auth {
		req.Header.Set("Authorization", "Bearer "+h.Token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}
