// Package schooldata is the downlink's content: a school's roster (students
// with their homeroom and teaching groups — under "choose courses, move
// between classes" timetables a teaching group draws students from several
// homerooms, and each student's own timetable follows from their groups)
// and its timetable (day × period × room × group × subject × teacher ×
// resource ids). It parses the CSV files the city imports, with errors that
// name the row, and writes the same CSV back out.
package schooldata

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/campusedge/campusedge/edge/media"
)

// Limits on imports: a large school has ~1,100 students and a few thousand
// timetable slots; these leave room for a province-size mistake to be
// refused rather than stored.
const (
	MaxRows      = 50_000
	MaxFileBytes = 16 << 20
	maxErrors    = 50
)

// Kinds of downlink document.
const (
	KindRoster    = "roster"
	KindTimetable = "timetable"
)

// Student is one roster row.
type Student struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Homeroom string   `json:"homeroom"`
	Groups   []string `json:"groups"` // teaching groups (course sections)
}

// Roster is a school's whole roster.
type Roster struct {
	Students []Student `json:"students"`
}

// Slot is one timetable row.
type Slot struct {
	Day       string   `json:"day"` // mon … sun
	Period    int      `json:"period"`
	Start     string   `json:"start"` // HH:MM school local time
	End       string   `json:"end"`
	Room      string   `json:"room"`
	Group     string   `json:"group"` // a homeroom or a teaching group
	Subject   string   `json:"subject"`
	Teacher   string   `json:"teacher"`
	Resources []string `json:"resources"` // catalogue ids to prefetch
}

// Timetable is a school's whole timetable.
type Timetable struct {
	Slots []Slot `json:"slots"`
}

// RowError is one problem in an import, by 1-based CSV line (the header is
// line 1).
type RowError struct {
	Row    int    `json:"row"`
	Column string `json:"column,omitempty"`
	Msg    string `json:"message"`
}

func (e RowError) Error() string {
	if e.Column != "" {
		return fmt.Sprintf("row %d, column %s: %s", e.Row, e.Column, e.Msg)
	}
	return fmt.Sprintf("row %d: %s", e.Row, e.Msg)
}

// ImportError lists every problem found (up to 50); nothing was imported.
type ImportError struct{ Rows []RowError }

func (e *ImportError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d problem(s), nothing imported:", len(e.Rows))
	for _, r := range e.Rows {
		b.WriteString("\n  " + r.Error())
	}
	return b.String()
}

var (
	rosterHeader    = []string{"student_id", "name", "homeroom", "groups"}
	timetableHeader = []string{"day", "period", "start", "end", "room", "group", "subject", "teacher", "resources"}
)

// validCode: ids of students, groups, rooms, teachers: 1-64 of letters,
// digits, '.', '_', '-'.
func validCode(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c < utf8.RuneSelf && (unicode.IsLetter(c) || unicode.IsDigit(c) || c == '.' || c == '_' || c == '-')) {
			return false
		}
	}
	return true
}

// validText: names and subjects: 1-200 bytes of printable UTF-8.
func validText(s string) bool {
	if s == "" || len(s) > 200 || !utf8.ValidString(s) || strings.TrimSpace(s) != s {
		return false
	}
	for _, c := range s {
		if !unicode.IsPrint(c) {
			return false
		}
	}
	return true
}

func splitList(s string) []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(s, ";")
}

type collector struct{ rows []RowError }

func (c *collector) add(row int, col, format string, a ...any) {
	if len(c.rows) < maxErrors {
		c.rows = append(c.rows, RowError{Row: row, Column: col, Msg: fmt.Sprintf(format, a...)})
	}
}

func (c *collector) err() error {
	if len(c.rows) == 0 {
		return nil
	}
	return &ImportError{Rows: c.rows}
}

