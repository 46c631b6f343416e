// Package attendance answers "who should be in this room now": the roster of
// the group a classroom holds in a period — a homeroom, or a teaching group
// drawn from several homerooms — from the school data the downlink applied
// (sync/schooldata), or, for a school not yet syncing, from a roster CSV an
// admin imports on the edge. It also validates the assistant teacher's marks
// (present, late, absent). The marks and a classroom's joins and leaves are
// stored as learning records (classroom/learning).
package attendance

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/sync/schooldata"
)

// Bucket holds the locally imported roster (key "roster", the JSON of
// schooldata.Roster) for schools without sync.
var Bucket = []byte("attendance_local")

var keyRoster = []byte("roster")

// Migrate creates the bucket (an edge store migration).
func Migrate(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists(Bucket); err != nil {
		return fmt.Errorf("create bucket %s: %w", Bucket, err)
	}
	return nil
}

// Mark statuses.
const (
	Present = "present"
	Late    = "late"
	Absent  = "absent"
)

// ValidStatus reports whether s is a mark status.
func ValidStatus(s string) bool { return s == Present || s == Late || s == Absent }

// Errors callers map to API codes.
var (
	// ErrNoRoster: no roster has arrived by sync nor been imported.
	ErrNoRoster = errors.New("no roster on this edge")
	// ErrNoGroup: neither the timetable nor the room says which group is here.
	ErrNoGroup = errors.New("no group for this classroom now")
)

// Docs reads downlink documents (uplink.Doc).
type Docs func(kind string) ([]byte, error)

// Source resolves rosters.
type Source struct {
	DB *bolt.DB
	// Docs returns the downlink's latest document of a kind, or nil.
	Docs Docs
	// Room names the classroom's room code (as in the timetable's room
	// column); "" if unknown.
	Room func(classroomID string) string
	// Homeroom names the class whose home the classroom is (its code or
	// display name, fleet.Classroom.Homeroom); "" if none. nil: rooms are
	// matched to homerooms by their room code only, as before.
	Homeroom func(classroomID string) string
	// Location is the school's time zone for timetable periods.
	Location *time.Location
}

// Roster returns the school roster and where it came from: "sync" (the
// downlink) when one has arrived, else "import" (the local CSV).
func (s *Source) Roster() (*schooldata.Roster, string, error) {
	if s.Docs != nil {
		b, err := s.Docs(schooldata.KindRoster)
		if err != nil {
			return nil, "", fmt.Errorf("read synced roster: %w", err)
		}
		if b != nil {
			var r schooldata.Roster
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, "", fmt.Errorf("synced roster: %w", err)
			}
			return &r, "sync", nil
		}
	}
	var raw []byte
	if err := s.DB.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(Bucket); b != nil {
			raw = slices.Clone(b.Get(keyRoster))
		}
		return nil
	}); err != nil {
		return nil, "", err
	}
	if raw == nil {
		return nil, "", fmt.Errorf("%w: import one with PUT /api/v1/attendance/roster (CSV: student_id,name,homeroom,groups) or enrol the edge with the city", ErrNoRoster)
	}
	var r schooldata.Roster
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, "", fmt.Errorf("imported roster: %w", err)
	}
	return &r, "import", nil
}

// Import replaces the local roster with a CSV (the city's roster format).
// A file with any bad row is refused whole with *schooldata.ImportError
// (the rows and what is wrong); nothing is imported.
func (s *Source) Import(r io.Reader) (int, error) {
	n, _, err := s.ImportCSV(r)
	return n, err
}

// ImportCSV is Import that also says which encoding the file was read in
// (UTF-8, UTF-8 BOM, GBK or GB18030), so the person importing sees it.
func (s *Source) ImportCSV(r io.Reader) (int, string, error) {
	ro, enc, err := schooldata.ReadRoster(io.LimitReader(r, schooldata.MaxFileBytes+1))
	if err != nil {
		return 0, enc, err
	}
	b, err := json.Marshal(ro)
	if err != nil {
		return 0, enc, err
	}
	err = s.DB.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(Bucket)
		if bk == nil {
			return fmt.Errorf("bucket %s missing: the store was not migrated", Bucket)
		}
		return bk.Put(keyRoster, b)
	})
	return len(ro.Students), enc, err
}

