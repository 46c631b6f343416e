package outbox

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/disktest"
)

// The durable-append benchmark is opt-in (about half a minute):
//
//	go test ./sync/outbox -count=1 -run TestOutboxAppendBench -v -args -outbox-bench [-outbox-bench-rounds 3] [-outbox-bench-secs 3s]
//
// Each round, for 1 writer and then for 64, measures in one directory the
// disk's own limit — a loop of one 4 KiB write and fdatasync on a file
// there — then durable appends through Outbox.Append from that many
// writers into an edge.db beside it, once with the writer as built and
// once without linger and preallocation (alternating which goes first),
// then the peer again. The disk's rate moves a lot on a shared machine, so
// each appends figure is set against the mean of the peer measured just
// before and just after, and the medians over the rounds are reported.
var (
	obBenchOn     = flag.Bool("outbox-bench", false, "run TestOutboxAppendBench (durable appends vs the raw fdatasync rate, same directory)")
	obBenchRounds = flag.Int("outbox-bench-rounds", 3, "TestOutboxAppendBench: rounds (peer, appends, peer)")
	obBenchMmap   = flag.Int("outbox-bench-mmap", 0, "TestOutboxAppendBench: also measure the writer as built on a file opened with bbolt's InitialMmapSize of this many bytes (0: not)")
	obBenchSecs   = flag.Duration("outbox-bench-secs", 3*time.Second, "TestOutboxAppendBench: length of each measurement")
)

type appendRun struct {
	perSec, commitsPerSec, perCommit float64
	p50, p99                         time.Duration
}

// appendRate appends from writers goroutines for d through ob and returns
// the rate, commits and the latency of one Append.
func appendRate(t *testing.T, ob *Outbox, writers int, d time.Duration) appendRun {
	t.Helper()
	var n atomic.Int64
	c0 := ob.Commits()
	lat := make([][]time.Duration, writers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Since(start) < d; i++ {
				t0 := time.Now()
				if _, err := ob.Append(context.Background(), "quiz.answer", fmt.Appendf(nil, `{"session":"sess-%03d","student":"s%04d","answer":"%c","ms":%d}`, w, i%1100, 'A'+rune(i%4), 2000+i%9000)); err != nil {
					t.Error(err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	commits := float64(ob.Commits() - c0)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	p50, p99 := percentiles(all)
	return appendRun{float64(n.Load()) / el, commits / el, float64(n.Load()) / commits, p50, p99}
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100]
}

func TestOutboxAppendBench(t *testing.T) {
	if !*obBenchOn {
		t.Skip("opt-in: -outbox-bench")
	}
	// The writer as it is, and without the two things issue 19 added
	// (waiting for the writers just answered, the zeros ahead of the
	// data), alternately in each round so both meet the same disk.
	modes := []struct {
		name string
		cfg  Config
		mmap int // bolt.Options.InitialMmapSize
	}{
		{"as built", Config{}, 0},
		{"no linger, no preallocation", Config{Linger: -1, Preallocate: -1}, 0},
	}
	if *obBenchMmap > 0 {
		// A map as large as the file will grow never has to be remapped
		// (a remap waits for every open transaction); it changes nothing
		// of what is written or synced.
		modes = append(modes, struct {
			name string
			cfg  Config
			mmap int
		}{fmt.Sprintf("as built, mmap %d MiB", *obBenchMmap>>20), Config{}, *obBenchMmap})
	}
	ratios := map[string][]float64{}
	for round := range *obBenchRounds {
		for _, writers := range []int{1, 64} {
			dir := t.TempDir()
			before := disktest.FdatasyncRate(t, dir, *obBenchSecs)
			runs := make([]appendRun, len(modes))
			for k := range modes {
				m := (k + round) % len(modes) // alternate which goes first
				sub := filepath.Join(dir, fmt.Sprint(m))
				if err := os.Mkdir(sub, 0o700); err != nil {
					t.Fatal(err)
				}
				db := openDBWith(t, sub, &bolt.Options{Timeout: 2 * time.Second, InitialMmapSize: modes[m].mmap})
				cfg := modes[m].cfg
				cfg.DB = db
				ob := New(cfg)
				runs[m] = appendRate(t, ob, writers, *obBenchSecs)
				_ = ob.Close()
				_ = db.Close()
			}
			after := disktest.FdatasyncRate(t, dir, *obBenchSecs)
			peer := (before + after) / 2
			for m, r := range runs {
				t.Logf("round %d, %2d writer(s), %-28s %7.0f records/s, %5.0f commits/s, %5.1f records/commit, append p50 %v p99 %v; peer %5.0f/s before, %5.0f/s after: records/s ÷ peer = %.2f",
					round, writers, modes[m].name+":", r.perSec, r.commitsPerSec, r.perCommit, r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond),
					before, after, r.perSec/peer)
				k := fmt.Sprintf("%2d writer(s), %s", writers, modes[m].name)
				ratios[k] = append(ratios[k], r.perSec/peer)
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(ratios)) {
		v := ratios[k]
		slices.Sort(v)
		t.Logf("median records/s ÷ peer, %s: %.2f (of %d rounds: %.2f)", k, v[len(v)/2], len(v), v)
	}
}
