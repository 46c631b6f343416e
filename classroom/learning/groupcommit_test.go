package learning_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/classroom/learning"
	"github.com/campusedge/campusedge/sync/outbox"
)

func openStore(t testing.TB) *bolt.DB {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "edge.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { return errors.Join(outbox.Migrate(tx), learning.Migrate(tx)) }); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestGroupCommitJoinBurst: eighty joins at once through the outbox's
// group commit are each returned once durable, numbered without gaps, in
// far fewer commits than records; all are in the session and the outbox.
func TestGroupCommitJoinBurst(t *testing.T) {
	db := openStore(t)
	ob := outbox.New(outbox.Config{DB: db})
	defer ob.Close()
	st := learning.New(db, outbox.AppendTx, ob.Notify).GroupCommit(ob.Update)
	const n = 80
	var wg sync.WaitGroup
	seqs := make(chan uint64, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := st.Add(context.Background(), learning.Record{Kind: learning.KindAttendanceJoin, Session: "s1", Classroom: fmt.Sprintf("c-%d", i), Data: json.RawMessage(`{}`)})
			if err != nil {
				t.Error(err)
				return
			}
			seqs <- r.Seq
		}()
	}
	wg.Wait()
	close(seqs)
	seen := map[uint64]bool{}
	for s := range seqs {
		seen[s] = true
	}
	for s := uint64(1); s <= n; s++ {
		if !seen[s] {
			t.Fatalf("seq %d missing: %v", s, seen)
		}
	}
	got, err := st.Session("s1", "", 0)
	if err != nil || len(got) != n {
		t.Fatalf("session holds %d records: %v", len(got), err)
	}
	if stats, _ := ob.Stats(); stats.LastSeq != n {
		t.Fatalf("outbox last seq %d, want %d", stats.LastSeq, n)
	}
	t.Logf("%d joins in %d commits", n, ob.Commits())
	if ob.Commits() >= n {
		t.Errorf("no commit was shared: %d commits for %d records", ob.Commits(), n)
	}
}

// BenchmarkJoinBurst: 80 classrooms' joins at once, each Add returning
// once durable: one bbolt commit (and its fsyncs) per record, against the
// outbox's group commit. Reports the burst's wall time.
//
//	go test ./classroom/learning/ -run XXX -bench JoinBurst -benchtime 20x
func BenchmarkJoinBurst(b *testing.B) {
	for _, mode := range []string{"commit-each", "group-commit"} {
		b.Run(mode, func(b *testing.B) {
			db := openStore(b)
			ob := outbox.New(outbox.Config{DB: db})
			defer ob.Close()
			st := learning.New(db, outbox.AppendTx, nil)
			if mode == "group-commit" {
				st.GroupCommit(ob.Update)
			}
			var total time.Duration
			for i := 0; i < b.N; i++ {
				start := time.Now()
				var wg sync.WaitGroup
				for c := range 80 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if _, err := st.Add(context.Background(), learning.Record{Kind: learning.KindAttendanceJoin, Session: "s", Classroom: fmt.Sprintf("c-%d", c)}); err != nil {
							b.Error(err)
						}
					}()
				}
				wg.Wait()
				total += time.Since(start)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/burst")
		})
	}
}
