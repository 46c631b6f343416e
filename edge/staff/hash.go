package staff

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// argon2id parameters: OWASP's second recommended setting (19 MiB, two
// passes, one lane). A sign-in costs ~30 ms of one core on the appliance;
// hashSlots bounds how many run at once, so a burst of sign-ins costs at
// most hashSlots × 19 MiB and never starves live classes.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024 // KiB
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
	hashSlots    = 2

	// Bounds on parameters read back from a stored or imported hash, so a
	// hostile import cannot make one verification cost minutes or GiBs.
	maxMemory = 256 * 1024
	maxTime   = 10
	maxLanes  = 4
)

// ErrBadHash means a stored hash is not an argon2id hash this edge accepts.
var ErrBadHash = errors.New("not an argon2id hash")

// HashSecret returns the PHC-format argon2id hash of secret:
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<key> (unpadded standard base64).
func HashSecret(secret string) string {
	salt := make([]byte, argonSaltLen)
	_, _ = rand.Read(salt)
	key := argon2.IDKey([]byte(secret), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

type phc struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

// parseHash reads a PHC argon2id string, refusing anything else and any
// parameters beyond this edge's bounds.
func parseHash(h string) (phc, error) {
	var p phc
	parts := strings.Split(h, "$")
	if len(h) > 512 || len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, ErrBadHash
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return p, fmt.Errorf("%w: version %q", ErrBadHash, parts[2])
	}
	var m, t, l uint32
	if n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &l); err != nil || n != 3 {
		return p, fmt.Errorf("%w: parameters %q", ErrBadHash, parts[3])
	}
	if m < 8 || m > maxMemory || t < 1 || t > maxTime || l < 1 || l > maxLanes {
		return p, fmt.Errorf("%w: parameters out of bounds (m≤%d KiB, t≤%d, p≤%d)", ErrBadHash, maxMemory, maxTime, maxLanes)
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	key, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(salt) > 64 || len(key) < 16 || len(key) > 64 {
		return p, fmt.Errorf("%w: salt or key", ErrBadHash)
	}
	return phc{memory: m, time: t, threads: uint8(l), salt: salt, key: key}, nil
}

// ValidHash reports whether h is an argon2id hash this edge can check.
func ValidHash(h string) error { _, err := parseHash(h); return err }

// verify reports whether secret matches the hash h, in constant time.
func verify(h, secret string) bool {
	p, err := parseHash(h)
	if err != nil {
		return false
	}
	k := argon2.IDKey([]byte(secret), p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
	return subtle.ConstantTimeCompare(k, p.key) == 1
}
