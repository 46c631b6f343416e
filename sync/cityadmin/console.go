package cityadmin

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// consoleHandler serves the console's files under /console/. The page
// loads nothing from elsewhere (a city office may have no internet), and
// the policy says so to the browser.
func consoleHandler() http.Handler {
	sub, _ := fs.Sub(static, "static")
	files := http.StripPrefix("/console/", http.FileServer(http.FS(sub)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	})
}
