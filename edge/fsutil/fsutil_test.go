package fsutil_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/campusedge/campusedge/edge/disktest"
	"github.com/campusedge/campusedge/edge/fsutil"
)

func TestMkdirAllDurableAndRename(t *testing.T) {
	root := t.TempDir()
	tmp := filepath.Join(root, "tmp")
	if err := os.WriteFile(tmp, []byte("blob"), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(root, "blobs", "sha256", "ab", "abcdef")
	if err := fsutil.RenameDurable(tmp, dst); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "blob" {
		t.Fatalf("renamed file: %q %v", b, err)
	}
	if fi, err := os.Stat(filepath.Dir(dst)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("shard dir: %v %v", fi, err)
	}
	if err := fsutil.MkdirAllDurable(filepath.Dir(dst), 0o700); err != nil { // exists: a no-op
		t.Fatal(err)
	}
	if err := fsutil.MkdirAllDurable(filepath.Join(dst, "x"), 0o700); err == nil {
		t.Fatal("a directory under a file was made")
	}
}

// TestIsNoSpaceOnARealFullDisk: the error a full file system gives (here
// a 16 MB disk written until it refuses) is recognised, also wrapped; an
// ordinary error is not.
func TestIsNoSpaceOnARealFullDisk(t *testing.T) {
	mnt, kind := disktest.Small(t, 16)
	t.Logf("disk: %s", kind)
	err := fsutil.WriteFileAtomic(filepath.Join(mnt, "too-big"), make([]byte, 32<<20), 0o600)
	if err == nil {
		t.Fatal("32 MB fitted on a 16 MB disk")
	}
	if !fsutil.IsNoSpace(err) || !fsutil.IsNoSpace(fmt.Errorf("store record: %w", err)) {
		t.Fatalf("not recognised as a full disk: %v", err)
	}
	if fsutil.IsNoSpace(errors.New("no space left on device")) || fsutil.IsNoSpace(os.ErrNotExist) {
		t.Fatal("text or another error taken for a full disk")
	}
	if _, err := os.Stat(filepath.Join(mnt, "too-big")); !os.IsNotExist(err) {
		t.Fatalf("a failed atomic write left the file: %v", err)
	}
}
