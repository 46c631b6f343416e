package outbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

func openDB(t testing.TB, dir string) *bolt.DB {
	t.Helper()
	return openDBWith(t, dir, &bolt.Options{Timeout: 2 * time.Second})
}

func openDBWith(t testing.TB, dir string, opts *bolt.Options) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "edge.db"), 0o600, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(Migrate); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestAppendTxCommitsWithCallersRecord(t *testing.T) {
	t.Parallel()
	db := openDB(t, t.TempDir())
	defer db.Close()
	ob := New(Config{DB: db})
	defer ob.Close()
	// A rolled-back caller transaction leaves neither its record nor the outbox entry.
	boom := errors.New("caller fails after appending")
	err := db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucketIfNotExists([]byte("attendance"))
		if err := b.Put([]byte("k"), []byte("v")); err != nil {
			return err
		}
		if _, err := ob.AppendTx(tx, "attendance.mark", []byte(`{"s":1}`)); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if st, _ := ob.Stats(); st.LastSeq != 0 || st.Backlog != 0 {
		t.Fatalf("rolled back append is visible: %+v", st)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucketIfNotExists([]byte("attendance"))
		if err := b.Put([]byte("k"), []byte("v")); err != nil {
			return err
		}
		_, err := ob.AppendTx(tx, "attendance.mark", []byte(`{"s":1}`))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ob.Pending(0, 10, 1<<20)
	if err != nil || len(recs) != 1 || recs[0].Seq != 1 || recs[0].Kind != "attendance.mark" || len(recs[0].ID) != 26 {
		t.Fatalf("pending = %+v, %v", recs, err)
	}
}

func TestAppendRefusesBadInput(t *testing.T) {
	t.Parallel()
	db := openDB(t, t.TempDir())
	defer db.Close()
	ob := New(Config{DB: db})
	defer ob.Close()
	ctx := context.Background()
	for _, c := range []struct{ kind, payload string }{
		{"", `{}`}, {"Bad Kind", `{}`}, {"ok", `not json`}, {"ok", ``}, {"ok", `{"a":"` + strings.Repeat("x", 70<<10) + `"}`},
	} {
		if _, err := ob.Append(ctx, c.kind, []byte(c.payload)); err == nil {
			t.Errorf("Append(%q, %.20q) accepted", c.kind, c.payload)
		}
	}
	// A failing call in a group does not take the others down.
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kind := "quiz.answer"
			if i%10 == 0 {
				kind = "BAD"
			}
			_, errs[i] = ob.Append(ctx, kind, []byte(`{"i":`+strconv.Itoa(i)+`}`))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (i%10 == 0) != (err != nil) {
			t.Errorf("append %d: err=%v", i, err)
		}
	}
	if st, _ := ob.Stats(); st.LastSeq != 45 {
		t.Fatalf("last seq %d, want 45", st.LastSeq)
	}
}

func TestGroupCommitSharesFsyncs(t *testing.T) {
	t.Parallel()
	db := openDB(t, t.TempDir())
	defer db.Close()
	ob := New(Config{DB: db})
	defer ob.Close()
	const writers, each = 64, 20
	var wg sync.WaitGroup
	seen := make(chan uint64, writers*each)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				r, err := ob.Append(context.Background(), "quiz.answer", []byte(`{"a":1}`))
				if err != nil {
					t.Error(err)
					return
				}
				seen <- r.Seq
			}
		}()
	}
	wg.Wait()
	close(seen)
	got := map[uint64]bool{}
	for s := range seen {
		if got[s] {
			t.Fatalf("seq %d handed out twice", s)
		}
		got[s] = true
	}
	for s := uint64(1); s <= writers*each; s++ {
		if !got[s] {
			t.Fatalf("seq %d missing: sequence has a gap", s)
		}
	}
	if c := ob.Commits(); c >= writers*each/2 {
		t.Fatalf("%d commits for %d appends: writes were not grouped", c, writers*each)
	}
}

