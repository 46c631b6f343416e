package wire

import (
	"testing"
	"time"
)

func TestParseBacklog(t *testing.T) {
	b, err := ParseBacklog("120 3600")
	if err != nil || b.Records != 120 || b.Oldest != time.Hour {
		t.Fatalf("%+v %v", b, err)
	}
	if b.String() != "120 3600" {
		t.Fatalf("String %q", b.String())
	}
	for _, bad := range []string{"", "1", "1 2 3", "-1 5", "1 -5", "a 1", "0 5", "1 99999999999999", "1099511627777 1", "1  1", " 1 1", "1 1 "} {
		if _, err := ParseBacklog(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func FuzzParseBacklog(f *testing.F) {
	for _, s := range []string{"0 0", "120 3600", "1 1", "", "x", "18446744073709551615 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBacklog(s)
		if err != nil {
			return
		}
		again, err := ParseBacklog(b.String())
		if err != nil || again != b {
			t.Fatalf("%q → %+v → %q → %+v %v", s, b, b.String(), again, err)
		}
	})
}
