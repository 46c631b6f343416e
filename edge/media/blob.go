package media

import "github.com/campusedge/campusedge/edge/fsutil"

// IDForSum is the catalogue id of content the city imported, by its hex
// SHA-256; school-made content uses UploadID, so the two never collide.
func IDForSum(sum string) string { return "r" + sum[:20] }

// UploadID is the catalogue id of school-made content with hex SHA-256 sum.
// The id is bound to the content, so an upload can add an item but never
// replace another one.
func UploadID(sum string) string { return "l" + sum[:20] }

// UploadState is the hub's answer to both upload calls: how many bytes it
// holds (an edge cut mid-upload continues from there), and whether the item
// is complete.
type UploadState struct {
	Offset int64 `json:"offset"`
	Done   bool  `json:"done"`
}

// PlaceBlob moves the verified, fsynced file tmp to its content address
// under root, durably (the directory is fsynced too).
func PlaceBlob(tmp, root, sum string) error { return fsutil.RenameDurable(tmp, BlobPath(root, sum)) }
