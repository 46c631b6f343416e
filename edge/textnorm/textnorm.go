// Package textnorm reads text as people in a Chinese school type it:
// full-width digits and punctuation from an input method (`１２`, `，`,
// `（３）`) fold to their ASCII forms, lists split on the separators people
// actually use (`,` `，` `、` `;` `；` and new lines), and school data —
// classes, rooms, teachers, subjects, pupils — gets a stable ASCII code
// next to a display name in any script, derived from the name when an
// import leaves the code out. It is the one place these rules live, so an
// import, a room code typed in the console and a quiz typed on the teacher
// page agree.
package textnorm

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
	"golang.org/x/text/width"
)

// Limits for school data.
const (
	// MaxCode is the longest code in bytes (codes are ASCII).
	MaxCode = 64
	// MaxName is the longest display name in characters: long enough for
	// "新疆维吾尔自治区克拉玛依市第一中学初一(3)班" or a full Uyghur name
	// written in Chinese characters with its '·'.
	MaxName = 64
)

// Fold folds full-width (and half-width) forms to their canonical widths —
// `１２３` to `123`, `，` to `,`, `（` to `(` — and trims surrounding spaces,
// the ideographic space U+3000 among them. Chinese characters are left as
// they are.
func Fold(s string) string {
	return strings.TrimSpace(width.Fold.String(s))
}

// Split splits a list typed by a person: items separated by `,` `，` `、`
// `;` `；` or new lines, each folded and trimmed; empty items are dropped.
func Split(s string) []string {
	f := func(r rune) bool {
		switch r {
		case ',', '，', '、', ';', '；', '\n', '\r':
			return true
		}
		return false
	}
	out := []string{}
	for _, p := range strings.FieldsFunc(s, f) {
		if p = Fold(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ValidCode reports whether s is a code: 1-64 ASCII letters, digits, '.',
// '_' or '-'. Codes key data in the store, URLs and the sync wire, so they
// stay ASCII; people see display names.
func ValidCode(s string) bool {
	if s == "" || len(s) > MaxCode {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidName reports whether s is a display name: 1-64 printable characters
// of any script (so `初一(3)班`, `李老师` and `阿依古丽·吐尔逊`), valid UTF-8,
// no surrounding spaces.
func ValidName(s string) bool {
	if s == "" || !utf8.ValidString(s) || strings.TrimSpace(s) != s || utf8.RuneCountInString(s) > MaxName {
		return false
	}
	for _, c := range s {
		if !unicode.IsPrint(c) && c != '\u3000' {
			return false
		}
	}
	return true
}

// Code returns the code for a display name: the name itself, folded, when
// that is already a code (`7A`, `R101`, `ＲＯＯＭ１` → `ROOM1`), else prefix
// followed by a hash of the folded, NFC-normalised name. The same name
// gives the same code on every import, on every machine, so a roster and a
// timetable imported separately name the same class, and a re-import keeps
// every record's link; `初一（3）班` and `初一(3)班` are one class.
func Code(prefix, name string) string {
	f := Fold(name)
	if ValidCode(f) {
		return f
	}
	sum := sha256.Sum256([]byte(norm.NFC.String(f)))
	return prefix + strings.ToLower(base32.StdEncoding.EncodeToString(sum[:])[:10])
}