func TestPendingAckStats(t *testing.T) {
	t.Parallel()
	db := openDB(t, t.TempDir())
	defer db.Close()
	at := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	ob := New(Config{DB: db, Clock: func() time.Time { return at }})
	defer ob.Close()
	for i := range 10 {
		if _, err := ob.Append(context.Background(), "k", []byte(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", 100)))); err != nil {
			t.Fatal(err)
		}
	}
	if r, _ := ob.Pending(0, 3, 1<<20); len(r) != 3 || r[2].Seq != 3 {
		t.Fatalf("record bound: %d", len(r))
	}
	if r, _ := ob.Pending(0, 100, 300); len(r) != 1 {
		t.Fatalf("byte bound: got %d records", len(r))
	}
	if r, _ := ob.Pending(7, 100, 1<<20); len(r) != 3 || r[0].Seq != 8 {
		t.Fatalf("after 7: %+v", r)
	}
	if _, err := ob.Ack(11); err == nil {
		t.Fatal("ack beyond last seq accepted")
	}
	if n, err := ob.Ack(4); err != nil || n != 4 {
		t.Fatalf("ack 4: %d, %v", n, err)
	}
	if n, err := ob.Ack(2); err != nil || n != 0 {
		t.Fatalf("old ack: %d %v", n, err)
	}
	st, _ := ob.Stats()
	if st.Backlog != 6 || st.AckedSeq != 4 || !st.Oldest.Equal(at) {
		t.Fatalf("stats %+v", st)
	}
	if r, _ := ob.Pending(0, 100, 1<<20); len(r) != 6 || r[0].Seq != 5 {
		t.Fatalf("after ack pending starts at %d", r[0].Seq)
	}
}

// crashChild is the subprocess of TestCrashDurability: it appends from 16
// goroutines and prints "seq id" for every append that has returned.
func crashChild(dir string) {
	db, err := bolt.Open(filepath.Join(dir, "edge.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	if err := db.Update(Migrate); err != nil {
		os.Exit(3)
	}
	ob := New(Config{DB: db})
	var mu sync.Mutex
	for g := range 16 {
		go func() {
			for i := 0; ; i++ {
				r, err := ob.Append(context.Background(), "attendance.mark", []byte(fmt.Sprintf(`{"g":%d,"i":%d}`, g, i)))
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(4)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "%d %s\n", r.Seq, r.ID)
				mu.Unlock()
			}
		}()
	}
	select {}
}

func TestMain(m *testing.M) {
	if dir := os.Getenv("OUTBOX_CRASH_CHILD"); dir != "" {
		crashChild(dir)
	}
	os.Exit(m.Run())
}

// TestCrashDurability kills an appending subprocess with SIGKILL at random
// moments; after each kill every append that had returned must be in the
// store with its seq and id, and the sequence must have no gap.
func TestCrashDurability(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	confirmed := map[uint64]string{}
	for round := range 6 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "OUTBOX_CRASH_CHILD="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Kill after a random number of confirmed appends (at least some), at a
		// random moment in between.
		target := 50 + rand.IntN(400)
		n := 0
		deadline := time.After(20 * time.Second)
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("round %d: child exited early", round)
				}
				n++
				parseConfirmed(t, l, confirmed)
				if n >= target {
					time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
					break read
				}
			case <-deadline:
				t.Fatalf("round %d: child made only %d appends in 20 s", round, n)
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for l := range lines { // lines written before the kill are still in the pipe
			parseConfirmed(t, l, confirmed)
		}
		_ = cmd.Wait()

		db := openDB(t, dir)
		ob := New(Config{DB: db})
		st, err := ob.Stats()
		if err != nil {
			t.Fatal(err)
		}
		recs, err := ob.Pending(0, 1<<30, 1<<40)
		if err != nil {
			t.Fatal(err)
		}
		have := map[uint64]string{}
		for i, r := range recs {
			if r.Seq != uint64(i+1) {
				t.Fatalf("round %d: record %d has seq %d: gap in the sequence", round, i, r.Seq)
			}
			have[r.Seq] = r.ID
		}
		if uint64(len(recs)) != st.LastSeq {
			t.Fatalf("round %d: %d records but last seq %d", round, len(recs), st.LastSeq)
		}
		for seq, id := range confirmed {
			if have[seq] != id {
				t.Fatalf("round %d: returned append seq %d id %s lost after SIGKILL (store has %q)", round, seq, id, have[seq])
			}
		}
		t.Logf("round %d: killed after %d confirmed appends this round; store holds %d, all %d confirmed present", round, n, len(recs), len(confirmed))
		_ = ob.Close()
		_ = db.Close()
	}
}

func parseConfirmed(t *testing.T, l string, m map[uint64]string) {
	f := strings.Fields(l)
	if len(f) != 2 || len(f[1]) != 26 {
		return // a line cut by the kill: that append's return was not seen whole
	}
	seq, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return
	}
	if old, ok := m[seq]; ok && old != f[1] {
		t.Fatalf("seq %d returned twice with different ids (%s, %s)", seq, old, f[1])
	}
	m[seq] = f[1]
}

// The writer keeps the blocks past bbolt's high-water mark written, so a
// commit never lands in a hole of the sparse file (whose fdatasync would
// also wait for the file system's journal), and the records are intact.
func TestPreallocatedAheadOfTheData(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := openDB(t, dir)
	defer db.Close()
	const ahead = 1 << 20
	ob := New(Config{DB: db, Preallocate: ahead})
	defer ob.Close()
	pad := strings.Repeat("学", 300)
	for i := range 3000 { // about 3 MB: the zeros are topped up several times
		if _, err := ob.Append(context.Background(), "quiz.answer", []byte(`{"i":`+strconv.Itoa(i)+`,"pad":"`+pad+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	var mark int64
	if err := db.View(func(tx *bolt.Tx) error { mark = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	if err != nil {
		t.Skipf("SEEK_HOLE unsupported here: %v", err)
	}
	if hole < mark+ahead/2 {
		t.Fatalf("first hole at %d, high-water mark %d: less than %d written ahead", hole, mark, ahead/2)
	}
	recs, err := ob.Pending(0, 5000, 1<<30)
	if err != nil || len(recs) != 3000 || !strings.Contains(string(recs[2999].Payload), `"i":2999`) {
		t.Fatalf("pending after preallocation: %d records, %v", len(recs), err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Fatalf("bbolt check: %v", err)
	}
}
