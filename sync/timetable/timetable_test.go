package timetable

import (
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/cache"
	"github.com/campusedge/campusedge/sync/schooldata"
)

func TestExpand(t *testing.T) {
	loc := time.FixedZone("school", 8*3600)
	// Wednesday 2026-11-25 09:30 school time.
	now := time.Date(2026, 11, 25, 9, 30, 0, 0, loc)
	tt := schooldata.Timetable{Slots: []schooldata.Slot{
		{Day: "wed", Period: 1, Start: "08:00", Room: "R1", Group: "7A", Resources: []string{"m1"}}, // begun today: next week only
		{Day: "wed", Period: 3, Start: "10:00", Room: "R1", Group: "7A", Resources: []string{"m2"}}, // today and next week
		{Day: "thu", Period: 2, Start: "09:00", Room: "R2", Group: "G-phys", Resources: []string{"m3", "m4"}},
		{Day: "fri", Period: 2, Start: "09:00", Room: "R2", Group: "G-phys"}, // nothing to fetch
	}}
	got, errs := Expand(tt, now, 8, loc)
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	var starts []string
	for _, e := range got {
		if err := e.Validate(); err != nil {
			t.Errorf("entry the cache would refuse: %v", err)
		}
		starts = append(starts, e.Start.Format("Mon 01-02 15:04")+" "+strings.Join(e.Resources, "+"))
	}
	slices.Sort(starts)
	want := []string{"Thu 11-26 09:00 m3+m4", "Wed 11-25 10:00 m2", "Wed 12-02 08:00 m1", "Wed 12-02 10:00 m2"}
	if !slices.Equal(starts, want) {
		t.Fatalf("expanded %q\nwant        %q", starts, want)
	}
	// Stable ids: the same period expands to the same entry.
	again, _ := Expand(tt, now.Add(time.Minute), 8, loc)
	if again[0].ID != got[0].ID || !strings.HasPrefix(got[0].ID, idPrefix) {
		t.Fatalf("ids not stable: %s vs %s", again[0].ID, got[0].ID)
	}
	if _, errs := Expand(schooldata.Timetable{Slots: []schooldata.Slot{{Day: "someday", Start: "08:00", Resources: []string{"m"}}}}, now, 7, loc); len(errs) != 1 {
		t.Fatalf("bad day not reported: %v", errs)
	}
}

// TestFeederKeepsOnlyItsOwnEntries runs the feeder against a real cache on
// a real bbolt file: entries follow the document, and an entry set through
// the cache API stays.
func TestFeederKeepsOnlyItsOwnEntries(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "edge.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := cache.Migrate(tx); err != nil {
			return err
		}
		return cache.MigratePolicy(tx)
	}); err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(cache.Config{DB: db, DataDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	now := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
	manual := cache.TimetableEntry{ID: "manual-1", Start: now.Add(time.Hour), Resources: []string{"mx"}}
	if err := c.PutTimetable([]cache.TimetableEntry{manual}); err != nil {
		t.Fatal(err)
	}
	var doc []byte
	f := &Feeder{Doc: func() ([]byte, error) { return doc, nil }, Cache: c, Days: 7, Loc: time.UTC,
		Now: func() time.Time { return now }, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Every: time.Hour}
	set := func(slots ...schooldata.Slot) {
		var err error
		if doc, err = json.Marshal(schooldata.Timetable{Slots: slots}); err != nil {
			t.Fatal(err)
		}
	}
	ids := func() []string {
		es, err := c.Timetable()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.ID+":"+strings.Join(e.Resources, "+"))
		}
		slices.Sort(out)
		return out
	}
	set(schooldata.Slot{Day: "wed", Period: 2, Start: "09:00", Room: "R1", Group: "7A", Resources: []string{"m1"}})
	if added, removed, err := f.Sync(); err != nil || added != 1 || removed != 0 {
		t.Fatalf("first sync: +%d -%d %v", added, removed, err)
	}
	first := ids()
	if len(first) != 2 || !slices.Contains(first, "manual-1:mx") {
		t.Fatalf("after first sync: %v", first)
	}
	// The period moves to Thursday with another lesson: the old entry goes.
	set(schooldata.Slot{Day: "thu", Period: 2, Start: "09:00", Room: "R1", Group: "7A", Resources: []string{"m2"}})
	if added, removed, err := f.Sync(); err != nil || added != 1 || removed != 1 {
		t.Fatalf("second sync: +%d -%d %v", added, removed, err)
	}
	second := ids()
	if len(second) != 2 || !slices.Contains(second, "manual-1:mx") || slices.Equal(first, second) || !strings.HasSuffix(second[1], ":m2") && !strings.HasSuffix(second[0], ":m2") {
		t.Fatalf("after second sync: %v", second)
	}
	// An empty timetable removes ours, keeps the manual one.
	set()
	if _, removed, err := f.Sync(); err != nil || removed != 1 {
		t.Fatalf("third sync: -%d %v", removed, err)
	}
	if got := ids(); !slices.Equal(got, []string{"manual-1:mx"}) {
		t.Fatalf("after emptying: %v", got)
	}
}

func TestNextStart(t *testing.T) {
	loc := time.FixedZone("school", 8*3600)
	tt := schooldata.Timetable{Slots: []schooldata.Slot{
		{Day: "wed", Period: 3, Start: "10:00", Room: "r101", Group: "7A"},
		{Day: "thu", Period: 3, Start: "10:05", Room: "r101", Group: "7A"},
	}}
	wed := time.Date(2026, 11, 25, 9, 0, 0, 0, loc)
	if got, ok := NextStart(tt, "WED", 3, "r101", wed, loc); !ok || !got.Equal(time.Date(2026, 11, 25, 10, 0, 0, 0, loc)) {
		t.Fatalf("same day: %v %v", got, ok)
	}
	// After today's period: next week's.
	if got, ok := NextStart(tt, "wed", 3, "r101", wed.Add(2*time.Hour), loc); !ok || !got.Equal(time.Date(2026, 12, 2, 10, 0, 0, 0, loc)) {
		t.Fatalf("next week: %v %v", got, ok)
	}
	if _, ok := NextStart(tt, "wed", 3, "r102", wed, loc); ok {
		t.Fatal("found a period in another room")
	}
}
