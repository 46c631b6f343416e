package termagent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/text/width"

	"github.com/campusedge/campusedge/edge/discovery"
)

// FindOptions say how a terminal looks for its edge.
type FindOptions struct {
	Iface  string // interface for mDNS ("" = default)
	WantID string // the paired edge's id; "" accepts any edge
	// Pin is the paired edge's TLS key pin: a candidate must present this
	// key to be accepted. "" (not paired yet) checks only the edge id; the
	// pairing's key exchange then proves the key.
	Pin string
	// ResolvConf is the resolv.conf to read search domains and servers
	// from; "" means /etc/resolv.conf.
	ResolvConf string
	// MDNSTimeout bounds the mDNS step (0: 1.5 s: an edge on the segment
	// answers in milliseconds), DNSTimeout each unicast step (0: 4 s).
	MDNSTimeout, DNSTimeout time.Duration
	// All runs every method even after an edge is found (classterm -diagnose).
	All bool
	Log *slog.Logger
}

// Step is what one discovery method found, or why it found nothing.
type Step struct {
	Method  string        `json:"method"`           // "mdns", "dns-sd", "well-known"
	Domain  string        `json:"domain,omitempty"` // the search domain looked in
	Found   []string      `json:"found,omitempty"`  // edges that proved to be the wanted one
	Problem string        `json:"problem,omitempty"`
	Took    time.Duration `json:"took_ns"`
}

// FindResult is the edge found and how.
type FindResult struct {
	Found  discovery.Found
	Method string
	Steps  []Step
}

// Find looks for the edge in the order the network tells a terminal
// where to look: mDNS on its own segment, then unicast DNS-SD in each
// search domain of resolv.conf (following its b._dns-sd._udp and
// lb._dns-sd._udp browse domains), then the well-known name
// campusedge.<domain>. Each step is bounded in time and logged. The first
// candidate that proves to be the edge (its /api/v1/edge names the same id
// as the DNS answer, and the wanted one when paired, over TLS with the
// pinned key when paired) wins; answers naming another edge are ignored.
func Find(ctx context.Context, o FindOptions) (FindResult, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	o.MDNSTimeout = orDefault(o.MDNSTimeout, 1500*time.Millisecond)
	o.DNSTimeout = orDefault(o.DNSTimeout, 4*time.Second)
	var res FindResult
	record := func(s Step, start time.Time) {
		s.Took = time.Since(start)
		res.Steps = append(res.Steps, s)
		if s.Problem != "" {
			o.Log.Info("discovery step found no edge", "method", s.Method, "domain", s.Domain, "problem", s.Problem, "took", s.Took.Round(time.Millisecond))
		} else {
			o.Log.Info("discovery step found the edge", "method", s.Method, "domain", s.Domain, "found", strings.Join(s.Found, " "), "took", s.Took.Round(time.Millisecond))
		}
	}
	win := func(f discovery.Found, method string) bool {
		if res.Method == "" {
			res.Found, res.Method = f, method
		}
		return !o.All
	}

	start := time.Now()
	if f, err := o.mdns(ctx); err != nil {
		record(Step{Method: "mdns", Problem: err.Error()}, start)
	} else {
		record(Step{Method: "mdns", Found: []string{f.HTTPSURL}}, start)
		if win(f, "mdns") {
			return res, nil
		}
	}

	rc, err := discovery.ReadResolvConf(orString(o.ResolvConf, "/etc/resolv.conf"))
	switch {
	case err != nil:
		record(Step{Method: "dns-sd", Problem: err.Error()}, time.Now())
	case len(rc.Search) == 0:
		record(Step{Method: "dns-sd", Problem: "no search domain: resolv.conf has no search or domain line (the network's DHCP server gives none)"}, time.Now())
	case len(rc.Nameservers) == 0:
		record(Step{Method: "dns-sd", Problem: "no DNS server: resolv.conf has no nameserver line"}, time.Now())
	}
	r := &discovery.Resolver{Servers: rc.Nameservers, Timeout: time.Second}
	browse := map[string][]string{} // search domain → its browse domains, from the dns-sd step
	for _, method := range []string{"dns-sd", "well-known"} {
		for _, d := range rc.Search {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			start := time.Now()
			sctx, cancel := context.WithTimeout(ctx, o.DNSTimeout)
			var s Step
			var f discovery.Found
			if method == "dns-sd" {
				f, s, browse[d] = o.unicast(sctx, r, d)
			} else {
				f, s = o.wellKnown(sctx, r, d, browse[d])
			}
			cancel()
			record(s, start)
			if s.Problem == "" && win(f, method) {
				return res, nil
			}
		}
	}
	if res.Method != "" {
		return res, nil
	}
	var why []string
	for _, s := range res.Steps {
		why = append(why, s.Method+" "+s.Domain+": "+s.Problem)
	}
	return res, fmt.Errorf("no CampusEdge edge found (%s); run classterm -diagnose, or pass -edge https://EDGE:8443", strings.Join(why, "; "))
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func orString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// mdns browses the segment and verifies the edge that answers.
func (o FindOptions) mdns(ctx context.Context) (discovery.Found, error) {
	ctx, cancel := context.WithTimeout(ctx, o.MDNSTimeout)
	defer cancel()
	f, err := discovery.Browse(ctx, discovery.BrowseOptions{Interface: o.Iface, EdgeID: o.WantID, Logger: o.Log})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return f, fmt.Errorf("no answer within %s (multicast does not cross a router: is the edge on another segment?)", o.MDNSTimeout)
		}
		return f, err
	}
	if _, err := o.verify(ctx, f.HTTPSURL, f.Info.EdgeID); err != nil {
		return f, err
	}
	return f, nil
}