// Student is one expected student, as a classroom page lists them.
type Student struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Homeroom     string `json:"homeroom"`
	HomeroomName string `json:"homeroom_name"`
}

// Class is the roster of one classroom at one time.
type Class struct {
	Group     string    `json:"group"`
	GroupName string    `json:"group_name"` // the class as people call it
	Subject   string    `json:"subject,omitempty"`
	Source    string    `json:"source"`   // sync or import
	FoundBy   string    `json:"found_by"` // timetable, homeroom, or request
	Students  []Student `json:"students"`
}

// Class returns who is expected in classroomID at time at. group, when not
// empty, names the group directly; otherwise the timetable slot of the
// classroom's room at that time decides, and failing that a homeroom named
// like the classroom's room code or id.
func (s *Source) Class(classroomID, group string, at time.Time) (Class, error) {
	ro, src, err := s.Roster()
	if err != nil {
		return Class{}, err
	}
	if group != "" {
		if code := ro.FindClass(group); code != "" {
			group = code // a class asked for by its name
		}
	}
	c := Class{Group: group, Source: src, FoundBy: "request", Students: []Student{}}
	room := ""
	if s.Room != nil {
		room = s.Room(classroomID)
	}
	if c.Group == "" {
		if slot, ok := s.slot(room, classroomID, at); ok {
			c.Group, c.Subject, c.FoundBy = slot.Group, slot.Subject, "timetable"
		}
	}
	if c.Group == "" && s.Homeroom != nil {
		// The classroom names its homeroom: the class need not be called
		// like the room (初一(3)班 in room 301).
		if code := ro.FindClass(s.Homeroom(classroomID)); code != "" {
			c.Group, c.FoundBy = code, "homeroom"
		}
	}
	if c.Group == "" {
		hr := ro.Homerooms()
		for _, cand := range []string{room, classroomID} {
			if cand != "" && len(hr[cand]) > 0 {
				c.Group, c.FoundBy = cand, "homeroom"
				break
			}
		}
	}
	if c.Group == "" {
		return Class{}, fmt.Errorf("%w: the timetable has no slot for room %q now and no homeroom is called that; choose the group (a homeroom or teaching group)", ErrNoGroup, room)
	}
	for _, st := range ro.Students {
		if st.Homeroom == c.Group || slices.Contains(st.Groups, c.Group) {
			c.Students = append(c.Students, Student{ID: st.ID, Name: st.Name, Homeroom: st.Homeroom, HomeroomName: ro.ClassName(st.Homeroom)})
		}
	}
	c.GroupName = ro.ClassName(c.Group)
	if len(c.Students) == 0 {
		return Class{}, fmt.Errorf("%w: no student of the roster (%s) is in group %q", ErrNoGroup, src, c.Group)
	}
	return c, nil
}

// slot finds the timetable slot of room (or the classroom id) covering at.
func (s *Source) slot(room, classroomID string, at time.Time) (schooldata.Slot, bool) {
	if s.Docs == nil {
		return schooldata.Slot{}, false
	}
	b, err := s.Docs(schooldata.KindTimetable)
	if err != nil || b == nil {
		return schooldata.Slot{}, false
	}
	var tt schooldata.Timetable
	if json.Unmarshal(b, &tt) != nil {
		return schooldata.Slot{}, false
	}
	loc := s.Location
	if loc == nil {
		loc = time.Local
	}
	at = at.In(loc)
	day := schooldata.DayName(at.Weekday())
	hm := at.Format("15:04")
	for _, sl := range tt.Slots {
		if sl.Day != day || (sl.Room != room && sl.Room != classroomID) || sl.Room == "" {
			continue
		}
		// "HH:MM" strings compare in time order.
		if strings.Compare(sl.Start, hm) <= 0 && strings.Compare(hm, sl.End) < 0 {
			return sl, true
		}
	}
	return schooldata.Slot{}, false
}
