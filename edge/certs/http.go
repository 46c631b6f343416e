package certs

import (
	"net/http"

	"github.com/campusedge/campusedge/edge/api"
	"github.com/campusedge/campusedge/edge/httpapi"
)

// CAPath is where the root to trust is downloaded, on HTTP and HTTPS alike:
// a device that does not trust the edge yet must be able to fetch it.
const CAPath = "/api/v1/tls/ca.pem"

// Register adds GET /api/v1/tls (what is served, for the console) and the
// CA download. Both are public: a certificate and its fingerprint are what
// every client sees in the handshake anyway.
func (m *Manager) Register(s *api.Server) {
	s.HandleFunc("GET /api/v1/tls", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, m.Status())
	})
	s.HandleFunc("GET "+CAPath, func(w http.ResponseWriter, r *http.Request) {
		b := m.CAPEM()
		if b == nil {
			httpapi.WriteError(w, http.StatusNotFound, "no_ca", "this edge serves the operator's certificate (-tls-cert); trust the CA that issued it")
			return
		}
		// application/x-x509-ca-cert makes Android, ChromeOS and Windows
		// offer to install it; the name says whose it is.
		w.Header().Set("Content-Type", "application/x-x509-ca-cert")
		w.Header().Set("Content-Disposition", `attachment; filename="campusedge-ca.crt"`)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(b)
	})
}
