package cache_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/cache"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/media"
)

func upload(t *testing.T, e *edge, query, ctype string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.url+"/api/v1/media?"+query, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e.token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp, b.Bytes()
}

// TestTeacherUploadServedAndSentToHub uploads a school-made lesson to a
// real edge: it is served on the LAN like any other item, and reaches the
// real hub's catalogue, resuming from the bytes the hub already held.
func TestTeacherUploadServedAndSentToHub(t *testing.T) {
	root := t.TempDir()
	h := newHub(t, filepath.Join(root, "hub"))
	var patches []string
	h.mu.Lock()
	h.onRequest = func(r *http.Request) {
		if r.Method == "PATCH" {
			patches = append(patches, r.Header.Get("Upload-Offset"))
		}
	}
	h.mu.Unlock()
	e := startEdge(t, filepath.Join(root, "edge"), h.srv.URL, func(c *config.Config) { c.CacheUploadMax = "3M" })
	lesson := randBytes(2<<20 + 99)
	sum := sha256hex(lesson)
	id := cache.LocalIDPrefix + sum[:20]

	// An earlier attempt got the first 700,000 bytes to the hub.
	meta := fmt.Sprintf(`{"id":%q,"title":"Fractions by Mr Wang","subject":"math","mime":"video/mp4","size":%d,"sha256":%q}`, id, len(lesson), sum)
	if r, err := http.Post(h.srv.URL+"/api/v1/uploads", "application/json", strings.NewReader(meta)); err != nil || r.StatusCode != 200 {
		t.Fatalf("hub POST: %v %v", r, err)
	}
	req, _ := http.NewRequest("PATCH", h.srv.URL+"/api/v1/uploads/"+sum, bytes.NewReader(lesson[:700_000]))
	req.Header.Set("Upload-Offset", "0")
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != 200 {
		t.Fatalf("hub PATCH: %v %v", r, err)
	}

	resp, body := upload(t, e, "title=Fractions+by+Mr+Wang&subject=math", "video/mp4", lesson)
	if resp.StatusCode != 201 || resp.Header.Get("Location") != "/media/"+id {
		t.Fatalf("upload: %s %s", resp.Status, body)
	}
	if r := get(t, "GET", e.url+"/media/"+id, "Range", "bytes=-100"); r.status != 206 || !bytes.Equal(r.body, lesson[len(lesson)-100:]) || r.header.Get("Content-Type") != "video/mp4" {
		t.Fatalf("serve upload: %d %v", r.status, r.header)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		it, err := h.store.Get(id)
		if err == nil {
			if it.SHA256 != sum || it.Size != int64(len(lesson)) || it.Title != "Fractions by Mr Wang" {
				t.Fatalf("hub item %+v", it)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload did not reach the hub: %+v", e.status(t).Uploads)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if b, err := os.ReadFile(media.BlobPath(h.store.BlobRoot(), sum)); err != nil || !bytes.Equal(b, lesson) {
		t.Fatalf("hub blob: %v", err)
	}
	h.mu.Lock()
	if len(patches) != 2 || patches[0] != "0" || patches[1] != "700000" {
		t.Errorf("hub PATCH offsets %q; want the test's 0, then the edge resuming at 700000", patches)
	}
	h.mu.Unlock()
	e.waitFor(t, "upload queue drained", func(st cache.Status) bool { return len(st.Uploads) == 0 })

	// Bad uploads: too large, no title, no type, empty.
	for _, c := range []struct {
		q, ct string
		body  []byte
		want  int
		code  string
	}{
		{"title=big", "video/mp4", make([]byte, 3<<20+1), 413, "too_large"},
		{"", "video/mp4", []byte("x"), 400, "invalid_upload"},
		{"title=x", "", []byte("x"), 400, "invalid_upload"},
		{"title=x", "video/mp4", nil, 400, "invalid_upload"},
	} {
		resp, body := upload(t, e, c.q, c.ct, c.body)
		if resp.StatusCode != c.want || !strings.Contains(string(body), `"`+c.code+`"`) {
			t.Errorf("upload %q %q (%d bytes): %s %s", c.q, c.ct, len(c.body), resp.Status, body)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(e.data, "blobs", "tmp")); len(ents) != 0 {
		t.Errorf("temp files left behind: %v", ents)
	}
}
