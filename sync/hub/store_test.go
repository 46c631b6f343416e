package hub_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/internal/pgtest"
	"github.com/campusedge/campusedge/sync/wire"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

// backends opens a fresh store of each kind: the same suite runs on both.
func backends(t *testing.T, fn func(t *testing.T, st hub.Store)) {
	t.Run("bolt", func(t *testing.T) {
		t.Parallel()
		st, err := hub.OpenBolt(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		fn(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		st, err := hub.OpenPG(context.Background(), pgtest.DB(t))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		fn(t, st)
	})
}

var ctx = context.Background()

func recs(first, n uint64, prefix string) []wire.Record {
	var out []wire.Record
	for s := first; s < first+n; s++ {
		out = append(out, wire.Record{Seq: s, ID: fmt.Sprintf("%s%d", prefix, s), Kind: "attendance.mark", At: 1700000000000 + int64(s), Payload: []byte(fmt.Sprintf(`{"n":%d}`, s))})
	}
	return out
}

func mustEdge(t *testing.T, st hub.Store, school, id string) {
	t.Helper()
	if err := st.CreateSchool(ctx, hub.School{Code: school, Name: school, Created: time.Now()}); err != nil && !errors.Is(err, hub.ErrExists) {
		t.Fatal(err)
	}
	h := []byte("token-" + id)
	if err := st.CreateEnrolToken(ctx, school, h, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Enrol(ctx, h, hub.Edge{ID: id, PublicKey: []byte("key-" + id)}, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestStoreSchoolsAndEnrolment(t *testing.T) {
	backends(t, func(t *testing.T, st hub.Store) {
		now := time.Now().Truncate(time.Millisecond)
		if err := st.CreateSchool(ctx, hub.School{Code: "s1", Name: "No. 1 Middle", Created: now}); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateSchool(ctx, hub.School{Code: "s1", Name: "again", Created: now}); !errors.Is(err, hub.ErrExists) {
			t.Fatalf("duplicate school: %v", err)
		}
		if sc, err := st.School(ctx, "s1"); err != nil || sc.Name != "No. 1 Middle" {
			t.Fatalf("%+v %v", sc, err)
		}
		if _, err := st.School(ctx, "nope"); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("missing school: %v", err)
		}
		if err := st.CreateEnrolToken(ctx, "nope", []byte("x"), now.Add(time.Hour)); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("token for unknown school: %v", err)
		}
		_ = st.CreateSchool(ctx, hub.School{Code: "s2", Name: "Other", Created: now})
		for _, tok := range []string{"t1", "t2", "t3"} {
			if err := st.CreateEnrolToken(ctx, "s1", []byte(tok), now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		_ = st.CreateEnrolToken(ctx, "s2", []byte("t-other"), now.Add(time.Hour))
		_ = st.CreateEnrolToken(ctx, "s1", []byte("t-old"), now.Add(-time.Second))
		e, err := st.Enrol(ctx, []byte("t1"), hub.Edge{ID: "e1", PublicKey: []byte("k1")}, now)
		if err != nil || e.School != "s1" {
			t.Fatalf("%+v %v", e, err)
		}
		if _, err := st.Enrol(ctx, []byte("t1"), hub.Edge{ID: "e2", PublicKey: []byte("k2")}, now); !errors.Is(err, hub.ErrTokenInvalid) {
			t.Fatalf("token used twice: %v", err)
		}
		if _, err := st.Enrol(ctx, []byte("t-old"), hub.Edge{ID: "e2", PublicKey: []byte("k2")}, now); !errors.Is(err, hub.ErrTokenInvalid) {
			t.Fatalf("expired token: %v", err)
		}
		if _, err := st.Enrol(ctx, []byte("t2"), hub.Edge{ID: "e1", PublicKey: []byte("other key")}, now); !errors.Is(err, hub.ErrExists) {
			t.Fatalf("same id, other key: %v", err)
		}
		if _, err := st.Enrol(ctx, []byte("t-other"), hub.Edge{ID: "e1", PublicKey: []byte("k1")}, now); !errors.Is(err, hub.ErrExists) {
			t.Fatalf("same edge into another school: %v", err)
		}
		// Concurrent use of one token: exactly one wins.
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := st.Enrol(ctx, []byte("t3"), hub.Edge{ID: fmt.Sprintf("c%d", i), PublicKey: []byte("k")}, now); err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("one token enrolled %d edges", wins)
		}
		if err := st.RevokeEdge(ctx, "e1"); err != nil {
			t.Fatal(err)
		}
		if e, _ := st.Edge(ctx, "e1"); !e.Revoked {
			t.Fatal("revoke not stored")
		}
		if err := st.RevokeEdge(ctx, "ghost"); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("revoke unknown: %v", err)
		}
		if es, _ := st.Edges(ctx, "s1"); len(es) != 2 {
			t.Fatalf("edges of s1: %+v", es)
		}
	})
}

func TestStoreNonces(t *testing.T) {
	backends(t, func(t *testing.T, st hub.Store) {
		now := time.Now()
		if err := st.UseNonce(ctx, "e1", "n1", now.Add(time.Minute), now); err != nil {
			t.Fatal(err)
		}
		if err := st.UseNonce(ctx, "e1", "n1", now.Add(time.Minute), now); !errors.Is(err, hub.ErrReplay) {
			t.Fatalf("replay: %v", err)
		}
		if err := st.UseNonce(ctx, "e2", "n1", now.Add(time.Minute), now); err != nil {
			t.Fatalf("same nonce, other edge: %v", err)
		}
		later := now.Add(2 * time.Minute)
		if err := st.UseNonce(ctx, "e1", "n1", later.Add(time.Minute), later); err != nil {
			t.Fatalf("expired nonce reused: %v", err)
		}
	})
}

func TestStoreIngestExactlyOnce(t *testing.T) {
	backends(t, func(t *testing.T, st hub.Store) {
		mustEdge(t, st, "s1", "e1")
		mustEdge(t, st, "s2", "e2")
		now := time.Now()
		r, err := st.Ingest(ctx, "e1", "s1", recs(1, 10, "a"), now)
		if err != nil || r.Acked != 10 || r.Accepted != 10 {
			t.Fatalf("%+v %v", r, err)
		}
		// Overlap (lost ack, resend from 6): duplicates counted, not stored again.
		r, err = st.Ingest(ctx, "e1", "s1", recs(6, 10, "a"), now)
		if err != nil || r.Acked != 15 || r.Accepted != 5 || r.Dups != 5 {
			t.Fatalf("overlap: %+v %v", r, err)
		}
		var gap *hub.GapError
		if _, err := st.Ingest(ctx, "e1", "s1", recs(15+wire.MaxAhead+2, 3, "a"), now); !errors.As(err, &gap) || gap.Acked != 15 {
			t.Fatalf("gap beyond the in-flight window: %v", err)
		}
		if _, err := st.Ingest(ctx, "e1", "s1", recs(14, 3, "different"), now); !errors.Is(err, hub.ErrSeqConflict) {
			t.Fatalf("seq reused with another id: %v", err)
		}
		// The refused batch stored nothing (seq 16 of it is not there).
		if r, _ := st.Ingest(ctx, "e1", "s1", nil, now); r.Acked != 15 {
			t.Fatalf("acked after refused batch: %d", r.Acked)
		}
		// Batches in flight arrive out of order: 76..90 and 66..75 ahead of
		// 16..65; acked waits for the gap, then jumps over all of them.
		if r, err := st.Ingest(ctx, "e1", "s1", recs(76, 15, "a"), now); err != nil || r.Acked != 15 || r.Accepted != 15 {
			t.Fatalf("ahead: %+v %v", r, err)
		}
		if r, err := st.Ingest(ctx, "e1", "s1", recs(66, 10, "a"), now); err != nil || r.Acked != 15 {
			t.Fatalf("ahead 2: %+v %v", r, err)
		}
		// The same batch from 8 goroutines at once.
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := st.Ingest(ctx, "e1", "s1", recs(16, 50, "a"), now); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if _, err := st.Ingest(ctx, "e2", "s2", recs(1, 3, "b"), now); err != nil {
			t.Fatal(err)
		}
		seen := map[uint64]bool{}
		err = st.Records(ctx, "s1", func(r hub.StoredRecord) error {
			if r.Edge != "e1" || r.School != "s1" || seen[r.Seq] || r.ID != fmt.Sprintf("a%d", r.Seq) || string(r.Payload) != fmt.Sprintf(`{"n":%d}`, r.Seq) {
				return fmt.Errorf("unexpected record %+v", r)
			}
			seen[r.Seq] = true
			return nil
		})
		if err != nil || len(seen) != 90 {
			t.Fatalf("s1 holds %d records (want 90): %v", len(seen), err)
		}
		n := 0
		_ = st.Records(ctx, "s2", func(hub.StoredRecord) error { n++; return nil })
		if n != 3 {
			t.Fatalf("s2 holds %d", n)
		}
		if e, _ := st.Edge(ctx, "e1"); e.Acked != 90 {
			t.Fatalf("edge acked %d, want 90 (16..65 filled the gap before 66..90)", e.Acked)
		}
	})
}

func TestStoreChanges(t *testing.T) {
	backends(t, func(t *testing.T, st hub.Store) {
		mustEdge(t, st, "s1", "e1")
		mustEdge(t, st, "s2", "e2")
		now := time.Now()
		for i := range 5 {
			if seq, err := st.PutChange(ctx, "s1", "roster", []byte(fmt.Sprintf(`{"v":%d}`, i)), now); err != nil || seq != uint64(i+1) {
				t.Fatalf("put %d: %d %v", i, seq, err)
			}
		}
		if _, err := st.PutChange(ctx, "s2", "timetable", []byte(`{}`), now); err != nil {
			t.Fatal(err)
		}
		if _, err := st.PutChange(ctx, "nope", "roster", []byte(`{}`), now); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("unknown school: %v", err)
		}
		ch, err := st.Changes(ctx, "s1", 2, 2)
		if err != nil || len(ch) != 2 || ch[0].Seq != 3 || string(ch[1].Data) != `{"v":3}` {
			t.Fatalf("%+v %v", ch, err)
		}
		if ch, _ := st.Changes(ctx, "s2", 0, 10); len(ch) != 1 || ch[0].Kind != "timetable" {
			t.Fatalf("s2: %+v", ch)
		}
	})
}
