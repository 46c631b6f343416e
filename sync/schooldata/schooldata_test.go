package schooldata

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

const goodRoster = "student_id,name,homeroom,groups\n" +
	"s0001,Li Wei,7A,math-7-1;phys-a\n" +
	"s0002,\"Zhang, Min\",7B,math-7-1\n" +
	"s0003,王芳,7A,\n"

func TestRosterGroupsAcrossHomerooms(t *testing.T) {
	r, err := ParseRosterCSV(strings.NewReader(goodRoster))
	if err != nil {
		t.Fatal(err)
	}
	if g := r.Groups()["math-7-1"]; !reflect.DeepEqual(g, []string{"s0001", "s0002"}) {
		t.Fatalf("teaching group math-7-1 = %v (draws from 7A and 7B)", g)
	}
	if h := r.Homerooms()["7A"]; !reflect.DeepEqual(h, []string{"s0001", "s0003"}) {
		t.Fatalf("homeroom 7A = %v", h)
	}
	var buf bytes.Buffer
	if err := WriteRosterCSV(&buf, r); err != nil {
		t.Fatal(err)
	}
	r2, err := ParseRosterCSV(&buf)
	if err != nil || !reflect.DeepEqual(r, r2) {
		t.Fatalf("round trip: %v\n%+v\n%+v", err, r, r2)
	}
}

func TestRosterBadRowsNamedNothingImported(t *testing.T) {
	in := "student_id,name,homeroom,groups\n" +
		"s0001,Li Wei,7A,math\n" +
		"s 2,Bad Id,7A,\n" + // row 3
		"s0001,Dup,7B,\n" + // row 4
		"s0004,,7B,\n" + // row 5
		"s0005,Ok,7B,a;a\n" // row 6
	r, err := ParseRosterCSV(strings.NewReader(in))
	if r != nil {
		t.Fatal("a roster with bad rows was returned")
	}
	var ie *ImportError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v", err)
	}
	var rows []int
	for _, e := range ie.Problems {
		rows = append(rows, e.Row)
	}
	if !reflect.DeepEqual(rows, []int{3, 4, 5, 6}) {
		t.Fatalf("rows %v, want [3 4 5 6]: %v", rows, err)
	}
	if !strings.Contains(err.Error(), "row 4, column student_id: s0001 (Dup) is already on row 2") {
		t.Fatalf("message: %v", err)
	}
	for _, bad := range []string{"", "id,name\n", "student_id,name,homeroom,groups\ns1,a,b\n", "student_id,name,homeroom,groups\n\"s1,a,b,c\n"} {
		if _, err := ParseRosterCSV(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

const goodTimetable = "day,period,start,end,room,group,subject,teacher,resources\n" +
	"mon,1,08:00,08:45,r101,7A,Mathematics,t-zhao,ml-fractions-1;ml-fractions-2\n" +
	"mon,1,08:00,08:45,r102,math-7-1,Mathematics (set 1),t-qian,\n" +
	"Tue,2,09:00,09:45,r101,7A,Physics,t-sun,ml-optics\n"

func TestTimetableParseAndDoubleBooking(t *testing.T) {
	tt, err := ParseTimetableCSV(strings.NewReader(goodTimetable))
	if err != nil {
		t.Fatal(err)
	}
	if len(tt.Slots) != 3 || tt.Slots[2].Day != "tue" || !reflect.DeepEqual(tt.Slots[0].Resources, []string{"ml-fractions-1", "ml-fractions-2"}) {
		t.Fatalf("%+v", tt.Slots)
	}
	bad := goodTimetable +
		"mon,1,08:00,08:45,r101,7C,Art,t-li,\n" + // row 5: room r101 double booked
		"mon,1,08:00,08:45,r103,7C,Art,t-zhao,\n" + // row 6: teacher t-zhao double booked
		"xyz,0,9h00,08:00,r1,g,S,t,\n" + // row 7: day, period, start
		"wed,3,10:00,09:00,r1,g,S,t,NOT AN ID\n" // row 8: end before start, resource
	_, err = ParseTimetableCSV(strings.NewReader(bad))
	var ie *ImportError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v", err)
	}
	got := map[int][]string{}
	for _, e := range ie.Problems {
		got[e.Row] = append(got[e.Row], e.Column)
	}
	want := map[int][]string{5: {"room"}, 6: {"teacher"}, 7: {"day", "period", "start"}, 8: {"end", "resources"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("errors by row %v, want %v\n%v", got, want, err)
	}
}

func TestValidateDownlinkDocuments(t *testing.T) {
	if err := Validate(KindRoster, []byte(`{"students":[{"id":"s1","name":"A","homeroom":"7A","groups":[]}]}`)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ kind, doc string }{
		{KindRoster, `{"students":[{"id":"s 1","name":"A","homeroom":"7A","groups":[]}]}`},
		{KindRoster, `{"students":[],"extra":1}`},
		{KindTimetable, `{"slots":[{"day":"mon","period":1,"start":"09:00","end":"08:00","room":"r","group":"g","subject":"s","teacher":"t","resources":[]}]}`},
		{"grades", `{}`},
	} {
		if err := Validate(c.kind, []byte(c.doc)); err == nil {
			t.Errorf("accepted %s %s", c.kind, c.doc)
		}
	}
}

func FuzzParseRosterCSV(f *testing.F) {
	f.Add(goodRoster)
	f.Add(zhRoster)
	f.Add("student_id,name,homeroom,groups\n\"a\"\"b\",x,y,z\n")
	f.Add("\xef\xbb\xbfstudent_id,name,homeroom,groups\r\ns1,A,7A,g1;g2\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		r, err := ParseRosterCSV(strings.NewReader(in))
		if err != nil {
			if r != nil {
				t.Fatal("roster returned with an error")
			}
			return
		}
		var buf bytes.Buffer
		if err := WriteRosterCSV(&buf, r); err != nil {
			t.Fatal(err)
		}
		r2, err := ParseRosterCSV(&buf)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("accepted roster does not round-trip: %v", err)
		}
	})
}

