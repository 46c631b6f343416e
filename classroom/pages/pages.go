// Package pages embeds the live-class web pages — the teacher's page
// (/teacher.html) and a classroom's big screen (/classroom.html), with the
// client they share (/class.js, /class.css) — so that the live-class
// capability ships its own front end and the admin console only the
// console. The pages are served with the console's security headers
// (console.FileServer) and load the edge's shared /common.js, which the
// console serves at "/".
package pages

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/campusedge/campusedge/edge/console"
)

//go:embed static
var files embed.FS

// Mux is where Register adds the pages: the edge's *api.Server, or an
// *http.ServeMux.
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Register serves each page at its own path ("GET /teacher.html", …) on
// mux, so that "/" stays the console's.
func Register(mux Mux) {
	sub := static()
	h := console.FileServer(sub)
	entries, err := fs.ReadDir(sub, ".")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	for _, e := range entries {
		mux.Handle("GET /"+e.Name(), h)
	}
}

// With serves the pages at their paths and passes every other request to
// next (the console): Register for a caller that takes one handler for
// all of "/".
func With(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", next)
	Register(mux)
	return mux
}

func static() fs.FS {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}
