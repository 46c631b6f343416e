package catalog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/media"
)

func announce(t *testing.T, base string, it media.Item) (int, string) {
	t.Helper()
	b, _ := json.Marshal(it)
	r, err := http.Post(base+"/api/v1/uploads", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var out bytes.Buffer
	out.ReadFrom(r.Body)
	return r.StatusCode, out.String()
}

func bigItem(i int, size int64) media.Item {
	sum := fmt.Sprintf("%064x", i+1)
	return media.Item{ID: media.UploadID(sum), Title: "big", MIME: "video/mp4", Size: size, SHA256: sum}
}

// TestUploadsReserveAndExpire: announced sizes are reserved against free
// space (before, each announcement was checked alone, so any number of
// 64 GiB announcements were accepted), and an upload idle for a day is
// removed with its reservation (before, .part and .json stayed forever).
func TestUploadsReserveAndExpire(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hub")
	st, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewServer(Handler(st, nil))
	defer srv.Close()
	free, err := fsutil.FreeBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	var accepted int64
	refused := -1
	for i := range maxPendingPerEdge {
		code, body := announce(t, srv.URL, bigItem(i, media.MaxItemSize))
		if code == http.StatusInsufficientStorage && strings.Contains(body, "disk_full") {
			refused = i
			break
		}
		if code != 200 {
			t.Fatalf("announcement %d: %d %s", i, code, body)
		}
		accepted += media.MaxItemSize
	}
	if refused < 0 || accepted > free {
		t.Fatalf("accepted %d bytes of announcements with %d bytes free (refused at %d)", accepted, free, refused)
	}
	// A day idle: the sweep at the next announcement removes them all,
	// and the space is announceable again.
	ents, _ := os.ReadDir(filepath.Join(dir, "blobs", "uploads"))
	old := time.Now().Add(-uploadTTL - time.Minute)
	for _, e := range ents {
		os.Chtimes(filepath.Join(dir, "blobs", "uploads", e.Name()), old, old)
	}
	orphan := filepath.Join(dir, "blobs", "uploads", fmt.Sprintf("%064x", 999)+".part")
	os.WriteFile(orphan, []byte("x"), 0o600)
	os.Chtimes(orphan, old, old)
	if code, body := announce(t, srv.URL, bigItem(500, media.MaxItemSize)); code != 200 {
		t.Fatalf("after expiry: %d %s", code, body)
	}
	ents, _ = os.ReadDir(filepath.Join(dir, "blobs", "uploads"))
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("left after the sweep: %v, want only the new announcement", names)
	}
}