// readCSV reads a whole CSV with the exact header; rows come with their line.
func readCSV(r io.Reader, header []string, c *collector) ([][]string, []int) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileBytes+1))
	if err != nil {
		c.add(0, "", "cannot read the file: %v", err)
		return nil, nil
	}
	if len(data) > MaxFileBytes {
		c.add(0, "", "file is larger than %d bytes", MaxFileBytes)
		return nil, nil
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // spreadsheet BOM
	cr := csv.NewReader(bytes.NewReader(data))
	cr.FieldsPerRecord = len(header)
	cr.ReuseRecord = false
	var rows [][]string
	var lines []int
	first := true
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				c.add(pe.Line, "", "%v", pe.Err)
				if errors.Is(pe.Err, csv.ErrFieldCount) {
					continue
				}
			} else {
				c.add(0, "", "%v", err)
			}
			return rows, lines
		}
		line, _ := cr.FieldPos(0)
		if first {
			first = false
			if !slices.Equal(rec, header) {
				c.add(line, "", "header must be exactly %q", strings.Join(header, ","))
				return nil, nil
			}
			continue
		}
		if len(rows) >= MaxRows {
			c.add(line, "", "more than %d rows", MaxRows)
			return rows, lines
		}
		for i := range rec {
			rec[i] = strings.TrimSpace(rec[i])
		}
		rows = append(rows, rec)
		lines = append(lines, line)
	}
	if first {
		c.add(1, "", "empty file: the header %q is missing", strings.Join(header, ","))
	}
	return rows, lines
}

// ParseRosterCSV parses and validates a roster CSV; on any bad row it
// returns *ImportError listing the rows and no roster.
func ParseRosterCSV(r io.Reader) (*Roster, error) {
	var c collector
	rows, lines := readCSV(r, rosterHeader, &c)
	ro := &Roster{Students: []Student{}}
	seen := map[string]int{}
	for i, rec := range rows {
		line := lines[i]
		s := Student{ID: rec[0], Name: rec[1], Homeroom: rec[2], Groups: splitList(rec[3])}
		ok := true
		if !validCode(s.ID) {
			c.add(line, "student_id", "%q must be 1-64 letters, digits, '.', '_' or '-'", s.ID)
			ok = false
		} else if first, dup := seen[s.ID]; dup {
			c.add(line, "student_id", "%s already on row %d", s.ID, first)
			ok = false
		}
		if !validText(s.Name) {
			c.add(line, "name", "must be 1-200 printable characters without surrounding spaces")
			ok = false
		}
		if !validCode(s.Homeroom) {
			c.add(line, "homeroom", "%q must be 1-64 letters, digits, '.', '_' or '-'", s.Homeroom)
			ok = false
		}
		gs := map[string]bool{}
		for _, g := range s.Groups {
			if !validCode(g) {
				c.add(line, "groups", "group %q must be 1-64 letters, digits, '.', '_' or '-' (separate groups with ';')", g)
				ok = false
			} else if gs[g] {
				c.add(line, "groups", "group %s listed twice", g)
				ok = false
			}
			gs[g] = true
		}
		if ok {
			seen[s.ID] = line
			ro.Students = append(ro.Students, s)
		}
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	return ro, nil
}

func validClock(s string) (int, bool) {
	if len(s) != 5 || s[2] != ':' {
		return 0, false
	}
	h, err1 := strconv.Atoi(s[:2])
	m, err2 := strconv.Atoi(s[3:])
	if err1 != nil || err2 != nil || h < 0 || h > 23 || m < 0 || m > 59 {
		return 0, false
	}
	return h*60 + m, true
}

// ParseTimetableCSV parses and validates a timetable CSV: fields, and no
// room, group or teacher booked twice in one day and period.
func ParseTimetableCSV(r io.Reader) (*Timetable, error) {
	var c collector
	rows, lines := readCSV(r, timetableHeader, &c)
	tt := &Timetable{Slots: []Slot{}}
	booked := map[string]int{}
	for i, rec := range rows {
		line := lines[i]
		s := Slot{Day: strings.ToLower(rec[0]), Start: rec[2], End: rec[3], Room: rec[4], Group: rec[5], Subject: rec[6], Teacher: rec[7], Resources: splitList(rec[8])}
		ok := true
		if _, known := ParseDay(s.Day); !known {
			c.add(line, "day", "%q must be one of %s", rec[0], strings.Join(WeekDays(), ", "))
			ok = false
		}
		p, err := strconv.Atoi(rec[1])
		if err != nil || p < 1 || p > 20 {
			c.add(line, "period", "%q must be a number 1-20", rec[1])
			ok = false
		}
		s.Period = p
		st, ok1 := validClock(s.Start)
		en, ok2 := validClock(s.End)
		switch {
		case !ok1:
			c.add(line, "start", "%q must be HH:MM", s.Start)
			ok = false
		case !ok2:
			c.add(line, "end", "%q must be HH:MM", s.End)
			ok = false
		case en <= st:
			c.add(line, "end", "%s is not after start %s", s.End, s.Start)
			ok = false
		}
		for _, cv := range [][2]string{{"room", s.Room}, {"group", s.Group}, {"teacher", s.Teacher}} {
			if !validCode(cv[1]) {
				c.add(line, cv[0], "%q must be 1-64 letters, digits, '.', '_' or '-'", cv[1])
				ok = false
			}
		}
		if !validText(s.Subject) {
			c.add(line, "subject", "must be 1-200 printable characters")
			ok = false
		}
		for _, id := range s.Resources {
			if !media.ValidID(id) {
				c.add(line, "resources", "%q is not a catalogue id (separate ids with ';')", id)
				ok = false
			}
		}
		if !ok {
			continue
		}
		for _, b := range [][2]string{{"room", s.Room}, {"group", s.Group}, {"teacher", s.Teacher}} {
			k := s.Day + "/" + strconv.Itoa(s.Period) + "/" + b[0] + "/" + b[1]
			if first, dup := booked[k]; dup {
				c.add(line, b[0], "%s %s is already booked on %s period %d (row %d)", b[0], b[1], s.Day, s.Period, first)
				ok = false
			}
		}
		if ok {
			for _, b := range [][2]string{{"room", s.Room}, {"group", s.Group}, {"teacher", s.Teacher}} {
				booked[s.Day+"/"+strconv.Itoa(s.Period)+"/"+b[0]+"/"+b[1]] = line
			}
			tt.Slots = append(tt.Slots, s)
		}
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	sort.SliceStable(tt.Slots, func(i, j int) bool {
		a, b := tt.Slots[i], tt.Slots[j]
		if da, db := dayRank(a.Day), dayRank(b.Day); da != db {
			return da < db
		}
		if a.Period != b.Period {
			return a.Period < b.Period
		}
		return a.Room < b.Room
	})
	return tt, nil
}

// WriteRosterCSV writes the roster in the import format.
func WriteRosterCSV(w io.Writer, r *Roster) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(rosterHeader)
	for _, s := range r.Students {
		_ = cw.Write([]string{s.ID, s.Name, s.Homeroom, strings.Join(s.Groups, ";")})
	}
	cw.Flush()
	return cw.Error()
}

// WriteTimetableCSV writes the timetable in the import format.
func WriteTimetableCSV(w io.Writer, t *Timetable) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(timetableHeader)
	for _, s := range t.Slots {
		_ = cw.Write([]string{s.Day, strconv.Itoa(s.Period), s.Start, s.End, s.Room, s.Group, s.Subject, s.Teacher, strings.Join(s.Resources, ";")})
	}
	cw.Flush()
	return cw.Error()
}

