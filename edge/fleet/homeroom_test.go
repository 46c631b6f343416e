package fleet

import (
	"errors"
	"testing"
	"time"
)

// A room code typed with a Chinese input method is the ASCII code, and a
// classroom names its homeroom in Chinese.
func TestClassroomFullWidthRoomCodeAndHomeroom(t *testing.T) {
	f := newFleet(t, time.Now)
	c, err := f.CreateClassroom("初一(3)班教室", "３０１", "初一(3)班")
	if err != nil || c.RoomCode != "301" || c.Homeroom != "初一(3)班" {
		t.Fatalf("%+v %v", c, err)
	}
	if _, err := f.CreateClassroom("another", "301"); !errors.Is(err, ErrConflict) {
		t.Fatalf("the same room code typed half-width: %v", err)
	}
	c, err = f.SetHomeroom(c.ID, "初一(4)班")
	if err != nil || c.Homeroom != "初一(4)班" {
		t.Fatalf("%+v %v", c, err)
	}
	if got, _ := f.Classroom(c.ID); got.Homeroom != "初一(4)班" {
		t.Fatalf("stored: %+v", got)
	}
	for _, bad := range []string{"a\nb", string(make([]rune, MaxHomeroom+1))} {
		if _, err := f.SetHomeroom(c.ID, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("homeroom %q: %v", bad, err)
		}
	}
	if _, err := f.SetHomeroom("c-none", "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown classroom: %v", err)
	}
}
