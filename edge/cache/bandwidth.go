package cache

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Schedule is a WAN bandwidth cap that changes with the time of day, so
// that prefetching stays out of the way of live classes during class hours
// and takes the whole link at night. A zero rate means no cap.
type Schedule struct {
	Windows []Window `json:"windows"`
	// Default applies outside every window, in bits per second (0 = no cap).
	Default int64 `json:"default_bps"`
}

// Window caps the rate between From and To (minutes after local midnight;
// To < From wraps past midnight).
type Window struct {
	From int   `json:"from_minute"`
	To   int   `json:"to_minute"`
	BPS  int64 `json:"bps"`
}

// maxScheduleLen bounds a schedule string (it comes from flags and the API).
const maxScheduleLen = 1024

// ParseSchedule reads "HH:MM-HH:MM=RATE,...,default=RATE" where RATE is a
// number of bits per second with an optional k, M or G suffix ("4M",
// "512k") or "unlimited"/"0". Example: "07:30-17:00=2M,default=unlimited".
// The empty string is no cap at all.
func ParseSchedule(s string) (Schedule, error) {
	var sc Schedule
	s = strings.TrimSpace(s)
	if s == "" {
		return sc, nil
	}
	if len(s) > maxScheduleLen {
		return Schedule{}, fmt.Errorf("bandwidth schedule longer than %d bytes", maxScheduleLen)
	}
	parts := strings.Split(s, ",")
	if len(parts) > 48 {
		return Schedule{}, fmt.Errorf("bandwidth schedule has %d entries (max 48)", len(parts))
	}
	seenDefault := false
	for _, p := range parts {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok {
			return Schedule{}, fmt.Errorf("bandwidth schedule entry %q: want HH:MM-HH:MM=RATE or default=RATE", p)
		}
		bps, err := parseRate(v)
		if err != nil {
			return Schedule{}, fmt.Errorf("bandwidth schedule entry %q: %w", p, err)
		}
		if strings.TrimSpace(k) == "default" {
			if seenDefault {
				return Schedule{}, fmt.Errorf("bandwidth schedule has two defaults")
			}
			seenDefault, sc.Default = true, bps
			continue
		}
		a, b, ok := strings.Cut(strings.TrimSpace(k), "-")
		if !ok {
			return Schedule{}, fmt.Errorf("bandwidth schedule entry %q: want HH:MM-HH:MM=RATE", p)
		}
		from, err1 := parseClock(a)
		to, err2 := parseClock(b)
		if err1 != nil || err2 != nil || from == to {
			return Schedule{}, fmt.Errorf("bandwidth schedule entry %q: times must be HH:MM (00:00-24:00) and differ", p)
		}
		sc.Windows = append(sc.Windows, Window{From: from, To: to, BPS: bps})
	}
	return sc, nil
}

func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || len(h) == 0 || len(h) > 2 || len(m) != 2 {
		return 0, fmt.Errorf("bad time %q", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("bad time %q", s)
	}
	return hh*60 + mm, nil
}

func parseRate(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "unlimited" || s == "0" {
		return 0, nil
	}
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, s = 1_000, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, s = 1_000_000, s[:len(s)-1]
	case strings.HasSuffix(s, "G"):
		mult, s = 1_000_000_000, s[:len(s)-1]
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n <= 0 || n*float64(mult) > 1e12 || n*float64(mult) < 8000 {
		return 0, fmt.Errorf("rate %q: want bits per second between 8k and 1000G, e.g. 4M, or unlimited", s)
	}
	return int64(n * float64(mult)), nil
}

// At returns the cap in bits per second at local time t (0 = none).
func (sc Schedule) At(t time.Time) int64 {
	m := t.Hour()*60 + t.Minute()
	for _, w := range sc.Windows {
		if w.From < w.To && m >= w.From && m < w.To || w.From > w.To && (m >= w.From || m < w.To) {
			return w.BPS
		}
	}
	return sc.Default
}

// String renders the schedule in ParseSchedule's syntax.
func (sc Schedule) String() string {
	var parts []string
	r := func(b int64) string {
		if b == 0 {
			return "unlimited"
		}
		return strconv.FormatInt(b, 10)
	}
	for _, w := range sc.Windows {
		parts = append(parts, fmt.Sprintf("%02d:%02d-%02d:%02d=%s", w.From/60, w.From%60, w.To/60, w.To%60, r(w.BPS)))
	}
	return strings.Join(append(parts, "default="+r(sc.Default)), ",")
}

// shaper paces every download of the cache together: the cap is for the
// school's WAN link, not per download.
type shaper struct {
	now func() time.Time
	mu  sync.Mutex
	sc  Schedule
	lim *rate.Limiter
	bps int64
}

// shaperBurst is the most one wait may ask for; reads are 32 KiB.
const shaperBurst = 64 << 10

func newShaper(sc Schedule, now func() time.Time) *shaper {
	if now == nil {
		now = time.Now
	}
	return &shaper{now: now, sc: sc, lim: rate.NewLimiter(rate.Inf, shaperBurst)}
}

func (s *shaper) set(sc Schedule) {
	s.mu.Lock()
	s.sc = sc
	s.mu.Unlock()
}

// current returns the schedule and the cap in force now.
func (s *shaper) current() (Schedule, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sc, s.sc.At(s.now())
}

// wait blocks until n more bytes fit under the cap in force now.
func (s *shaper) wait(ctx context.Context, n int) error {
	_, bps := s.current()
	s.mu.Lock()
	if bps != s.bps {
		s.bps = bps
		if bps == 0 {
			s.lim.SetLimit(rate.Inf)
		} else {
			s.lim.SetLimit(rate.Limit(float64(bps) / 8))
		}
	}
	s.mu.Unlock()
	if bps == 0 {
		return nil
	}
	for n > 0 {
		k := min(n, shaperBurst)
		if err := s.lim.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
