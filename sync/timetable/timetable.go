// Package timetable connects the school's weekly timetable, as sync
// delivers it, to the resource cache's prefetch: each period in the next few
// days that names micro-lessons becomes a dated prefetch entry, so the
// lessons are on the edge before the class needs them, whatever the WAN
// does at nine o'clock. It owns only the entries it made (ids "tt-…"); pins
// and entries set through the cache API are left alone.
package timetable

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/campusedge/campusedge/edge/cache"
	"github.com/campusedge/campusedge/sync/schooldata"
)

// idPrefix marks the entries this package owns in the cache's timetable.
const idPrefix = "tt-"

// Expand lists the prefetch entries for the periods of tt that start in
// [from, from+days), in loc (the school's time zone). Slots without
// resources need nothing fetched and are skipped; a slot whose day or start
// does not parse is reported and skipped (the downlink validated it, so
// this means a newer format than this edge knows).
func Expand(tt schooldata.Timetable, from time.Time, days int, loc *time.Location) ([]cache.TimetableEntry, []error) {
	var out []cache.TimetableEntry
	var errs []error
	from = from.In(loc)
	for _, s := range tt.Slots {
		if len(s.Resources) == 0 {
			continue
		}
		wd, ok := schooldata.ParseDay(strings.ToLower(s.Day))
		if !ok {
			errs = append(errs, fmt.Errorf("slot %s period %d: day %q", s.Room, s.Period, s.Day))
			continue
		}
		hm, err := time.Parse("15:04", s.Start)
		if err != nil {
			errs = append(errs, fmt.Errorf("slot %s period %d: start %q: %w", s.Room, s.Period, s.Start, err))
			continue
		}
		for d := 0; d < days; d++ {
			day := from.AddDate(0, 0, d)
			if day.Weekday() != wd {
				continue
			}
			start := time.Date(day.Year(), day.Month(), day.Day(), hm.Hour(), hm.Minute(), 0, 0, loc)
			if start.Before(from) {
				continue // today's period has begun: too late to prefetch for it
			}
			out = append(out, cache.TimetableEntry{
				ID:        entryID(start, s),
				Classroom: s.Room,
				Start:     start,
				Resources: s.Resources,
			})
		}
	}
	return out, errs
}

// entryID is stable for one period of one room on one date, within the
// cache's id alphabet ([a-z0-9._-], at most 64).
func entryID(start time.Time, s schooldata.Slot) string {
	h := sha256.Sum256([]byte(s.Room + "\x00" + s.Group))
	return fmt.Sprintf("%s%s-p%d-%s", idPrefix, start.Format("20060102"), s.Period, hex.EncodeToString(h[:6]))
}

// Cache is what the feeder needs of the resource cache.
type Cache interface {
	Timetable() ([]cache.TimetableEntry, error)
	PutTimetable([]cache.TimetableEntry) error
	DeleteTimetable(id string) (bool, error)
}

// Feeder keeps the cache's "tt-" entries equal to the expansion of the
// latest timetable document.
type Feeder struct {
	// Doc returns the latest timetable document (JSON), nil if none yet.
	Doc   func() ([]byte, error)
	Cache Cache
	Days  int // the cache's prefetch horizon
	Loc   *time.Location
	Now   func() time.Time
	Log   *slog.Logger
	// Every is how often the horizon moves on without a new document.
	Every time.Duration
	// OnSync, if set, runs after each successful sync (live sessions tied
	// to a period follow the timetable).
	OnSync func()
}

// Sync makes the cache's entries match the document once and reports what
// it changed.
func (f *Feeder) Sync() (added, removed int, err error) {
	doc, err := f.Doc()
	if err != nil {
		return 0, 0, fmt.Errorf("read timetable: %w", err)
	}
	var tt schooldata.Timetable
	if doc != nil {
		if err := json.Unmarshal(doc, &tt); err != nil {
			return 0, 0, fmt.Errorf("decode timetable: %w", err)
		}
	}
	want, errs := Expand(tt, f.Now(), f.Days, f.Loc)
	for _, e := range errs {
		f.Log.Warn("timetable slot skipped", "err", e)
	}
	have, err := f.Cache.Timetable()
	if err != nil {
		return 0, 0, fmt.Errorf("read prefetch timetable: %w", err)
	}
	wanted := make(map[string]bool, len(want))
	for _, e := range want {
		wanted[e.ID] = true
	}
	for _, e := range have {
		if strings.HasPrefix(e.ID, idPrefix) && !wanted[e.ID] {
			if _, err := f.Cache.DeleteTimetable(e.ID); err != nil {
				return added, removed, fmt.Errorf("drop prefetch entry %s: %w", e.ID, err)
			}
			removed++
		}
	}
	if len(want) > 0 {
		if err := f.Cache.PutTimetable(want); err != nil {
			return added, removed, fmt.Errorf("store prefetch entries: %w", err)
		}
	}
	return len(want), removed, nil
}

// Run syncs at start, whenever changed fires (a new document was applied)
// and every f.Every, until ctx is done.
func (f *Feeder) Run(ctx context.Context, changed <-chan struct{}) {
	t := time.NewTicker(f.Every)
	defer t.Stop()
	for {
		if n, removed, err := f.Sync(); err != nil {
			f.Log.Warn("timetable prefetch not updated; retrying at the next change or tick", "err", err)
		} else {
			f.Log.Debug("timetable prefetch updated", "entries", n, "removed", removed, "days", f.Days)
			if f.OnSync != nil {
				f.OnSync()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
	}
}

// NextStart finds the next start at or after t of the period on day in
// room, in tt; ok is false when tt has no such period. It serves live
// sessions tied to a timetable period (classroom/session.PeriodClock).
func NextStart(tt schooldata.Timetable, day string, period int, room string, t time.Time, loc *time.Location) (time.Time, bool) {
	for _, s := range tt.Slots {
		if !strings.EqualFold(s.Day, day) || s.Period != period || s.Room != room {
			continue
		}
		// Resources do not matter here: a live lesson needs no prefetch.
		s.Resources = []string{"x"}
		es, _ := Expand(schooldata.Timetable{Slots: []schooldata.Slot{s}}, t, 8, loc)
		if len(es) > 0 {
			return es[0].Start, true
		}
	}
	return time.Time{}, false
}
