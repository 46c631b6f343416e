package schooldata

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/campusedge/campusedge/edge/csvin"
	"github.com/campusedge/campusedge/edge/staff"
	"github.com/campusedge/campusedge/edge/textnorm"
)

// The city's staff list for one school, read like the roster and the
// timetable (edge/csvin: UTF-8, UTF-8 BOM, GBK, GB18030; English or
// Chinese column names).

// KindStaff is the downlink document of a school's staff.
const KindStaff = "staff"

// MaxStaffRows bounds a staff import (a school has ~100 teachers).
const MaxStaffRows = 5_000

// StaffHeader is the staff CSV's header: roles and rooms are lists
// separated by ";" (roles: admin, teacher, assistant; rooms: the room
// codes an assistant works in, empty for any); secret is an initial
// password (8+ characters) or 6-digit PIN, hashed with argon2id at import
// and never stored in clear (empty: the person signs in once an admin sets
// one on the edge).
var StaffHeader = []string{"staff_id", "name", "roles", "rooms", "secret"}

// StaffRow is one row as imported, with its secret in clear: it lives
// only between parsing and hashing.
type StaffRow struct {
	ID     string
	Name   string
	Roles  []string
	Rooms  []string
	Secret string
}

// StaffMember is one member of staff in the downlink document.
type StaffMember struct {
	ID    string   `json:"id"`
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
	Rooms []string `json:"rooms"`
	// Hash is the argon2id hash of the initial secret ("" for none).
	Hash string `json:"hash,omitempty"`
}

// StaffList is a school's whole staff list (the downlink document).
type StaffList struct {
	Staff []StaffMember `json:"staff"`
}

var staffRoles = []string{"admin", "teacher", "assistant"}

// staffColumns are the staff file's columns: staff_id, name and roles are
// required.
var staffColumns = []csvin.Column{
	{Name: "staff_id", Aliases: []string{"工号", "登录名", "账号"}, Required: true},
	{Name: "name", Aliases: []string{"姓名"}, Required: true},
	{Name: "roles", Aliases: []string{"角色"}, Required: true},
	{Name: "rooms", Aliases: []string{"教室", "教室代码"}},
	{Name: "secret", Aliases: []string{"初始密码", "密码"}},
}

// ParseStaffCSV parses and validates a staff CSV; on any bad row it
// returns *ImportError listing the rows and nothing else.
func ParseStaffCSV(r io.Reader) ([]StaffRow, error) {
	rows, _, err := ReadStaff(r)
	return rows, err
}

// ReadStaff is ParseStaffCSV that also says which encoding the file was
// read in.
func ReadStaff(r io.Reader) ([]StaffRow, string, error) {
	t, err := csvin.Read(r, staffColumns, csvin.Limits{MaxBytes: MaxFileBytes, MaxRows: MaxStaffRows})
	if err != nil {
		return nil, encodingOf(err), err
	}
	c := &csvin.Problems{Encoding: t.Encoding}
	seen := map[string]int{}
	out := make([]StaffRow, 0, len(t.Rows))
	for _, rec := range t.Rows {
		line := rec.Line
		// A sign-in name typed with a Chinese input method folds to ASCII.
		row := StaffRow{ID: strings.ToLower(textnorm.Fold(rec.Get("staff_id"))), Name: rec.Get("name"), Roles: splitRoles(rec.Get("roles")),
			Rooms: splitRoles(rec.Get("rooms")), Secret: rec.Get("secret")}
		if !staff.ValidID(row.ID) {
			c.Add(line, rec.Header("staff_id"), "bad_staff_id", map[string]string{"value": clipText(rec.Get("staff_id"))},
				"%q: use 1-64 lower-case letters, digits, '.', '_' or '-' (it is the sign-in name)", clipText(rec.Get("staff_id")))
		} else if prev, dup := seen[row.ID]; dup {
			c.Add(line, rec.Header("staff_id"), "duplicate_staff", map[string]string{"value": row.ID, "other_row": fmt.Sprint(prev)}, "%s already on row %d", row.ID, prev)
		} else {
			seen[row.ID] = line
		}
		if !textnorm.ValidName(row.Name) || utf8.RuneCountInString(row.Name) > staff.MaxNameRunes {
			c.Add(line, rec.Header("name"), "bad_name", map[string]string{"value": clipText(row.Name), "max": fmt.Sprint(min(staff.MaxNameRunes, textnorm.MaxName))},
				"must be 1-%d printable characters", min(staff.MaxNameRunes, textnorm.MaxName))
		}
		checkStaffLists(c, line, row.Roles, row.Rooms)
		if s := row.Secret; s != "" && !(len(s) == staff.PINLen && strings.Trim(s, "0123456789") == "") &&
			(utf8.RuneCountInString(s) < staff.MinPasswordLen || len(s) > staff.MaxPasswordLen) {
			c.Add(line, rec.Header("secret"), "bad_secret", map[string]string{"min": fmt.Sprint(staff.MinPasswordLen), "max": fmt.Sprint(staff.MaxPasswordLen), "pin": fmt.Sprint(staff.PINLen)},
				"an initial password is %d to %d characters, a PIN exactly %d digits (or leave it empty)", staff.MinPasswordLen, staff.MaxPasswordLen, staff.PINLen)
		}
		out = append(out, row)
	}
	if err := c.Err(); err != nil {
		return nil, t.Encoding, err
	}
	return out, t.Encoding, nil
}

