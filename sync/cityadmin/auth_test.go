package cityadmin

import (
	"strings"
	"testing"
)

func TestPasswordHash(t *testing.T) {
	h, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q", h)
	}
	h2, _ := HashPassword("correct horse battery")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	if !CheckPassword(h, "correct horse battery") || CheckPassword(h, "correct horse batterY") || CheckPassword("", "") {
		t.Fatal("check")
	}
	if _, err := HashPassword("short"); err == nil {
		t.Fatal("short password accepted")
	}
}

// FuzzCheckPassword: the stored hash is parsed on every sign-in; a broken
// or hostile one (huge memory, zero threads) must be refused, not run.
func FuzzCheckPassword(f *testing.F) {
	h, _ := HashPassword("correct horse battery")
	f.Add(h, "correct horse battery")
	f.Add("$argon2id$v=19$m=4294967295,t=1,p=1$AAAA$AAAA", "x")
	f.Add("$argon2id$v=19$m=8,t=1,p=0$AAAA$AAAA", "x")
	f.Add("$argon2i$v=19$m=8,t=1,p=1$$", "")
	f.Fuzz(func(t *testing.T, enc, pw string) {
		if CheckPassword(enc, pw) && enc != h {
			// Only a real hash of pw may match; a fuzzed one that does
			// must at least be well formed.
			if !strings.HasPrefix(enc, "$argon2id$v=19$") {
				t.Fatalf("%q matched", enc)
			}
		}
	})
}
