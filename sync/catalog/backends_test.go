package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/sync/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

// backends runs fn on a fresh catalogue of each kind: bbolt, and
// PostgreSQL (what several replicas share).
func backends(t *testing.T, fn func(t *testing.T, st *Store)) {
	t.Run("bolt", func(t *testing.T) {
		st, err := Open(filepath.Join(t.TempDir(), "hub"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		fn(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		st, err := OpenPG(context.Background(), filepath.Join(t.TempDir(), "hub"), pgtest.DB(t))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		fn(t, st)
	})
}

// TestChangesInOrderUnderConcurrentWriters: items put from many writers at
// once (replicas) get distinct change numbers; paging from a cursor sees
// each item once, the newest version, and an unchanged Put adds nothing.
func TestChangesInOrderUnderConcurrentWriters(t *testing.T) {
	backends(t, func(t *testing.T, st *Store) {
		item := func(i int, title string) media.Item {
			sum := sha256hex([]byte{byte(i), byte(i >> 8)})
			return media.Item{ID: media.IDForSum(sum), Title: title, MIME: "video/mp4", Size: int64(i), SHA256: sum}
		}
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w * 25; i < w*25+25; i++ {
					if _, err := st.Put(item(i, "课程")); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		edited := item(7, "课程 7 (edited)")
		edited.Subject = "数学"
		if _, err := st.Put(edited); err != nil {
			t.Fatal(err)
		}
		again, err := st.Put(edited)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]media.Item{}
		var cursor uint64
		var last uint64
		for page := 0; page < 20; page++ {
			ch, err := st.Changes(cursor, 30)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range ch.Items {
				if it.Seq <= last {
					t.Fatalf("change %d after %d", it.Seq, last)
				}
				last = it.Seq
				if _, dup := seen[it.ID]; dup {
					t.Fatalf("item %s listed twice", it.ID)
				}
				seen[it.ID] = it
			}
			if cursor, err = media.ParseCursor(ch.Next); err != nil {
				t.Fatal(err)
			}
			if !ch.More {
				break
			}
		}
		if len(seen) != 100 {
			t.Fatalf("%d items paged, want 100", len(seen))
		}
		if got := seen[edited.ID]; got.Subject != "数学" || got.Seq != again.Seq || got.Seq != last {
			t.Fatalf("edited item %+v (unchanged Put gave seq %d, last %d)", got, again.Seq, last)
		}
		if got, err := st.Get(edited.ID); err != nil || got.Title != edited.Title {
			t.Fatalf("Get %+v %v", got, err)
		}
	})
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
