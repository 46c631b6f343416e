package classroom

import (
	"net/http"

	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/httpapi"
)

// CORS for WHIP and WHEP (RFC 9725 §4.4 and the WHEP draft): a web
// publisher or player on another origin — a master teacher's page on the
// city's site, a school's own player — must be able to POST its offer here
// and DELETE its resource afterwards, so every WHIP/WHEP route answers the
// browser's preflight and marks its responses, errors included (a client
// that cannot read a 401 or 409 cannot tell the user what went wrong).
//
// Any origin is allowed on purpose: these routes authenticate with a bearer
// token in the Authorization header, never with cookies, and a page can
// only send a token it already holds. Allowing an origin therefore grants
// nothing a script could not do by itself; Access-Control-Allow-Credentials
// is never sent, so browsers will not attach cookies or client
// certificates to these requests either.
const (
	corsAllowHeaders = "Authorization, Content-Type, If-Match"
	// corsExposeHeaders are the response headers a cross-origin script may
	// read: Location names the resource to DELETE. (No Link or ETag header
	// is sent — no ICE servers are advertised and ICE restart is not
	// supported — so none is exposed.)
	corsExposeHeaders = "Location"
	// corsMaxAge lets a browser reuse a preflight for a day (Chromium caps
	// it at two hours); a publish retried on a flaky link skips the extra
	// round trip.
	corsMaxAge = "86400"

	endpointMethods = "POST, OPTIONS"
	// PATCH is listed although this edge answers it 405: a client that
	// trickles must get that answer (RFC 9725 §4.3.1) rather than a failed
	// preflight, which fetch reports as a network error.
	resourceMethods = "PATCH, DELETE, OPTIONS"
	// resourceAllow is the HTTP Allow header of a resource: what succeeds.
	resourceAllow = "DELETE, OPTIONS"
)

// withCORS marks an actual WHIP/WHEP response as readable by any origin.
func withCORS(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", "*")
		hd.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		h(w, r)
	}
}

// preflight answers OPTIONS on a WHIP/WHEP endpoint (endpoint true: it
// takes POST) or on one of its resources.
func preflight(endpoint bool) http.HandlerFunc {
	methods, allow := resourceMethods, resourceAllow
	if endpoint {
		methods, allow = endpointMethods, endpointMethods
	}
	return withCORS(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Allow", allow)
		hd.Set("Access-Control-Allow-Methods", methods)
		hd.Set("Access-Control-Allow-Headers", corsAllowHeaders)
		hd.Set("Access-Control-Max-Age", corsMaxAge)
		if endpoint {
			// RFC 9725 §4.4: say which body POST takes.
			hd.Set("Accept-Post", "application/sdp")
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// wrongMethod answers any other method on a WHIP/WHEP path, with CORS so
// that a cross-origin client can read why.
func wrongMethod(endpoint bool) http.HandlerFunc {
	allow := resourceAllow
	if endpoint {
		allow = endpointMethods
	}
	return withCORS(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		httpapi.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here; use "+allow)
	})
}

// registerWHIPWHEP mounts WHIP (publish) and WHEP (watch) with their CORS
// preflights.
func (l *Live) registerWHIPWHEP(srv *api.Server) {
	for _, kind := range []struct {
		prefix string
		post   http.HandlerFunc
		master bool
	}{{"/whip/", l.whip, true}, {"/whep/", l.whep, false}} {
		endpoint := kind.prefix + "{session}"
		resource := endpoint + "/{resource}"
		srv.HandleFunc("POST "+endpoint, withCORS(kind.post))
		srv.HandleFunc("OPTIONS "+endpoint, preflight(true))
		srv.HandleFunc(endpoint, wrongMethod(true))
		srv.HandleFunc("DELETE "+resource, withCORS(l.deleteResource(kind.master)))
		srv.HandleFunc("PATCH "+resource, withCORS(noTrickle))
		srv.HandleFunc("OPTIONS "+resource, preflight(false))
		srv.HandleFunc(resource, wrongMethod(false))
	}
}
