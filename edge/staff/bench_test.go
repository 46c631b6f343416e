package staff

import (
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// BenchmarkVerifyArgon2id is what one sign-in costs the edge (the hash
// check; the rest is a bbolt read and a map insert).
func BenchmarkVerifyArgon2id(b *testing.B) {
	h := HashSecret("correct horse battery")
	b.ReportAllocs()
	for b.Loop() {
		if !verify(h, "correct horse battery") {
			b.Fatal("no match")
		}
	}
}

// BenchmarkVerifyBcrypt10 is the peer in the same run: bcrypt at its
// default cost, what many web apps spend per sign-in.
func BenchmarkVerifyBcrypt10(b *testing.B) {
	h, err := bcrypt.GenerateFromPassword([]byte("correct horse battery"), bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if bcrypt.CompareHashAndPassword(h, []byte("correct horse battery")) != nil {
			b.Fatal("no match")
		}
	}
}
