// Package console embeds the admin web console so that it is served by
// edged itself and works on a school LAN with no internet at all. It also
// holds what every page of the edge shares: /common.js (requests, time,
// element building, storage keys; loaded first by each page) and
// FileServer, which serves a set of pages with the edge's security headers.
// The live-class pages are the live-class capability's own
// (classroom/pages) and use both.
package console

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var files embed.FS

// Handler serves the console's static files, /common.js and /i18n.js
// among them, at "/", and /i18n/languages.json: the languages there is a
// catalogue for (static/i18n/<tag>.json), each by its own name.
func Handler() http.Handler {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	langs, err := Languages()
	if err != nil {
		panic(err) // likewise: a broken catalogue fails every test
	}
	list, _ := json.Marshal(langs)
	files := FileServer(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/i18n/languages.json" {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-cache")
			_, _ = w.Write(list)
			return
		}
		files.ServeHTTP(w, r)
	})
}

// Languages maps each language tag there is a catalogue for to the
// language's own name (the catalogue's "language.name").
func Languages() (map[string]string, error) {
	out := map[string]string{}
	ents, err := fs.ReadDir(files, "static/i18n")
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		tag, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || tag == "languages" {
			continue
		}
		cat, err := Catalogue(tag)
		if err != nil {
			return nil, err
		}
		out[tag] = cat["language.name"]
	}
	return out, nil
}

// Catalogue is the message catalogue of a language tag.
func Catalogue(tag string) (map[string]string, error) {
	b, err := files.ReadFile("static/i18n/" + tag + ".json")
	if err != nil {
		return nil, fmt.Errorf("no catalogue for language %q: %w", tag, err)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("catalogue %s: %w", tag, err)
	}
	return m, nil
}

// FileServer serves fsys as pages of the edge. Every set of pages goes
// through it so that their headers cannot drift apart.
func FileServer(fsys fs.FS) http.Handler {
	fsrv := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The pages hold admin and session tokens; keep them out of frames
		// and other origins.
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:")
		w.Header().Set("Cache-Control", "no-cache")
		fsrv.ServeHTTP(w, r)
	})
}

// Translator formats catalogue messages in one language for Go code that
// speaks to people outside a page (cityhub's import errors on a Chinese
// operator's terminal): the same catalogue, so the page and the command
// line say the same thing.
type Translator struct {
	msgs, fallback map[string]string
}

// NewTranslator is a Translator for tag, falling back to English for a
// missing key and to English altogether for a language without a
// catalogue.
func NewTranslator(tag string) *Translator {
	en, _ := Catalogue("en")
	msgs, err := Catalogue(tag)
	if err != nil {
		msgs = en
	}
	return &Translator{msgs: msgs, fallback: en}
}

// Has reports whether the catalogue has key.
func (t *Translator) Has(key string) bool {
	_, ok := t.msgs[key]
	if !ok {
		_, ok = t.fallback[key]
	}
	return ok
}

// T is key with {name} replaced from vars, as i18n.js's t does.
func (t *Translator) T(key string, vars map[string]string) string {
	s, ok := t.msgs[key]
	if !ok {
		if s, ok = t.fallback[key]; !ok {
			return key
		}
	}
	for k, v := range vars {
		s = strings.ReplaceAll(s, "{"+k+"}", v)
	}
	return s
}

// Problem is one import problem (csvin.Problem's fields) in the language,
// as the console's i18n.problem shows it; msg is the English text used
// for a code the catalogue lacks.
func (t *Translator) Problem(row int, column, code string, args map[string]string, msg string) string {
	where := ""
	switch {
	case row > 0 && column != "":
		where = t.T("import.at_column", map[string]string{"row": fmt.Sprint(row), "column": column})
	case row > 0:
		where = t.T("import.at_row", map[string]string{"row": fmt.Sprint(row)})
	}
	if !t.Has("import." + code) {
		return where + msg
	}
	vars := map[string]string{"row": fmt.Sprint(row), "column": column}
	for k, v := range args {
		vars[k] = v
	}
	return where + t.T("import."+code, vars)
}

// LanguageFromEnv is the catalogue tag for a POSIX locale (LC_ALL,
// LC_MESSAGES, LANG as getenv gives them): zh_CN.UTF-8 → zh-CN; "en"
// when none names a language there is a catalogue for.
func LanguageFromEnv(getenv func(string) string) string {
	langs, _ := Languages()
	for _, v := range []string{getenv("LC_ALL"), getenv("LC_MESSAGES"), getenv("LANG")} {
		if v == "" {
			continue
		}
		tag, _, _ := strings.Cut(v, ".")
		tag = strings.ReplaceAll(tag, "_", "-")
		if _, ok := langs[tag]; ok {
			return tag
		}
		base, _, _ := strings.Cut(tag, "-")
		for l := range langs {
			if l == base || strings.HasPrefix(l, base+"-") {
				return l
			}
		}
		return "en" // the first locale set decides, as in libc
	}
	return "en"
}
