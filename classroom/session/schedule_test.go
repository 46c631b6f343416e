package session

import (
	"errors"
	"testing"
	"time"
)

func TestScheduledStartAndPeriods(t *testing.T) {
	m := NewManager(nil)
	now := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }
	p := Period{Day: "Wed", Period: 3, Room: "r101"}

	if _, _, err := m.Create(CreateRequest{Title: "Optics", Period: &p}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("period without a timetable: %v, want ErrInvalid", err)
	}
	start := now.Add(3 * time.Hour)
	m.SetPeriodClock(func(q Period, after time.Time) (time.Time, bool) {
		if q.Day != "wed" || q.Period != 3 || q.Room != "r101" || !after.Equal(now) {
			return time.Time{}, false
		}
		return start, true
	})
	for name, req := range map[string]CreateRequest{
		"unknown period": {Title: "x", Period: &Period{Day: "wed", Period: 4, Room: "r101"}},
		"bad day":        {Title: "x", Period: &Period{Day: "someday", Period: 3, Room: "r101"}},
		"both":           {Title: "x", Period: &p, ScheduledStart: &start},
	} {
		if _, _, err := m.Create(req); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	byPeriod, _, err := m.Create(CreateRequest{Title: "Optics", Period: &p})
	if err != nil || byPeriod.ScheduledStart == nil || !byPeriod.ScheduledStart.Equal(start) || byPeriod.Period.Day != "wed" {
		t.Fatalf("by period: %+v, %v", byPeriod, err)
	}
	at := now.Add(time.Hour)
	byTime, _, err := m.Create(CreateRequest{Title: "Fractions", ScheduledStart: &at})
	if err != nil {
		t.Fatal(err)
	}
	unscheduled, _, _ := m.Create(CreateRequest{Title: "Ad hoc"})

	if got := m.StartDue(now.Add(59 * time.Minute)); len(got) != 0 {
		t.Fatalf("started early: %+v", got)
	}
	if got := m.StartDue(at); len(got) != 1 || got[0].ID != byTime.ID || got[0].State != StateLive {
		t.Fatalf("at its time: %+v", got)
	}
	// The timetable moves the period: the session follows.
	start = now.Add(5 * time.Hour)
	m.Reschedule()
	if got := m.StartDue(now.Add(4 * time.Hour)); len(got) != 0 {
		t.Fatalf("started at the old period time: %+v", got)
	}
	if got := m.StartDue(start); len(got) != 1 || got[0].ID != byPeriod.ID {
		t.Fatalf("at the moved period: %+v", got)
	}
	if s, _ := m.Get(unscheduled.ID); s.State != StateCreated {
		t.Fatalf("a session without a schedule started: %+v", s)
	}
	// An ended session never starts on schedule.
	later := now.Add(6 * time.Hour)
	s3, _, _ := m.Create(CreateRequest{Title: "Cancelled", ScheduledStart: &later})
	if _, err := m.End(s3.ID); err != nil {
		t.Fatal(err)
	}
	if got := m.StartDue(later); len(got) != 0 {
		t.Fatalf("an ended session started: %+v", got)
	}
}
