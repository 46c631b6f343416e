package benchtools

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Durations summarises a sample of durations.
type Durations struct {
	N                  int
	Min, P50, P95, Max time.Duration
	P99                time.Duration
	Mean               time.Duration
}

// Summarize returns the nearest-rank percentiles of d (d is not modified).
func Summarize(d []time.Duration) Durations {
	if len(d) == 0 {
		return Durations{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	var sum time.Duration
	for _, v := range s {
		sum += v
	}
	return Durations{
		N: len(s), Min: s[0], Max: s[len(s)-1],
		P50: rank(s, 0.50), P95: rank(s, 0.95), P99: rank(s, 0.99),
		Mean: sum / time.Duration(len(s)),
	}
}

// rank is the nearest-rank percentile of sorted s: the smallest value with at
// least p of the sample at or below it.
func rank(s []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (d Durations) String() string {
	return fmt.Sprintf("n=%d p50=%s p95=%s min=%s max=%s", d.N, ms(d.P50), ms(d.P95), ms(d.Min), ms(d.Max))
}

// ms formats d in milliseconds with two decimals.
func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

// MedianInt64 returns the median of v (the lower middle for even lengths).
func MedianInt64(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
