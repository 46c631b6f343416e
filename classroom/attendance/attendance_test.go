package attendance_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/classroom/attendance"
	"github.com/campusedge/campusedge/sync/schooldata"
)

func openSource(t testing.TB) *attendance.Source {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "edge.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Update(attendance.Migrate); err != nil {
		t.Fatal(err)
	}
	return &attendance.Source{DB: db}
}

const goodRoster = "student_id,name,homeroom,groups\ns1,Li Wei,7A,math-7-1\ns2,Wang Fang,7B,math-7-1;art\ns3,Zhang San,7B,\n"

func TestImportAndClass(t *testing.T) {
	src := openSource(t)
	if _, _, err := src.Roster(); !errors.Is(err, attendance.ErrNoRoster) {
		t.Fatalf("empty edge: %v", err)
	}
	if n, err := src.Import(bytes.NewBufferString(goodRoster)); err != nil || n != 3 {
		t.Fatalf("import: %d %v", n, err)
	}
	// A bad file changes nothing.
	_, err := src.Import(bytes.NewBufferString("student_id,name,homeroom,groups\ns9,Nine,7C,\ns10,,7C,\n"))
	var ie *schooldata.ImportError
	if !errors.As(err, &ie) || len(ie.Problems) != 1 || ie.Problems[0].Row != 3 {
		t.Fatalf("bad file: %v", err)
	}
	if ro, from, err := src.Roster(); err != nil || len(ro.Students) != 3 || from != "import" {
		t.Fatalf("roster after a refused import: %v %s %v", ro, from, err)
	}
	// A teaching group drawn from two homerooms.
	c, err := src.Class("c-1", "math-7-1", time.Now())
	if err != nil || len(c.Students) != 2 || c.FoundBy != "request" {
		t.Fatalf("group: %+v %v", c, err)
	}
	// The room code names a homeroom.
	src.Room = func(string) string { return "7B" }
	if c, err := src.Class("c-1", "", time.Now()); err != nil || c.Group != "7B" || len(c.Students) != 2 || c.FoundBy != "homeroom" {
		t.Fatalf("homeroom: %+v %v", c, err)
	}
	// The synced timetable decides when it has a slot for the room now.
	at := time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC) // a Wednesday
	src.Location = time.UTC
	src.Docs = func(kind string) ([]byte, error) {
		if kind == schooldata.KindTimetable {
			return []byte(`{"slots":[{"day":"wed","period":2,"start":"09:00","end":"09:45","room":"7B","group":"art","subject":"Art","teacher":"t1","resources":[]}]}`), nil
		}
		return nil, nil // no synced roster: the imported one
	}
	if c, err := src.Class("c-1", "", at); err != nil || c.Group != "art" || c.Subject != "Art" || len(c.Students) != 1 || c.FoundBy != "timetable" {
		t.Fatalf("timetable: %+v %v", c, err)
	}
	if c, err := src.Class("c-1", "", at.Add(time.Hour)); err != nil || c.Group != "7B" {
		t.Fatalf("after the period: %+v %v", c, err)
	}
	src.Room = func(string) string { return "lab" }
	if _, err := src.Class("c-1", "", at.Add(time.Hour)); !errors.Is(err, attendance.ErrNoGroup) {
		t.Fatalf("no group: %v", err)
	}
	if _, err := src.Class("c-1", "nobody", at); !errors.Is(err, attendance.ErrNoGroup) {
		t.Fatalf("empty group: %v", err)
	}
}

// FuzzImport: any bytes are imported whole or refused leaving the roster
// as it was; an import stores exactly what it reports.
func FuzzImport(f *testing.F) {
	f.Add([]byte(goodRoster))
	f.Add([]byte("student_id,name,homeroom,groups\ns1,A,7A,\ns1,B,7A,\n"))
	f.Add([]byte("student_id,name,homeroom\ns1,A,7A\n"))
	f.Add([]byte("student_id,name,homeroom,groups\n\"s1,A,7A,\n"))
	f.Add([]byte{0xff, 0xfe, ','})
	f.Add([]byte(""))
	src := openSource(f)
	if _, err := src.Import(bytes.NewBufferString(goodRoster)); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		before, _, err := src.Roster()
		if err != nil {
			t.Fatal(err)
		}
		n, err := src.Import(bytes.NewReader(data))
		after, _, rerr := src.Roster()
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err != nil {
			if len(after.Students) != len(before.Students) {
				t.Fatalf("a refused import changed the roster: %d → %d students", len(before.Students), len(after.Students))
			}
			return
		}
		if len(after.Students) != n {
			t.Fatalf("imported %d, stored %d", n, len(after.Students))
		}
	})
}

// A classroom names its homeroom: room 301 is home to 初一(3)班, and the
// roster needs no homeroom called like the room.
func TestClassroomNamesItsHomeroom(t *testing.T) {
	src := openSource(t)
	roster := "姓名,班级\r\n阿依古丽·吐尔逊,初一(3)班\r\n王芳,初一(3)班\r\n李伟,初一(4)班\r\n"
	if _, enc, err := src.ImportCSV(bytes.NewBufferString("\ufeff" + roster)); err != nil || enc != "UTF-8 BOM" {
		t.Fatalf("import: %s %v", enc, err)
	}
	src.Room = func(string) string { return "301" }
	if _, err := src.Class("c-1", "", time.Now()); !errors.Is(err, attendance.ErrNoGroup) {
		t.Fatalf("no homeroom named: %v", err)
	}
	src.Homeroom = func(string) string { return "初一（3）班" } // typed with full-width brackets
	c, err := src.Class("c-1", "", time.Now())
	if err != nil || c.GroupName != "初一(3)班" || c.FoundBy != "homeroom" || len(c.Students) != 2 || c.Students[0].Name != "阿依古丽·吐尔逊" || c.Students[0].HomeroomName != "初一(3)班" {
		t.Fatalf("%+v %v", c, err)
	}
	// And a group asked for by its display name.
	if c, err := src.Class("c-1", "初一(4)班", time.Now()); err != nil || len(c.Students) != 1 || c.Students[0].Name != "李伟" {
		t.Fatalf("%+v %v", c, err)
	}
}
