// Package schooldata is the downlink's content: a school's roster (students
// with their homeroom and teaching groups — under "choose courses, move
// between classes" timetables a teaching group draws students from several
// homerooms, and each student's own timetable follows from their groups)
// and its timetable (day × period × room × group × subject × teacher ×
// resource ids). Classes, rooms, teachers, subjects and pupils each have a
// stable ASCII code and a display name in any script (初一(3)班, 李老师,
// 阿依古丽·吐尔逊); imports may leave codes out and get them derived from the
// names (edge/textnorm). It parses the CSV files a school office saves
// (through edge/csvin: UTF-8, UTF-8 BOM, GBK, GB18030; Chinese or English
// headers), with errors that name the row and column, and writes the same
// CSV back out.
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

	"github.com/campusedge/campusedge/edge/csvin"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/edge/textnorm"
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

// Named is a code with its display name: `{"code":"g-3kq…","name":"初一(3)班"}`.
type Named struct {
	Code string `json:"code"`
	Name string `json:"name"`
}

// Roster is a school's whole roster.
type Roster struct {
	Students []Student `json:"students"`
	// Classes names the homerooms and teaching groups whose display name
	// is not their code; a code with no entry is its own name (rosters
	// stored before names existed have none).
	Classes []Named `json:"classes,omitempty"`
}

// Slot is one timetable row.
type Slot struct {
	Day       string   `json:"day"` // mon … sun
	Period    int      `json:"period"`
	Start     string   `json:"start"` // HH:MM school local time
	End       string   `json:"end"`
	Room      string   `json:"room"`      // room code
	Group     string   `json:"group"`     // code of a homeroom or a teaching group
	Subject   string   `json:"subject"`   // the subject's display name
	Teacher   string   `json:"teacher"`   // teacher code
	Resources []string `json:"resources"` // catalogue ids to prefetch
	// Display names, omitted when the name is the code itself (and in
	// timetables stored before names existed).
	RoomName    string `json:"room_name,omitempty"`
	GroupName   string `json:"group_name,omitempty"`
	TeacherName string `json:"teacher_name,omitempty"`
	SubjectCode string `json:"subject_code,omitempty"`
}

// RoomLabel is the room as people see it: its name, else its code.
func (s Slot) RoomLabel() string { return or(s.RoomName, s.Room) }

// GroupLabel is the class as people see it.
func (s Slot) GroupLabel() string { return or(s.GroupName, s.Group) }

// TeacherLabel is the teacher as people see them.
func (s Slot) TeacherLabel() string { return or(s.TeacherName, s.Teacher) }

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// FindClass resolves a class as a person names it — its code, its display
// name, or the name typed with full-width or half-width brackets — to the
// code the roster uses; "" when no homeroom or group of the roster matches.
func (r *Roster) FindClass(s string) string {
	if s == "" {
		return ""
	}
	derived := textnorm.Code(prefixClass, s)
	for _, c := range r.Classes {
		if c.Code == s || c.Name == s || c.Code == derived {
			return c.Code
		}
	}
	for _, st := range r.Students {
		if st.Homeroom == s || st.Homeroom == derived {
			return st.Homeroom
		}
		for _, g := range st.Groups {
			if g == s || g == derived {
				return g
			}
		}
	}
	return ""
}

// ClassName is the display name of a homeroom or teaching group code.
func (r *Roster) ClassName(code string) string {
	for _, c := range r.Classes {
		if c.Code == code {
			return c.Name
		}
	}
	return code
}

// Timetable is a school's whole timetable.
type Timetable struct {
	Slots []Slot `json:"slots"`
}

// RowError is one problem in an import, by 1-based CSV line (the header is
// line 1), with a code and arguments a page translates.
type RowError = csvin.Problem

// ImportError lists every problem found (up to 50); nothing was imported.
type ImportError = csvin.Error

// Limits of one import file.
var limits = csvin.Limits{MaxBytes: MaxFileBytes, MaxRows: MaxRows}

