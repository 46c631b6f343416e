package bundle

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a release version MAJOR.MINOR.PATCH, each a decimal number
// without leading zeros. Pre-release suffixes are not supported on purpose:
// anti-rollback compares versions, and a total, obvious order matters more
// than expressiveness. Channels (stable/beta) are a property of a release,
// not of its version.
type Version [3]uint32

// ParseVersion parses "1.2.3".
func ParseVersion(s string) (Version, error) {
	var v Version
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("version %q must be MAJOR.MINOR.PATCH, e.g. 1.4.0", s)
	}
	for i, p := range parts {
		if p == "" || len(p) > 9 || (len(p) > 1 && p[0] == '0') {
			return v, fmt.Errorf("version %q: part %q must be a number of 1-9 digits without leading zeros", s, p)
		}
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return v, fmt.Errorf("version %q: part %q is not a number", s, p)
		}
		v[i] = uint32(n)
	}
	return v, nil
}

// MustVersion is ParseVersion for constants known to be valid.
func MustVersion(s string) Version {
	v, err := ParseVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

// Compare returns -1, 0 or +1.
func (v Version) Compare(o Version) int {
	for i := range v {
		switch {
		case v[i] < o[i]:
			return -1
		case v[i] > o[i]:
			return 1
		}
	}
	return 0
}

// CompareStrings compares two version strings; an invalid one is an error.
func CompareStrings(a, b string) (int, error) {
	va, err := ParseVersion(a)
	if err != nil {
		return 0, err
	}
	vb, err := ParseVersion(b)
	if err != nil {
		return 0, err
	}
	return va.Compare(vb), nil
}
