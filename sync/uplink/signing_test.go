package uplink_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/sync/catalog"
	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/uplink"
)

// TestSignedHubClientPassesTheHubsGate: the client every edge→hub call
// other than sync uses (cache fills, recorder uploads, firmware, terminal
// images) signs each request, so the hub's credential check lets a
// resumable upload (JSON announcement, then streamed PATCH bytes) and a
// catalogue read through, while the same calls unsigned get 401.
func TestSignedHubClientPassesTheHubsGate(t *testing.T) {
	t.Parallel()
	st := openBoltHub(t, t.TempDir())
	cat, err := catalog.Open(filepath.Join(t.TempDir(), "cat"))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	srv := hub.NewServer(hub.Config{Store: st, Logger: quiet()})
	mux := http.NewServeMux()
	mux.Handle("/api/v1/sync/", srv)
	mux.Handle("/", srv.Gate(8<<10, catalog.Handler(cat, quiet())))
	hs := httptest.NewServer(mux)
	defer hs.Close()
	e := newEdge(t, nil)
	enrol(t, st, hs.URL, "s1", e)

	content := bytes.Repeat([]byte("recorded lesson "), 4096)
	h := sha256.Sum256(content)
	sum := hex.EncodeToString(h[:])
	item, _ := json.Marshal(media.Item{ID: media.UploadID(sum), Title: "Recorded", MIME: "video/webm", Size: int64(len(content)), SHA256: sum})
	call := func(c *http.Client, method, path string, body []byte) (int, string) {
		req, _ := http.NewRequest(method, hs.URL+path, bytes.NewReader(body))
		if method == http.MethodPatch {
			req.Header.Set("Upload-Offset", "0")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	plain := http.DefaultClient
	if code, _ := call(plain, "POST", "/api/v1/uploads", item); code != http.StatusUnauthorized {
		t.Fatalf("unsigned announcement: %d", code)
	}
	signed := uplink.SignedHubClient(e.DB, nil, e.Key)
	if code, body := call(signed, "POST", "/api/v1/uploads", item); code != 200 {
		t.Fatalf("signed announcement: %d %s", code, body)
	}
	if code, body := call(signed, "PATCH", "/api/v1/uploads/"+sum, content); code != 200 || !strings.Contains(body, `"done":true`) {
		t.Fatalf("signed bytes: %d %s", code, body)
	}
	if code, body := call(signed, "GET", "/api/v1/catalog", nil); code != 200 || !strings.Contains(body, media.UploadID(sum)) {
		t.Fatalf("signed catalogue read: %d %s", code, body)
	}
	if code, _ := call(plain, "GET", "/api/v1/content/"+media.UploadID(sum), nil); code != http.StatusUnauthorized {
		t.Fatalf("unsigned content read: %d", code)
	}
}