func FuzzParseTimetableCSV(f *testing.F) {
	f.Add(goodTimetable)
	f.Add(zhTimetable)
	f.Add("day,period,start,end,room,group,subject,teacher,resources\nfri,20,23:00,23:59,a,b,c,d,e\n")
	f.Fuzz(func(t *testing.T, in string) {
		tt, err := ParseTimetableCSV(strings.NewReader(in))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := WriteTimetableCSV(&buf, tt); err != nil {
			t.Fatal(err)
		}
		tt2, err := ParseTimetableCSV(&buf)
		if err != nil || !reflect.DeepEqual(tt, tt2) {
			t.Fatalf("accepted timetable does not round-trip: %v", err)
		}
	})
}

// FuzzValidate: a downlink document from the hub is outside data for the
// edge; whatever it holds, Validate answers without panicking, and what it
// accepts re-encodes to a valid document.
func FuzzValidate(f *testing.F) {
	f.Add("roster", `{"students":[{"id":"s1","name":"A","homeroom":"7A","groups":["g"]}]}`)
	f.Add("timetable", `{"slots":[{"day":"mon","period":1,"start":"08:00","end":"08:45","room":"r","group":"g","subject":"s","teacher":"t","resources":["ml-1"]}]}`)
	f.Add("roster", `{"students":null}`)
	f.Add("roster", `{"students":[{"id":"20250301","name":"阿依古丽·吐尔逊","homeroom":"g-blkodhgyod","groups":[]}],"classes":[{"code":"g-blkodhgyod","name":"初一(3)班"}]}`)
	f.Fuzz(func(t *testing.T, kind, doc string) {
		_ = Validate(kind, []byte(doc))
	})
}
