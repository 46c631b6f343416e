package textnorm

import (
	"reflect"
	"testing"
)

func TestFoldAndSplit(t *testing.T) {
	if got := Fold("　ＲＯＯＭ１０１　"); got != "ROOM101" {
		t.Errorf("Fold = %q", got)
	}
	if got := Split("1/2，1/3、一样大\n；"); !reflect.DeepEqual(got, []string{"1/2", "1/3", "一样大"}) {
		t.Errorf("Split = %q", got)
	}
}

func TestCodeIsStableAndFoldsWidth(t *testing.T) {
	a, b := Code("g-", "初一(3)班"), Code("g-", "初一（３）班")
	if a != b || !ValidCode(a) || a[:2] != "g-" {
		t.Fatalf("%q %q", a, b)
	}
	// The derivation is part of the stored data's meaning: a change would
	// orphan every record imported before it.
	if a != "g-blkodhgyod" {
		t.Fatalf("Code(初一(3)班) = %q, was g-blkodhgyod", a)
	}
	if Code("r-", "R101") != "R101" || Code("r-", "Ｒ１０１") != "R101" {
		t.Fatal("a name that is a code must stay that code")
	}
	if Code("g-", "初一(3)班") == Code("g-", "初一(4)班") {
		t.Fatal("two classes, one code")
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"阿依古丽·吐尔逊", "初一(3)班", "Li Wei", "李老师"} {
		if !ValidName(ok) {
			t.Errorf("refused %q", ok)
		}
	}
	for _, bad := range []string{"", " a", "a\nb", "a\x00", string(make([]rune, 65))} {
		if ValidName(bad) {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzCode(f *testing.F) {
	f.Add("初一(3)班")
	f.Add("ＲＯＯＭ１")
	f.Fuzz(func(t *testing.T, s string) {
		if c := Code("g-", s); !ValidCode(c) || Code("g-", s) != c {
			t.Fatalf("Code(%q) = %q", s, c)
		}
	})
}