// splitRoles splits a list of roles or room codes, folded (full-width
// forms typed by an input method count).
func splitRoles(s string) []string {
	out := splitList(s)
	for i := range out {
		out[i] = textnorm.Fold(out[i])
	}
	return out
}

func checkStaffLists(c *csvin.Problems, line int, roles, rooms []string) {
	if len(roles) == 0 {
		c.Add(line, "roles", "no_roles", nil, "give at least one of admin;teacher;assistant")
	}
	for _, r := range roles {
		if !slices.Contains(staffRoles, r) {
			c.Add(line, "roles", "bad_role", map[string]string{"value": clipText(r)}, "%q: roles are admin, teacher and assistant, separated by ';'", clipText(r))
		}
	}
	if len(rooms) > staff.MaxClassrooms {
		c.Add(line, "rooms", "too_many_rooms", map[string]string{"max": fmt.Sprint(staff.MaxClassrooms)}, "at most %d rooms", staff.MaxClassrooms)
	}
	for _, r := range rooms {
		if !textnorm.ValidCode(r) {
			c.Add(line, "rooms", "bad_room", map[string]string{"value": clipText(r)}, "%q is not a room code", clipText(r))
		}
	}
}

func clipText(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// HashStaff turns parsed rows into the downlink document, hashing each
// initial secret with argon2id (the clear secret goes no further).
func HashStaff(rows []StaffRow) *StaffList {
	l := &StaffList{Staff: make([]StaffMember, 0, len(rows))}
	for _, r := range rows {
		m := StaffMember{ID: r.ID, Name: r.Name, Roles: r.Roles, Rooms: r.Rooms}
		if r.Secret != "" {
			m.Hash = staff.HashSecret(r.Secret)
		}
		l.Staff = append(l.Staff, m)
	}
	return l
}

// WriteStaffCSV writes a staff list back as CSV (secrets are not kept, so
// that column stays empty).
func WriteStaffCSV(w io.Writer, l *StaffList) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(StaffHeader)
	// (callers that write to a person's file put a UTF-8 BOM first)
	for _, m := range l.Staff {
		_ = cw.Write([]string{m.ID, m.Name, strings.Join(m.Roles, ";"), strings.Join(m.Rooms, ";"), ""})
	}
	cw.Flush()
	return cw.Error()
}

// ValidateStaff checks a staff document that arrived by downlink: strict
// JSON, the same rules as an import, and hashes this edge can check.
func ValidateStaff(data []byte) (*StaffList, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var l StaffList
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("staff: %w", err)
	}
	if len(l.Staff) > MaxStaffRows {
		return nil, fmt.Errorf("staff: more than %d", MaxStaffRows)
	}
	c := &csvin.Problems{}
	seen := map[string]bool{}
	for i, m := range l.Staff {
		line := i + 2 // as the CSV row it came from
		if !staff.ValidID(m.ID) || seen[m.ID] {
			c.Add(line, "staff_id", "bad_staff_id", map[string]string{"value": clipText(m.ID)}, "invalid or repeated id %q", clipText(m.ID))
		}
		seen[m.ID] = true
		if !textnorm.ValidName(m.Name) || utf8.RuneCountInString(m.Name) > staff.MaxNameRunes {
			c.Add(line, "name", "bad_name", map[string]string{"value": clipText(m.Name), "max": fmt.Sprint(min(staff.MaxNameRunes, textnorm.MaxName))}, "invalid name")
		}
		checkStaffLists(c, line, m.Roles, m.Rooms)
		if m.Hash != "" {
			if err := staff.ValidHash(m.Hash); err != nil {
				c.Add(line, "secret", "bad_secret_hash", nil, "%v", err)
			}
		}
	}
	if err := c.Err(); err != nil {
		return nil, err
	}
	return &l, nil
}
