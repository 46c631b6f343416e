// Package token makes and checks the bearer tokens every part of the
// project hands out (admin, terminal, session roles, enrolment): 256 random
// bits, URL-safe, and kept at rest only as their SHA-256, compared in
// constant time. One place, so every credential has the same strength.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
)

// New returns a random URL-safe bearer token (32 bytes, base64url).
// crypto/rand.Read never fails on Go 1.24 and later.
func New() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Hash is how a token is kept at rest: only its SHA-256.
func Hash(tok string) [sha256.Size]byte { return sha256.Sum256([]byte(tok)) }

// Matches reports, in constant time, whether tok hashes to hash.
func Matches(tok string, hash []byte) bool {
	if tok == "" {
		return false
	}
	h := Hash(tok)
	return subtle.ConstantTimeCompare(h[:], hash) == 1
}

// Digest is Hash as a slice, the form stores keep.
func Digest(tok string) []byte {
	h := Hash(tok)
	return h[:]
}