// Columns of a roster file. Only name and homeroom are required: a
// Chinese school's file is often 姓名,班级 and nothing else, and codes are
// derived from the names (textnorm.Code) when a file has none.
var rosterColumns = []csvin.Column{
	{Name: "student_id", Aliases: []string{"学号", "学籍号", "编号", "id"}},
	{Name: "name", Aliases: []string{"姓名", "学生姓名", "学生"}, Required: true},
	{Name: "homeroom", Aliases: []string{"班级", "行政班", "班级名称"}, Required: true},
	{Name: "homeroom_code", Aliases: []string{"班级代码", "班级编号"}},
	{Name: "groups", Aliases: []string{"教学班", "走班", "选课"}},
	{Name: "group_codes", Aliases: []string{"教学班代码", "教学班编号"}},
}

// Columns of a timetable file.
var timetableColumns = []csvin.Column{
	{Name: "day", Aliases: []string{"星期", "日期", "周"}, Required: true},
	{Name: "period", Aliases: []string{"节次", "节", "第几节"}, Required: true},
	{Name: "start", Aliases: []string{"开始", "开始时间", "上课时间"}, Required: true},
	{Name: "end", Aliases: []string{"结束", "结束时间", "下课时间"}, Required: true},
	{Name: "room", Aliases: []string{"教室", "上课地点", "地点"}, Required: true},
	{Name: "room_code", Aliases: []string{"教室代码", "教室编号"}},
	{Name: "group", Aliases: []string{"班级", "教学班", "上课班级"}, Required: true},
	{Name: "group_code", Aliases: []string{"班级代码", "教学班代码"}},
	{Name: "subject", Aliases: []string{"科目", "学科", "课程"}, Required: true},
	{Name: "subject_code", Aliases: []string{"科目代码", "学科代码"}},
	{Name: "teacher", Aliases: []string{"教师", "老师", "任课教师"}, Required: true},
	{Name: "teacher_code", Aliases: []string{"教师代码", "工号", "教师编号"}},
	{Name: "resources", Aliases: []string{"资源", "微课"}},
}

// Code prefixes for codes derived from display names. Homerooms and
// teaching groups share one, so a class named in the roster and in the
// timetable gets the same code from both.
const (
	prefixClass   = "g-"
	prefixRoom    = "r-"
	prefixTeacher = "t-"
	prefixSubject = "s-"
	prefixPupil   = "p-"
)

