//go:build !unix

package fsutil

import "math"

// FreeBytes is unknown here: a write fails if the disk fills.
func FreeBytes(string) (int64, error) { return math.MaxInt64, nil }

// Space is unknown here (see FreeBytes).
func Space(string) (free, size int64, err error) { return math.MaxInt64, math.MaxInt64, nil }
