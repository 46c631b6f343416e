package schooldata

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseStaffCSV(t *testing.T) {
	in := "staff_id,name,roles,rooms,secret\n" +
		"Wang.Li,Wang Li,teacher,,maths-teacher-7\n" +
		"zhao.min,赵敏,teacher;admin,,135790\n" +
		"chen.jing,Chen Jing,assistant,R204;R205,\n"
	rows, err := ParseStaffCSV(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[0].ID != "wang.li" || strings.Join(rows[1].Roles, ",") != "teacher,admin" || strings.Join(rows[2].Rooms, ",") != "R204,R205" {
		t.Fatalf("rows %+v", rows)
	}
	l := HashStaff(rows)
	data, _ := json.Marshal(l)
	if strings.Contains(string(data), "maths-teacher-7") || strings.Contains(string(data), "135790") {
		t.Fatal("a secret in clear in the document")
	}
	if !strings.HasPrefix(l.Staff[0].Hash, "$argon2id$") || l.Staff[2].Hash != "" {
		t.Fatalf("hashes %q %q", l.Staff[0].Hash, l.Staff[2].Hash)
	}
	if err := Validate(KindStaff, data); err != nil {
		t.Fatalf("the imported document does not validate: %v", err)
	}
	var sb strings.Builder
	if err := WriteStaffCSV(&sb, l); err != nil || !strings.HasPrefix(sb.String(), "staff_id,name,roles,rooms,secret\nwang.li,Wang Li,teacher,,\n") {
		t.Fatalf("export: %v\n%s", err, sb.String())
	}
}

func TestParseStaffCSVRefusesBadRows(t *testing.T) {
	in := "staff_id,name,roles,rooms,secret\n" +
		"ok.one,One,teacher,,\n" +
		"bad id,Two,teacher,,\n" +
		"ok.one,Again,teacher,,\n" +
		"x,,teacher,,\n" +
		"y,Y,chief,,\n" +
		"z,Z,teacher,bad room!,\n" +
		"w,W,teacher,,12345\n"
	_, err := ParseStaffCSV(strings.NewReader(in))
	var ie *ImportError
	if !errors.As(err, &ie) {
		t.Fatalf("err %v", err)
	}
	want := map[string]bool{"3/staff_id": true, "4/staff_id": true, "5/name": true, "6/roles": true, "7/rooms": true, "8/secret": true}
	got := map[string]bool{}
	for _, r := range ie.Problems {
		got[strings.Join([]string{itoa(r.Row), r.Column}, "/")] = true
	}
	for k := range want {
		if !got[k] {
			t.Errorf("no error for %s in %v", k, ie.Problems)
		}
	}
	if _, err := ParseStaffCSV(strings.NewReader("student_id,name\n")); err == nil {
		t.Error("a roster header was taken as staff")
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestValidateStaffRefusesHostileDocuments(t *testing.T) {
	for _, doc := range []string{
		`{"staff":[{"id":"a","name":"A","roles":["teacher"],"rooms":[],"hash":"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5"}]}`,
		`{"staff":[{"id":"a","name":"A","roles":["root"],"rooms":[]}]}`,
		`{"staff":[{"id":"a","name":"A","roles":["teacher"],"rooms":[]},{"id":"a","name":"B","roles":["teacher"],"rooms":[]}]}`,
		`{"staff":[{"id":"A B","name":"A","roles":["teacher"],"rooms":[]}]}`,
		`{"staff":[],"extra":1}`,
		`{"staff":[{"id":"a","name":"A","roles":["teacher"],"rooms":[],"hash":"plaintext"}]}`,
	} {
		if err := Validate(KindStaff, []byte(doc)); err == nil {
			t.Errorf("accepted %s", doc)
		}
	}
}

// FuzzStaffCSV: the staff import never panics; whatever it accepts has
// valid ids, roles and rooms, and hashes into a document that validates.
func FuzzStaffCSV(f *testing.F) {
	f.Add("staff_id,name,roles,rooms,secret\nwang.li,Wang Li,teacher,,maths-teacher-7\n")
	f.Add("staff_id,name,roles,rooms,secret\nzhao.min,赵敏,teacher;admin,R1;R2,135790\n")
	f.Add("\xef\xbb\xbfstaff_id,name,roles,rooms,secret\r\na,\"B, C\",assistant,,\r\n")
	f.Add("staff_id,name,roles,rooms,secret\n\"unterminated\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		rows, err := ParseStaffCSV(strings.NewReader(in))
		if err != nil {
			return
		}
		// Hash without the argon2 cost: the document's shape is what matters.
		l := &StaffList{}
		for _, r := range rows {
			l.Staff = append(l.Staff, StaffMember{ID: r.ID, Name: r.Name, Roles: r.Roles, Rooms: r.Rooms})
		}
		data, _ := json.Marshal(l)
		if err := Validate(KindStaff, data); err != nil {
			t.Fatalf("accepted %q but its document does not validate: %v", in, err)
		}
	})
}

// FuzzStaffDocument: the downlink's staff document decoder never panics.
func FuzzStaffDocument(f *testing.F) {
	f.Add(`{"staff":[{"id":"a","name":"A","roles":["teacher"],"rooms":[]}]}`)
	f.Add(`{"staff":null}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, doc string) {
		l, err := ValidateStaff([]byte(doc))
		if err == nil && l == nil {
			t.Fatal("nil list without an error")
		}
	})
}