// Validate checks a document that arrived by downlink before it is
// applied: it must decode strictly and pass the same rules as an import
// (re-checked through the CSV form, so the two can never disagree).
func Validate(kind string, data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var buf bytes.Buffer
	switch kind {
	case KindRoster:
		var r Roster
		if err := dec.Decode(&r); err != nil {
			return fmt.Errorf("roster: %w", err)
		}
		if err := WriteRosterCSV(&buf, &r); err != nil {
			return err
		}
		_, err := ParseRosterCSV(&buf)
		return err
	case KindTimetable:
		var t Timetable
		if err := dec.Decode(&t); err != nil {
			return fmt.Errorf("timetable: %w", err)
		}
		if err := WriteTimetableCSV(&buf, &t); err != nil {
			return err
		}
		_, err := ParseTimetableCSV(&buf)
		return err
	case KindStaff:
		_, err := ValidateStaff(data)
		return err
	}
	return fmt.Errorf("unknown document kind %q", kind)
}

// Homerooms and Groups index a roster: group id -> student ids.
func (r *Roster) Homerooms() map[string][]string {
	m := map[string][]string{}
	for _, s := range r.Students {
		m[s.Homeroom] = append(m[s.Homeroom], s.ID)
	}
	return m
}

// Groups maps each teaching group to its students.
func (r *Roster) Groups() map[string][]string {
	m := map[string][]string{}
	for _, s := range r.Students {
		for _, g := range s.Groups {
			m[g] = append(m[g], s.ID)
		}
	}
	return m
}
