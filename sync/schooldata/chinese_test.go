package schooldata

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/text/encoding/simplifiedchinese"

	"github.com/campusedge/campusedge/edge/csvin"
)

// A roster and a timetable as a school in Karamay keeps them: Chinese
// headers, Chinese class, teacher and pupil names (a Uyghur name with its
// '·'), no codes at all, CRLF and a trailing empty line.
const (
	zhRoster = "学号,姓名,班级,教学班\r\n" +
		"20250301,阿依古丽·吐尔逊,初一(3)班,数学提高班；物理A班\r\n" +
		",王芳,初一(3)班,数学提高班\r\n" +
		",李伟,初一（4）班,\r\n\r\n"
	zhTimetable = "星期,节次,开始,结束,教室,班级,科目,教师,资源\r\n" +
		"周一,第1节,8:00,08:45,301,初一(3)班,数学,李老师,ml-fractions-1\r\n" +
		"星期二,２,09:00,09:45,三楼多媒体教室,数学提高班,数学（提高）,艾克拜尔·买买提,\r\n\r\n"
)

func encodeAs(t *testing.T, enc, s string) []byte {
	t.Helper()
	switch enc {
	case csvin.UTF8:
		return []byte(s)
	case csvin.UTF8BOM:
		return append([]byte("\xef\xbb\xbf"), s...)
	case csvin.GBK:
		b, err := simplifiedchinese.GBK.NewEncoder().Bytes([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b, err := simplifiedchinese.GB18030.NewEncoder().Bytes([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestChineseRosterEveryEncoding(t *testing.T) {
	var first *Roster
	for _, enc := range []string{csvin.UTF8, csvin.UTF8BOM, csvin.GBK, csvin.GB18030} {
		ro, got, err := ReadRoster(bytes.NewReader(encodeAs(t, enc, zhRoster)))
		if err != nil {
			t.Fatalf("%s: %v", enc, err)
		}
		if enc != csvin.GB18030 && got != enc || enc == csvin.GB18030 && got != csvin.GBK && got != csvin.GB18030 {
			t.Errorf("read %s as %s", enc, got)
		}
		s := ro.Students[0]
		if s.ID != "20250301" || s.Name != "阿依古丽·吐尔逊" || ro.ClassName(s.Homeroom) != "初一(3)班" || len(s.Groups) != 2 ||
			ro.ClassName(s.Groups[0]) != "数学提高班" || ro.ClassName(s.Groups[1]) != "物理A班" {
			t.Fatalf("%s: %+v %+v", enc, s, ro.Classes)
		}
		if ro.Students[1].ID == "" || ro.Students[1].ID == ro.Students[2].ID || ro.Students[1].Homeroom != s.Homeroom {
			t.Fatalf("derived ids: %+v", ro.Students)
		}
		if first == nil {
			first = ro
		} else if !reflect.DeepEqual(first, ro) {
			t.Fatalf("%s gives another roster than UTF-8 (codes must not depend on the encoding)", enc)
		}
	}
	// Full-width parentheses name the same class: one code, and the name
	// as the file first wrote it.
	if first.Students[2].Homeroom == first.Students[0].Homeroom || first.ClassName(first.Students[2].Homeroom) != "初一（4）班" {
		t.Fatalf("%+v", first.Students[2])
	}
	// Export and re-import give the same roster, names exact.
	var buf bytes.Buffer
	if err := WriteRosterCSV(&buf, first); err != nil {
		t.Fatal(err)
	}
	again, err := ParseRosterCSV(&buf)
	if err != nil || !reflect.DeepEqual(first, again) {
		t.Fatalf("round trip: %v\n%+v\n%+v", err, first, again)
	}
}

func TestChineseTimetableSharesClassCodes(t *testing.T) {
	ro, err := ParseRosterCSV(strings.NewReader(zhRoster))
	if err != nil {
		t.Fatal(err)
	}
	tt, enc, err := ReadTimetable(bytes.NewReader(encodeAs(t, csvin.GBK, zhTimetable)))
	if err != nil || enc != csvin.GBK {
		t.Fatalf("%s %v", enc, err)
	}
	s0, s1 := tt.Slots[0], tt.Slots[1]
	if s0.Day != "mon" || s0.Period != 1 || s0.Start != "08:00" || s0.Room != "301" || s0.RoomLabel() != "301" ||
		s0.Group != ro.Students[0].Homeroom || s0.GroupLabel() != "初一(3)班" || s0.TeacherLabel() != "李老师" || s0.Subject != "数学" {
		t.Fatalf("%+v", s0)
	}
	if s1.Day != "tue" || s1.Period != 2 || s1.Group != ro.Students[0].Groups[0] || s1.RoomLabel() != "三楼多媒体教室" ||
		s1.TeacherLabel() != "艾克拜尔·买买提" || s1.Subject != "数学（提高）" {
		t.Fatalf("%+v", s1)
	}
	var buf bytes.Buffer
	if err := WriteTimetableCSV(&buf, tt); err != nil {
		t.Fatal(err)
	}
	again, err := ParseTimetableCSV(&buf)
	if err != nil || !reflect.DeepEqual(tt, again) {
		t.Fatalf("round trip: %v\n%+v\n%+v", err, tt, again)
	}
	b, _ := jsonOf(tt)
	if err := Validate(KindTimetable, b); err != nil {
		t.Fatalf("downlink validation refuses a Chinese timetable: %v", err)
	}
}

func TestUnknownEncodingRefusedWithTheFix(t *testing.T) {
	bad := append([]byte("姓名,班级\n"), 0x81, 0x20, 0xff, ',', 'x', '\n')
	_, _, err := ReadRoster(bytes.NewReader(bad))
	var ie *ImportError
	if !errors.As(err, &ie) || ie.Problems[0].Code != csvin.CodeEncoding || !strings.Contains(err.Error(), "save it as CSV UTF-8") {
		t.Fatalf("%v", err)
	}
}

func TestOldDocumentsStillLoad(t *testing.T) {
	// Stored and sent before names existed: no classes, no *_name fields.
	if err := Validate(KindRoster, []byte(`{"students":[{"id":"s1","name":"Li Wei","homeroom":"7A","groups":["math-7-1"]}]}`)); err != nil {
		t.Fatal(err)
	}
	if err := Validate(KindTimetable, []byte(`{"slots":[{"day":"mon","period":1,"start":"08:00","end":"08:45","room":"r101","group":"7A","subject":"Maths","teacher":"t-zhao","resources":[]}]}`)); err != nil {
		t.Fatal(err)
	}
}

func jsonOf(v any) ([]byte, error) { return json.Marshal(v) }

// The staff list as a Chinese office saves it: Chinese headers and names,
// every encoding; the sign-in name typed full-width folds to ASCII.
func TestChineseStaffEveryEncoding(t *testing.T) {
	in := "工号,姓名,角色,教室,初始密码\r\nli.laoshi,李老师,teacher,,135790\r\nａｙｉｇｕｌ,阿依古丽·吐尔逊,assistant；teacher,R204,\r\n\r\n"
	for _, enc := range []string{csvin.UTF8, csvin.UTF8BOM, csvin.GBK, csvin.GB18030} {
		rows, got, err := ReadStaff(bytes.NewReader(encodeAs(t, enc, in)))
		if err != nil {
			t.Fatalf("%s: %v", enc, err)
		}
		if enc != csvin.GB18030 && got != enc {
			t.Errorf("read %s as %s", enc, got)
		}
		if len(rows) != 2 || rows[0].Name != "李老师" || rows[1].ID != "ayigul" || rows[1].Name != "阿依古丽·吐尔逊" ||
			strings.Join(rows[1].Roles, ",") != "assistant,teacher" || strings.Join(rows[1].Rooms, ",") != "R204" {
			t.Fatalf("%s: %+v", enc, rows)
		}
	}
	_, _, err := ReadStaff(bytes.NewReader([]byte("工号,姓名,角色\r\n\x81\x20\xff,x,teacher\r\n")))
	var ie *ImportError
	if !errors.As(err, &ie) || ie.Problems[0].Code != csvin.CodeEncoding {
		t.Fatalf("%v", err)
	}
}
