package cache_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/disktest"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/sync/catalog"
)

// TestSmallDiskPinAndReserve runs a real edge whose data dir is a 64 MB
// disk (ext4 on a loop device, or tmpfs) against a real hub. The cache
// reports the disk's true free bytes, the store's reserve apart; pinning a
// 96 MB lesson with no quota set answers 507 pin_over_quota (the disk
// cannot hold it); and when another file fills the disk, the cache evicts
// an unpinned lesson to give the store its reserve back.
func TestSmallDiskPinAndReserve(t *testing.T) {
	mnt, kind := disktest.Small(t, 64)
	t.Logf("data disk: %s", kind)
	root := t.TempDir()
	in := filepath.Join(root, "in")
	if err := os.MkdirAll(in, 0o700); err != nil {
		t.Fatal(err)
	}
	lesson := randBytes(12 << 20)
	if err := os.WriteFile(filepath.Join(in, "lesson.mp4"), lesson, 0o600); err != nil {
		t.Fatal(err)
	}
	// 96 MB of zeros: sparse on the hub's disk, too big for the edge's.
	if err := os.Truncate(filepath.Join(in, "huge.mp4"), 96<<20); err != nil {
		f, _ := os.Create(filepath.Join(in, "huge.mp4"))
		f.Close()
		if err := os.Truncate(filepath.Join(in, "huge.mp4"), 96<<20); err != nil {
			t.Fatal(err)
		}
	}
	h := newHub(t, filepath.Join(root, "hub"))
	items := map[string]media.Item{}
	if err := h.store.Import(in, func(im catalog.Imported) {
		items[strings.TrimSuffix(filepath.Base(im.Path), ".mp4")] = im.Item
	}); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, filepath.Join(mnt, "edge"), h.srv.URL)
	deadline := time.Now().Add(10 * time.Second)
	for e.catalog(t, "").Total != 2 {
		if time.Now().After(deadline) {
			t.Fatal("catalogue not synced")
		}
		time.Sleep(20 * time.Millisecond)
	}

	u := e.status(t).Usage
	if u.Free <= 0 || u.Reserve <= 0 || u.Reserve > u.Free || u.Available != u.Free-u.Reserve {
		t.Fatalf("usage on an empty 64 MB disk: %+v (free must be the disk's, reserve apart)", u)
	}
	t.Logf("empty disk: free %d, reserve %d, available %d", u.Free, u.Reserve, u.Available)

	var eb struct {
		Error struct{ Code, Message string }
	}
	e.do(t, "PUT", "/api/v1/cache/pins/"+items["huge"].ID, nil, 507, &eb)
	if eb.Error.Code != "pin_over_quota" || !strings.Contains(eb.Error.Message, "disk") {
		t.Fatalf("pin of 96 MB on a 64 MB disk: %+v", eb)
	}

	// A lesson read through (unpinned), then something else fills the disk.
	if r := get(t, "GET", e.url+"/media/"+items["lesson"].ID); r.status != 200 || !bytes.Equal(r.body, lesson) {
		t.Fatalf("GET lesson: %d", r.status)
	}
	blob := media.BlobPath(filepath.Join(e.data, "blobs"), items["lesson"].SHA256)
	if _, err := os.Stat(blob); err != nil {
		t.Fatal(err)
	}
	disktest.Fill(t, filepath.Join(mnt, "filler"))
	full := e.status(t).Usage
	deadline = time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(blob); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cache kept its lesson on a full disk: %+v", e.status(t).Usage)
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := e.status(t).Usage
	if after.Free < after.Reserve || after.Blobs != 0 {
		t.Fatalf("eviction did not free the lesson's space: before %+v after %+v", full, after)
	}
	t.Logf("disk filled (free %d): the cache evicted its unpinned lesson (free %d, reserve %d)", full.Free, after.Free, after.Reserve)
}
