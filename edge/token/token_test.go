package token

import "testing"

func TestNewHashMatches(t *testing.T) {
	a, b := New(), New()
	if a == b || len(a) != 43 {
		t.Fatalf("tokens %q %q", a, b)
	}
	if !Matches(a, Digest(a)) || Matches(b, Digest(a)) || Matches("", Digest("")) {
		t.Fatal("Matches")
	}
}
