package appliance

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/discovery"
	"github.com/campusedge/campusedge/edge/httpapi"
)

// startDNSRegistration keeps the edge's unicast DNS-SD records in the
// school's zone (-dns-zone), so that terminals on other VLANs find it; a
// no-op without -dns-zone.
func (a *appliance) startDNSRegistration(ctx context.Context) error {
	cfg := a.cfg
	if cfg.DNSZone == "" {
		return nil
	}
	var key *discovery.TSIGKey
	if cfg.DNSTSIGKeyFile != "" {
		k, err := discovery.ReadTSIGKeyFile(cfg.DNSTSIGKeyFile)
		if err != nil {
			return fmt.Errorf("-dns-tsig-key-file: %w", err)
		}
		key = &k
	}
	log := a.log.With("component", "dns-sd")
	reg, err := discovery.Register(ctx, discovery.RegisterConfig{
		Zone: cfg.DNSZone, Server: cfg.DNSServer, Key: key,
		Instance: discovery.InstanceName(a.schoolName),
		Port:     a.port,
		Info:     discovery.Info{Version: "1", EdgeID: a.id.ID, School: cfg.School, API: "/api/v1", HTTPSPort: a.httpsPort},
		Addrs:    func() ([]netip.Addr, error) { return lanAddrs(cfg.MDNSInterfaces) },
		Logger:   log,
	})
	if err != nil {
		return err
	}
	a.regp.Store(reg)
	return nil
}

// lanAddrs are the addresses to publish: every interface's (as edge/certs
// lists them for the TLS leaf), or only those of -mdns-interfaces.
func lanAddrs(ifaces []string) ([]netip.Addr, error) {
	if len(ifaces) == 0 {
		return certs.InterfaceAddrs()
	}
	var out []netip.Addr
	for _, name := range ifaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			continue // a cable not yet plugged in; the next poll sees it
		}
		as, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, ad := range as {
			if p, ok := ad.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(p.IP); ok {
					out = append(out, ip.Unmap())
				}
			}
		}
	}
	return out, nil
}

// discoveryStatus is GET /api/v1/discovery: how terminals find this edge.
type discoveryStatus struct {
	MDNS *discovery.Status    `json:"mdns,omitempty"`
	DNS  *discovery.DNSStatus `json:"dns,omitempty"`
	// Links are the edge's HTTPS addresses and the classroom page's, each
	// with a QR code (a PNG data: URL) for a phone or a screen.
	Links []qrLink `json:"links"`
}

type qrLink struct {
	Label string `json:"label"`
	URL   string `json:"url"`
	QRPNG string `json:"qr_png"`
}

// mountDiscoveryAPI serves the console's discovery panel.
func (a *appliance) mountDiscoveryAPI() {
	a.srv.HandleFunc("GET /api/v1/discovery", a.srv.Admin(func(w http.ResponseWriter, r *http.Request) {
		pair := r.URL.Query().Get("pair")
		if pair != "" && !validCode(pair) {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid", "pair must be the 6-digit pairing code shown on the console")
			return
		}
		var st discoveryStatus
		if adv := a.advp.Load(); adv != nil {
			s := adv.Status()
			st.MDNS = &s
		}
		var dnsHost string
		if reg := a.regp.Load(); reg != nil {
			s := reg.Status()
			st.DNS = &s
			// Only a confirmed name: a QR code must not lead a phone to a
			// name the school's DNS does not have.
			if s.LastConfirmed != nil {
				dnsHost = strings.TrimSuffix(s.Host, ".")
			}
		}
		links, err := a.links(r, dnsHost, pair)
		if err != nil {
			httpapi.WriteError(w, http.StatusInternalServerError, "qr_failed", "cannot draw the QR code: "+err.Error())
			return
		}
		st.Links = links
		httpapi.WriteJSON(w, http.StatusOK, st)
	}))
}

func validCode(c string) bool {
	if len(c) != 6 {
		return false
	}
	for i := 0; i < len(c); i++ {
		if c[i] < '0' || c[i] > '9' {
			return false
		}
	}
	return true
}

// links are the addresses a phone or a screen on any segment can open:
// the DNS name when the school's DNS has it, else the address the console
// itself was opened at (when it is not loopback), else the first LAN
// address; then the classroom page there (with #pair=CODE to pre-fill).
func (a *appliance) links(r *http.Request, dnsHost, pair string) ([]qrLink, error) {
	port := a.httpsPort
	if port == 0 {
		return []qrLink{}, nil // HTTPS off: pages cannot use cameras, no link to give
	}
	host := dnsHost
	if host == "" {
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			if ip, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil && !ip.IsLoopback() {
				host = ip.String()
			}
		}
	}
	if host == "" {
		if as, err := lanAddrs(a.cfg.MDNSInterfaces); err == nil {
			for _, ip := range as {
				if !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
					host = ip.String()
					break
				}
			}
		}
	}
	if host == "" {
		return []qrLink{}, nil
	}
	base := (&url.URL{Scheme: "https", Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: "/"}).String()
	room := base + "classroom.html"
	if pair != "" {
		room += "#pair=" + pair
	}
	var out []qrLink
	for _, l := range []qrLink{{Label: "edge", URL: base}, {Label: "classroom", URL: room}} {
		png, err := qrcode.Encode(l.URL, qrcode.Medium, 256)
		if err != nil {
			return nil, err
		}
		l.QRPNG = "data:image/png;base64," + base64.StdEncoding.EncodeToString(png)
		out = append(out, l)
	}
	return out, nil
}
