package pages_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/campusedge/campusedge/classroom/pages"
	"github.com/campusedge/campusedge/edge/console"
)

// The live-class pages come from this package and the console from its
// own, at the same URLs as ever and with the same security headers; the
// console no longer ships the live pages.
func TestPagesAndConsoleServedApart(t *testing.T) {
	site := pages.With(console.Handler())
	for _, c := range []struct{ path, want string }{
		{"/teacher.html", "CampusEdge — teacher"},
		{"/classroom.html", "CampusEdge — classroom"},
		{"/class.js", "class Conn"},
		{"/", "CampusEdge console"},
		{"/common.js", "window.ce"},
	} {
		rec := httptest.NewRecorder()
		site.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.path, nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("GET %s: %d, body without %q", c.path, rec.Code, c.want)
		}
		if got := rec.Header().Get("Content-Security-Policy"); !strings.Contains(got, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", c.path, got)
		}
		if got := rec.Header().Get("X-Frame-Options"); got != "DENY" {
			t.Errorf("GET %s: X-Frame-Options %q", c.path, got)
		}
	}
	rec := httptest.NewRecorder()
	console.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/teacher.html", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("the console alone serves /teacher.html: %d", rec.Code)
	}
}