// unicast is DNS-SD in one search domain and its browse domains.
func (o FindOptions) unicast(ctx context.Context, r *discovery.Resolver, domain string) (discovery.Found, Step, []string) {
	s := Step{Method: "dns-sd", Domain: domain}
	browse, berr := discovery.BrowseDomains(ctx, r, domain)
	if berr != nil {
		o.Log.Debug("no browse domain named", "domain", domain, "err", berr)
	}
	var problems []string
	for _, b := range browse {
		found, skipped, err := discovery.UnicastBrowse(ctx, r, b, o.WantID, o.Log)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		problems = append(problems, skipped...)
		for _, f := range found {
			if _, err := o.verify(ctx, f.HTTPSURL, f.Info.EdgeID); err != nil {
				o.Log.Info("ignoring a DNS-SD answer", "instance", f.Instance, "err", err)
				problems = append(problems, err.Error())
				continue
			}
			s.Found = []string{f.HTTPSURL}
			return f, s, browse
		}
	}
	s.Problem = strings.Join(problems, "; ")
	if berr != nil {
		s.Problem += " (browse domains: " + berr.Error() + ")"
	}
	return discovery.Found{}, s, browse
}

// wellKnown tries campusedge.<domain>, then campusedge.<browse domain>
// for each browse domain the network names, on the default HTTPS port.
func (o FindOptions) wellKnown(ctx context.Context, r *discovery.Resolver, domain string, browse []string) (discovery.Found, Step) {
	s := Step{Method: "well-known", Domain: domain}
	var problems []string
	for _, d := range append([]string{domain}, browse...) {
		if d == domain && len(problems) > 0 {
			continue // browse lists the search domain itself last
		}
		f, err := o.wellKnownIn(ctx, r, d)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		s.Found = []string{f.HTTPSURL}
		return f, s
	}
	s.Problem = strings.Join(problems, "; ")
	return discovery.Found{}, s
}

func (o FindOptions) wellKnownIn(ctx context.Context, r *discovery.Resolver, domain string) (discovery.Found, error) {
	host := discovery.WellKnownHost + "." + domain
	ips, err := discovery.LookupAddrs(ctx, r, host)
	if err != nil {
		return discovery.Found{}, err
	}
	var problems []string
	for _, ip := range ips {
		u := (&url.URL{Scheme: "https", Host: net.JoinHostPort(ip.String(), strconv.Itoa(DefaultHTTPSPort))}).String()
		e, err := o.verify(ctx, u, "")
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		f := discovery.Found{Instance: e.SchoolName, Host: host, Addr: ip.AsSlice(), Port: DefaultHTTPSPort, HTTPSURL: u,
			Info: discovery.Info{Version: "1", EdgeID: e.ID, School: e.School, API: "/api/v1", HTTPSPort: DefaultHTTPSPort}}
		return f, nil
	}
	return discovery.Found{}, errors.New(strings.Join(problems, "; "))
}

// EdgeInfo is the part of GET /api/v1/edge that discovery checks.
type EdgeInfo struct {
	ID         string `json:"id"`
	School     string `json:"school"`
	SchoolName string `json:"school_name"`
	HTTPSPort  int    `json:"https_port"`
}

// ParseEdgeInfo reads an /api/v1/edge answer; the id must look like one.
func ParseEdgeInfo(data []byte) (EdgeInfo, error) {
	var e EdgeInfo
	if len(data) > 64<<10 {
		return e, errors.New("answer too large")
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("answer is not the edge's JSON: %w", err)
	}
	if err := discovery.ValidEdgeID(e.ID); err != nil {
		return e, err
	}
	return e, nil
}

// verify asks the candidate who it is. It must name the id the DNS answer
// named (txtID, when there is one) and, when paired, the wanted id with
// the pinned key.
func (o FindOptions) verify(ctx context.Context, httpsURL, txtID string) (EdgeInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var client *http.Client
	if o.Pin != "" {
		client = PinnedClient(o.Pin)
	} else {
		// Not paired yet: there is no key to trust. The id is checked
		// here; the pairing's code-bound key exchange proves the key.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // see above
		client = &http.Client{Transport: tr}
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(httpsURL, "/")+"/api/v1/edge", nil)
	if err != nil {
		return EdgeInfo{}, err
	}
	res, err := client.Do(req)
	if err != nil {
		return EdgeInfo{}, fmt.Errorf("%s does not answer as the edge: %w", httpsURL, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<10+1))
	if err != nil || res.StatusCode != http.StatusOK {
		return EdgeInfo{}, fmt.Errorf("%s: GET /api/v1/edge: status %d %v", httpsURL, res.StatusCode, err)
	}
	e, err := ParseEdgeInfo(data)
	if err != nil {
		return e, fmt.Errorf("%s: %w", httpsURL, err)
	}
	switch {
	case txtID != "" && e.ID != txtID:
		return e, fmt.Errorf("%s is edge %s, not %s as its DNS record says: ignored", httpsURL, e.ID, txtID)
	case o.WantID != "" && e.ID != o.WantID:
		return e, fmt.Errorf("%s is another edge (%s), not this terminal's edge %s: ignored", httpsURL, e.ID, o.WantID)
	}
	return e, nil
}

// NormalizeCode turns a pairing code as typed into ASCII digits:
// full-width digits (０-９, what a Chinese input method types) become 0-9,
// and spaces around it are dropped.
func NormalizeCode(code string) string {
	return width.Fold.String(strings.TrimSpace(code))
}
