package wire

import (
	"errors"
	"fmt"
	"strings"

	"github.com/campusedge/campusedge/edge/certs"
)

// The enrolment token as the city hands it to a school admin is
// SECRET~PIN: the one-time secret cityhub keeps the hash of, then the pin
// of the hub's TLS key. One string to type carries both what proves the
// edge to the hub and what proves the hub to the edge, so the first
// connection is already authenticated even with a self-signed hub.
const TokenPinSep = "~"

// Limits of an enrolment token's parts.
const (
	MaxTokenSecretLen = 128
	pinLen            = 44 // base64 std of 32 bytes, with padding
)

// FormatEnrolToken joins a secret and a pin into the token printed by
// cityhub enrol-token. An empty pin gives the old secret-only form.
func FormatEnrolToken(secret, pin string) string {
	if pin == "" {
		return secret
	}
	return secret + TokenPinSep + pin
}

// ParseEnrolToken splits a token into its secret and its hub key pin (empty
// for an old-style token without one). Surrounding white space, as left by
// copying from a terminal, is ignored.
func ParseEnrolToken(tok string) (secret, pin string, err error) {
	tok = strings.TrimSpace(tok)
	secret, pin, _ = strings.Cut(tok, TokenPinSep)
	if secret == "" || len(secret) > MaxTokenSecretLen {
		return "", "", fmt.Errorf("enrolment token must start with 1-%d characters of secret; copy the whole line cityhub enrol-token printed", MaxTokenSecretLen)
	}
	for _, c := range secret {
		if c <= ' ' || c > '~' || c == '~' {
			return "", "", errors.New("enrolment token contains spaces or characters cityhub never prints; copy the whole line cityhub enrol-token printed")
		}
	}
	if strings.Contains(tok, TokenPinSep) && certs.ValidPin(pin) != nil {
		return "", "", fmt.Errorf("the hub key pin after %q in the enrolment token is damaged (want 44 characters of base64); copy the whole line cityhub enrol-token printed", TokenPinSep)
	}
	return secret, pin, nil
}
