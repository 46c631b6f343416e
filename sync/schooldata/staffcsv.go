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

	"github.com/campusedge/campusedge/edge/staff"
)

// The city's staff list for one school. Kept in its own file: the CSV
// readers are being taught more encodings (GBK, BOMs) and this one should
// move with them.

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

// ParseStaffCSV parses and validates a staff CSV; on any bad row it
// returns *ImportError listing the rows and nothing else.
func ParseStaffCSV(r io.Reader) ([]StaffRow, error) {
	c := &collector{}
	rows, lines := readCSV(r, StaffHeader, c)
	if len(rows) > MaxStaffRows {
		c.add(lines[MaxStaffRows], "", "more than %d staff", MaxStaffRows)
		return nil, c.err()
	}
	seen := map[string]int{}
	out := make([]StaffRow, 0, len(rows))
	for i, rec := range rows {
		line := lines[i]
		row := StaffRow{ID: strings.ToLower(rec[0]), Name: rec[1], Roles: splitList(rec[2]), Rooms: splitList(rec[3]), Secret: rec[4]}
		if !staff.ValidID(row.ID) {
			c.add(line, "staff_id", "%q: use 1-64 lower-case letters, digits, '.', '_' or '-' (it is the sign-in name)", clipText(rec[0]))
		} else if prev, dup := seen[row.ID]; dup {
			c.add(line, "staff_id", "%s already on row %d", row.ID, prev)
		} else {
			seen[row.ID] = line
		}
		if !validText(row.Name) || utf8.RuneCountInString(row.Name) > staff.MaxNameRunes {
			c.add(line, "name", "must be 1-%d printable characters", staff.MaxNameRunes)
		}
		checkStaffLists(c, line, row.Roles, row.Rooms)
		if s := row.Secret; s != "" && !(len(s) == staff.PINLen && strings.Trim(s, "0123456789") == "") &&
			(utf8.RuneCountInString(s) < staff.MinPasswordLen || len(s) > staff.MaxPasswordLen) {
			c.add(line, "secret", "an initial password is %d to %d characters, a PIN exactly %d digits (or leave it empty)", staff.MinPasswordLen, staff.MaxPasswordLen, staff.PINLen)
		}
		out = append(out, row)
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	return out, nil
}

func checkStaffLists(c *collector, line int, roles, rooms []string) {
	if len(roles) == 0 {
		c.add(line, "roles", "give at least one of admin;teacher;assistant")
	}
	for _, r := range roles {
		if !slices.Contains(staffRoles, r) {
			c.add(line, "roles", "%q: roles are admin, teacher and assistant, separated by ';'", clipText(r))
		}
	}
	if len(rooms) > staff.MaxClassrooms {
		c.add(line, "rooms", "at most %d rooms", staff.MaxClassrooms)
	}
	for _, r := range rooms {
		if !validCode(r) {
			c.add(line, "rooms", "%q is not a room code", clipText(r))
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
	c := &collector{}
	seen := map[string]bool{}
	for i, m := range l.Staff {
		line := i + 2 // as the CSV row it came from
		if !staff.ValidID(m.ID) || seen[m.ID] {
			c.add(line, "staff_id", "invalid or repeated id %q", clipText(m.ID))
		}
		seen[m.ID] = true
		if !validText(m.Name) || utf8.RuneCountInString(m.Name) > staff.MaxNameRunes {
			c.add(line, "name", "invalid name")
		}
		checkStaffLists(c, line, m.Roles, m.Rooms)
		if m.Hash != "" {
			if err := staff.ValidHash(m.Hash); err != nil {
				c.add(line, "secret", "%v", err)
			}
		}
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	return &l, nil
}
