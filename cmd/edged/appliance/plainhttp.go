package appliance

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/httpapi"
)

// plainHTTP is what the edge answers on plain HTTP once HTTPS is on. Only
// what must work without TLS is served to other hosts: liveness and metrics
// (monitoring), micro-lessons (players that cannot do TLS), the edge's
// public facts (a page opened over HTTP reads the HTTPS port from them) and
// the CA certificate (a device must fetch it before it can trust HTTPS).
// Pages are redirected to HTTPS; everything that carries a token is refused,
// so that no token crosses the school's LAN or Wi-Fi in clear. Requests from
// the appliance itself (loopback) are served whole: local tools never put
// a token on the network.
type plainHTTP struct {
	next      http.Handler
	httpsPort int
	redirect  bool // -https-redirect
}

func (p plainHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.httpsPort == 0 || fromLoopback(r) || plainAllowed(r.URL.Path) {
		p.next.ServeHTTP(w, r)
		return
	}
	page := !strings.HasPrefix(r.URL.Path, "/api/") && !strings.HasPrefix(r.URL.Path, "/whip/") && !strings.HasPrefix(r.URL.Path, "/whep/")
	if page && !p.redirect {
		p.next.ServeHTTP(w, r) // behind a TLS-terminating proxy; pages explain themselves
		return
	}
	target := "https://" + net.JoinHostPort(hostOnly(r.Host), strconv.Itoa(p.httpsPort)) + r.URL.RequestURI()
	if page && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		http.Redirect(w, r, target, http.StatusPermanentRedirect)
		return
	}
	w.Header().Set("Location", target)
	httpapi.WriteError(w, http.StatusForbidden, "https_required",
		"this request carries credentials and is only accepted over HTTPS: use "+target)
}

func plainAllowed(path string) bool {
	switch path {
	case "/healthz", "/metrics", "/api/v1/edge", certs.CAPath:
		return true
	}
	return strings.HasPrefix(path, "/media/")
}

func fromLoopback(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// hostOnly strips a port from a Host header value ("10.0.0.2:8080",
// "[fe80::1]:8080", "edge.local").
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return strings.Trim(h, "[]")
}
