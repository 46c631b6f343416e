package api

import (
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/campusedge/campusedge/edge/httpapi"
)

// pprofPrefix is where the Go runtime's profiles are served (admin only):
// an operator takes a heap profile of a running edge without restarting
// it, e.g. to see what a school day left behind (issue 21):
//
//	curl -H "Authorization: Bearer $(cat DATA/admin-token)" \
//	  http://127.0.0.1:8080/api/v1/debug/pprof/heap?gc=1 > heap.pb.gz
//	go tool pprof -top heap.pb.gz
const pprofPrefix = "/api/v1/debug/pprof/"

// debugPprof serves net/http/pprof under pprofPrefix. The standard
// handlers expect /debug/pprof/, so the name is taken from the path here:
// "" is the index (its links are relative and work under this prefix),
// cmdline, profile (CPU, ?seconds=N), symbol and trace have their own
// handlers, and any other name is a runtime profile (heap, allocs,
// goroutine, block, mutex, threadcreate; ?debug=1 for text, ?gc=1 to
// collect garbage before a heap profile).
func (s *Server) debugPprof(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, pprofPrefix)
	switch name {
	case "":
		pprof.Index(w, r)
	case "cmdline":
		pprof.Cmdline(w, r)
	case "profile":
		pprof.Profile(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "trace":
		pprof.Trace(w, r)
	default:
		if !knownProfile(name) {
			httpapi.WriteError(w, http.StatusNotFound, "not_found", "no such profile: "+name+" (GET "+pprofPrefix+" lists them)")
			return
		}
		pprof.Handler(name).ServeHTTP(w, r)
	}
}

// knownProfile reports whether name is a runtime/pprof profile: the
// standard handler would answer an unknown one with its own plain-text
// 404, not the API's error shape.
func knownProfile(name string) bool {
	switch name {
	case "heap", "allocs", "goroutine", "block", "mutex", "threadcreate":
		return true
	}
	return false
}
