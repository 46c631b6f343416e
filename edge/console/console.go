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
