package diskwatch

import (
	"context"
	"strings"
	"testing"
)

func TestThresholds(t *testing.T) {
	for _, c := range []struct{ size, reserve, low, full int64 }{
		{64 << 20, 8 << 20, 16 << 20, 2 << 20},    // a small disk: an eighth
		{1 << 40, 256 << 20, 512 << 20, 64 << 20}, // a big one: 256 MiB
		{4 << 20, 512 << 10, 1 << 20, 1 << 20},    // tiny: full at 1 MiB at least
	} {
		r, l, f := Thresholds(c.size)
		if r != c.reserve || l != c.low || f != c.full {
			t.Errorf("Thresholds(%d) = %d %d %d, want %d %d %d", c.size, r, l, f, c.reserve, c.low, c.full)
		}
	}
}

// TestNoteFullIsFullAtOnce: on the test's real disk (room to spare) the
// check is ok; a write refused for lack of space makes it report "full",
// naming the disk, before the next reading; a reading with room clears it.
func TestNoteFullIsFullAtOnce(t *testing.T) {
	dir := t.TempDir()
	w := New(Config{Dir: dir})
	if st := w.Status(); st.Size <= 0 || st.Free <= 0 {
		t.Fatalf("no reading of %s: %+v", dir, st)
	}
	if st := w.Status(); st.State != StateOK {
		t.Skipf("the test machine's disk is itself low (%+v)", st)
	}
	if err := w.Check(context.Background()); err != nil {
		t.Fatalf("check on a disk with room: %v", err)
	}
	w.NoteFull()
	err := w.Check(context.Background())
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "is full") {
		t.Fatalf("after ENOSPC: %v", err)
	}
	if st := w.read(); st.State != StateOK || st.NoSpaceErrors != 1 {
		t.Fatalf("a reading with room did not clear the full state: %+v", st)
	}
}