// splitList splits a cell listing several groups, codes or resources:
// ';' as the format writes it, and '；' '、' ',' '，' as people type it.
// Items keep their exact text (names must round-trip), only trimmed.
func splitList(s string) []string {
	out := []string{}
	for _, p := range strings.FieldsFunc(s, func(r rune) bool {
		return r == ';' || r == '；' || r == '、' || r == ',' || r == '，'
	}) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// named resolves one (display name, optional code) pair of a row: the
// code is the code column's value, folded, or derived from the name.
func named(ps *csvin.Problems, row csvin.Row, nameCol, codeCol, prefix string) (code, name string, ok bool) {
	name = row.Get(nameCol)
	if !textnorm.ValidName(name) {
		ps.Add(row.Line, row.Header(nameCol), "bad_name", map[string]string{"value": name, "max": strconv.Itoa(textnorm.MaxName)},
			"%q must be 1-%d printable characters without surrounding spaces", name, textnorm.MaxName)
		return "", "", false
	}
	if c := textnorm.Fold(row.Get(codeCol)); c != "" {
		if !textnorm.ValidCode(c) {
			ps.Add(row.Line, row.Header(codeCol), "bad_code", map[string]string{"value": c},
				"%q must be 1-64 letters, digits, '.', '_' or '-' (or leave the code empty to have one made from the name)", c)
			return "", "", false
		}
		return c, name, true
	}
	return textnorm.Code(prefix, name), name, true
}

// names keeps the display names of codes met in one file: a code must
// have one name throughout.
type names struct {
	byCode map[string]string
	row    map[string]int
}

func newNames() *names { return &names{byCode: map[string]string{}, row: map[string]int{}} }

func (n *names) put(ps *csvin.Problems, line int, col, code, name string) bool {
	if prev, ok := n.byCode[code]; ok && prev != name {
		ps.Add(line, col, "code_two_names", map[string]string{"value": code, "name": name, "other": prev, "other_row": strconv.Itoa(n.row[code])},
			"code %s is %q here but %q on row %d: one code, one name", code, name, prev, n.row[code])
		return false
	}
	if _, ok := n.byCode[code]; !ok {
		n.byCode[code], n.row[code] = name, line
	}
	return true
}

// list is the names that differ from their codes, sorted by code (codes
// that are their own names need no entry, which keeps documents of ASCII
// schools exactly as they were before names existed).
func (n *names) list() []Named {
	var out []Named
	for c, nm := range n.byCode {
		if c != nm {
			out = append(out, Named{Code: c, Name: nm})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	return out
}

// ParseRosterCSV parses and validates a roster CSV; on any bad row it
// returns *ImportError listing the rows and no roster.
func ParseRosterCSV(r io.Reader) (*Roster, error) {
	ro, _, err := ReadRoster(r)
	return ro, err
}

// ReadRoster parses and validates a roster file and says which encoding
// it was read in (csvin.Decode).
func ReadRoster(r io.Reader) (*Roster, string, error) {
	t, err := csvin.Read(r, rosterColumns, limits)
	if err != nil {
		return nil, encodingOf(err), err
	}
	ps := &csvin.Problems{Encoding: t.Encoding}
	ro := &Roster{Students: []Student{}}
	classes := newNames()
	seen := map[string]int{}
	for _, row := range t.Rows {
		if s, ok := rosterRow(ps, row, classes); ok {
			if first, dup := seen[s.ID]; dup {
				ps.Add(row.Line, row.Header("student_id"), "duplicate_student", map[string]string{"value": s.ID, "name": s.Name, "other_row": strconv.Itoa(first)},
					"%s (%s) is already on row %d: give each pupil their own student_id", s.ID, s.Name, first)
				continue
			}
			seen[s.ID] = row.Line
			ro.Students = append(ro.Students, s)
		}
	}
	if err := ps.Err(); err != nil {
		return nil, t.Encoding, err
	}
	ro.Classes = classes.list()
	return ro, t.Encoding, nil
}

func rosterRow(ps *csvin.Problems, row csvin.Row, classes *names) (Student, bool) {
	n := ps.Len()
	var s Student
	var hrName string
	var ok bool
	s.Homeroom, hrName, ok = named(ps, row, "homeroom", "homeroom_code", prefixClass)
	if ok {
		classes.put(ps, row.Line, row.Header("homeroom"), s.Homeroom, hrName)
	}
	s.Name = row.Get("name")
	if !textnorm.ValidName(s.Name) {
		ps.Add(row.Line, row.Header("name"), "bad_name", map[string]string{"value": s.Name, "max": strconv.Itoa(textnorm.MaxName)},
			"%q must be 1-%d printable characters without surrounding spaces", s.Name, textnorm.MaxName)
	}
	s.ID = textnorm.Fold(row.Get("student_id"))
	switch {
	case s.ID == "" && ok:
		s.ID = textnorm.Code(prefixPupil, s.Homeroom+"/"+s.Name)
	case s.ID != "" && !textnorm.ValidCode(s.ID):
		ps.Add(row.Line, row.Header("student_id"), "bad_code", map[string]string{"value": s.ID},
			"%q must be 1-64 letters, digits, '.', '_' or '-' (or leave it empty to have one made from the name and homeroom)", s.ID)
	}
	gnames, gcodes := splitList(row.Get("groups")), splitList(row.Get("group_codes"))
	if len(gcodes) > 0 && len(gcodes) != len(gnames) {
		ps.Add(row.Line, row.Header("group_codes"), "group_codes_count", map[string]string{"want": strconv.Itoa(len(gnames)), "got": strconv.Itoa(len(gcodes))},
			"lists %d codes for %d groups: give one code per group, in the same order, or none", len(gcodes), len(gnames))
		return s, false
	}
	s.Groups = []string{}
	for i, g := range gnames {
		code := ""
		if len(gcodes) > 0 {
			code = textnorm.Fold(gcodes[i])
		}
		c, gn, gok := resolve(ps, row, "groups", g, code, prefixClass)
		switch {
		case !gok:
		case slices.Contains(s.Groups, c):
			ps.Add(row.Line, row.Header("groups"), "duplicate_group", map[string]string{"value": g}, "group %s listed twice", g)
		case classes.put(ps, row.Line, row.Header("groups"), c, gn):
			s.Groups = append(s.Groups, c)
		}
	}
	return s, ps.Len() == n
}

// resolve is named for one item of a list cell.
func resolve(ps *csvin.Problems, row csvin.Row, col, name, code, prefix string) (string, string, bool) {
	if !textnorm.ValidName(name) {
		ps.Add(row.Line, row.Header(col), "bad_name", map[string]string{"value": name, "max": strconv.Itoa(textnorm.MaxName)},
			"%q must be 1-%d printable characters (separate items with ';')", name, textnorm.MaxName)
		return "", "", false
	}
	if code == "" {
		return textnorm.Code(prefix, name), name, true
	}
	if !textnorm.ValidCode(code) {
		ps.Add(row.Line, row.Header(col+"_codes"), "bad_code", map[string]string{"value": code},
			"%q must be 1-64 letters, digits, '.', '_' or '-'", code)
		return "", "", false
	}
	return code, name, true
}

func encodingOf(err error) string {
	var e *csvin.Error
	if errors.As(err, &e) {
		return e.Encoding
	}
	return ""
}

// parseClock reads HH:MM or H:MM, with full-width digits and colon too.
func parseClock(s string) (string, int, bool) {
	s = textnorm.Fold(s)
	if len(s) == 4 && s[1] == ':' {
		s = "0" + s
	}
	if len(s) != 5 || s[2] != ':' {
		return "", 0, false
	}
	h, err1 := strconv.Atoi(s[:2])
	m, err2 := strconv.Atoi(s[3:])
	if err1 != nil || err2 != nil || h < 0 || h > 23 || m < 0 || m > 59 {
		return "", 0, false
	}
	return s, h*60 + m, true
}

// parsePeriod reads 3, ３ or 第3节.
func parsePeriod(s string) (int, bool) {
	s = strings.TrimSuffix(strings.TrimPrefix(textnorm.Fold(s), "第"), "节")
	p, err := strconv.Atoi(s)
	return p, err == nil && p >= 1 && p <= 20
}

// ParseTimetableCSV parses and validates a timetable CSV: fields, and no
// room, group or teacher booked twice in one day and period.
func ParseTimetableCSV(r io.Reader) (*Timetable, error) {
	tt, _, err := ReadTimetable(r)
	return tt, err
}

// ReadTimetable parses and validates a timetable file and says which
// encoding it was read in.
func ReadTimetable(r io.Reader) (*Timetable, string, error) {
	t, err := csvin.Read(r, timetableColumns, limits)
	if err != nil {
		return nil, encodingOf(err), err
	}
	ps := &csvin.Problems{Encoding: t.Encoding}
	tt := &Timetable{Slots: []Slot{}}
	booked := map[string]int{}
	all := map[string]*names{"room": newNames(), "group": newNames(), "teacher": newNames(), "subject": newNames()}
	for _, row := range t.Rows {
		s, ok := slotRow(ps, row, all)
		if ok && book(ps, row, s, booked) {
			tt.Slots = append(tt.Slots, s)
		}
	}
	if err := ps.Err(); err != nil {
		return nil, t.Encoding, err
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
	return tt, t.Encoding, nil
}

// book records s's room, group and teacher as busy in its period, or
// reports the one already booked there.
func book(ps *csvin.Problems, row csvin.Row, s Slot, booked map[string]int) bool {
	ok := true
	res := [][3]string{{"room", s.Room, s.RoomLabel()}, {"group", s.Group, s.GroupLabel()}, {"teacher", s.Teacher, s.TeacherLabel()}}
	for _, b := range res {
		k := s.Day + "/" + strconv.Itoa(s.Period) + "/" + b[0] + "/" + b[1]
		if first, dup := booked[k]; dup {
			ps.Add(row.Line, row.Header(b[0]), "double_booked", map[string]string{"value": b[2], "day": s.Day, "period": strconv.Itoa(s.Period), "other_row": strconv.Itoa(first)},
				"%s %s is already booked on %s period %d (row %d)", b[0], b[2], s.Day, s.Period, first)
			ok = false
		}
	}
	if ok {
		for _, b := range res {
			booked[s.Day+"/"+strconv.Itoa(s.Period)+"/"+b[0]+"/"+b[1]] = row.Line
		}
	}
	return ok
}

// slotRow validates one timetable row.
func slotRow(ps *csvin.Problems, row csvin.Row, all map[string]*names) (Slot, bool) {
	n := ps.Len()
	s := Slot{Resources: splitList(row.Get("resources"))}
	day, ok := ParseDayName(row.Get("day"))
	if !ok {
		ps.Add(row.Line, row.Header("day"), "bad_day", map[string]string{"value": row.Get("day")},
			"%q must be a day: %s, or 周一 … 周日", row.Get("day"), strings.Join(WeekDays(), ", "))
	}
	s.Day = day
	p, ok := parsePeriod(row.Get("period"))
	if !ok {
		ps.Add(row.Line, row.Header("period"), "bad_period", map[string]string{"value": row.Get("period")}, "%q must be a number 1-20", row.Get("period"))
	}
	s.Period = p
	var st, en int
	var ok1, ok2 bool
	s.Start, st, ok1 = parseClock(row.Get("start"))
	s.End, en, ok2 = parseClock(row.Get("end"))
	switch {
	case !ok1:
		ps.Add(row.Line, row.Header("start"), "bad_clock", map[string]string{"value": row.Get("start")}, "%q must be a time of day as HH:MM, e.g. 08:00", row.Get("start"))
	case !ok2:
		ps.Add(row.Line, row.Header("end"), "bad_clock", map[string]string{"value": row.Get("end")}, "%q must be a time of day as HH:MM, e.g. 08:45", row.Get("end"))
	case en <= st:
		ps.Add(row.Line, row.Header("end"), "end_before_start", map[string]string{"value": s.End, "start": s.Start}, "%s is not after start %s", s.End, s.Start)
	}
	for _, f := range []struct {
		col, prefix string
		code, name  *string
	}{
		{"room", prefixRoom, &s.Room, &s.RoomName},
		{"group", prefixClass, &s.Group, &s.GroupName},
		{"teacher", prefixTeacher, &s.Teacher, &s.TeacherName},
		{"subject", prefixSubject, &s.SubjectCode, &s.Subject},
	} {
		c, nm, ok := named(ps, row, f.col, f.col+"_code", f.prefix)
		if ok && all[f.col].put(ps, row.Line, row.Header(f.col), c, nm) {
			*f.code, *f.name = c, nm
			if f.col != "subject" && c == nm {
				*f.name = "" // a code that is its own name needs no name
			}
		}
	}
	if s.SubjectCode == s.Subject {
		s.SubjectCode = ""
	}
	for _, id := range s.Resources {
		if !media.ValidID(id) {
			ps.Add(row.Line, row.Header("resources"), "bad_resource", map[string]string{"value": id}, "%q is not a catalogue id (separate ids with ';')", id)
		}
	}
	return s, ps.Len() == n
}

// WriteRosterCSV writes the roster in the import format: display names
// and their codes, so a re-import gives the same roster.
func WriteRosterCSV(w io.Writer, r *Roster) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(columnNames(rosterColumns))
	for _, s := range r.Students {
		gn := make([]string, len(s.Groups))
		for i, g := range s.Groups {
			gn[i] = r.ClassName(g)
		}
		_ = cw.Write([]string{s.ID, s.Name, r.ClassName(s.Homeroom), s.Homeroom, strings.Join(gn, ";"), strings.Join(s.Groups, ";")})
	}
	cw.Flush()
	return cw.Error()
}

// WriteTimetableCSV writes the timetable in the import format.
func WriteTimetableCSV(w io.Writer, t *Timetable) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(columnNames(timetableColumns))
	for _, s := range t.Slots {
		_ = cw.Write([]string{s.Day, strconv.Itoa(s.Period), s.Start, s.End, s.RoomLabel(), s.Room, s.GroupLabel(), s.Group,
			s.Subject, s.SubjectCode, s.TeacherLabel(), s.Teacher, strings.Join(s.Resources, ";")})
	}
	cw.Flush()
	return cw.Error()
}

func columnNames(cols []csvin.Column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.Name
	}
	return out
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
