package cache

import (
	"os"
	"path/filepath"

	"github.com/campusedge/campusedge/edge/media"
)

// layout is where the cache keeps files under DATA/blobs, and what the
// files say about an item: the blob directory, not a flag in the store,
// is the truth about what is cached.
type layout struct {
	blobs string
}

// blobPath is where item's verified content lives.
func (l layout) blobPath(it media.Item) string { return media.BlobPath(l.blobs, it.SHA256) }

// partialPath is where item's download in progress lives. ids are
// validated (media.ValidID) before they reach a file name.
func (l layout) partialPath(id string) string {
	return filepath.Join(l.blobs, "partial", id+".part")
}

// State is an item's cache state.
type State string

// States.
const (
	Cached  State = "cached"
	Partial State = "partial"
	Missing State = "missing"
)

// state reports it's state and how many bytes of it are on disk.
func (l layout) state(it media.Item) (State, int64) {
	if fi, err := os.Stat(l.blobPath(it)); err == nil && fi.Mode().IsRegular() && fi.Size() == it.Size {
		return Cached, it.Size
	}
	if fi, err := os.Stat(l.partialPath(it.ID)); err == nil && fi.Size() > 0 {
		return Partial, min(fi.Size(), it.Size)
	}
	return Missing, 0
}
