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
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Handler serves the console's static files, /common.js among them, at "/".
func Handler() http.Handler {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return FileServer(sub)
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
