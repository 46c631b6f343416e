package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ResolvConf is what a terminal's resolv.conf says about where to look.
type ResolvConf struct {
	Nameservers []string // host:port
	// Search is the search list ("search" or, if none, "domain"), fully
	// qualified, in order.
	Search []string
}

// Bounds on resolv.conf: glibc reads at most 3 nameservers and 6 search
// domains; a little more is kept, never an unbounded list.
const (
	maxResolvConf  = 64 << 10
	maxNameservers = 8
	maxSearch      = 8
)

// ReadResolvConf reads a resolv.conf file (normally /etc/resolv.conf,
// which DHCP fills with the network's DNS servers and search domain).
func ReadResolvConf(path string) (ResolvConf, error) {
	f, err := os.Open(path)
	if err != nil {
		return ResolvConf{}, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	buf := make([]byte, maxResolvConf)
	n, _ := f.Read(buf)
	return ParseResolvConf(buf[:n]), nil
}

// ParseResolvConf reads nameserver, search and domain lines; everything
// else, and anything malformed, is ignored the way the C library does.
// The last search or domain line wins.
func ParseResolvConf(text []byte) ResolvConf {
	if len(text) > maxResolvConf {
		text = text[:maxResolvConf]
	}
	var rc ResolvConf
	var search, domain []string
	for _, line := range strings.Split(string(text), "\n") {
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			ip, err := netip.ParseAddr(f[1])
			if err != nil || len(rc.Nameservers) >= maxNameservers {
				continue
			}
			rc.Nameservers = append(rc.Nameservers, netip.AddrPortFrom(ip, 53).String())
		case "search":
			search = domains(f[1:])
			domain = nil
		case "domain":
			domain = domains(f[1:2])
			search = nil
		}
	}
	rc.Search = search
	if rc.Search == nil {
		rc.Search = domain
	}
	return rc
}

func domains(names []string) []string {
	var out []string
	for _, n := range names {
		n = strings.ToLower(dns.Fqdn(n))
		if _, ok := dns.IsDomainName(n); !ok || n == "." || n == "local." || strings.ContainsAny(n, "\\\"") || slices.Contains(out, n) {
			continue
		}
		if out = append(out, n); len(out) == maxSearch {
			break
		}
	}
	return out
}

// Resolver asks unicast DNS servers directly, so that a terminal can ask
// for PTR, SRV and TXT records (the system resolver only looks up hosts).
type Resolver struct {
	Servers []string      // host:port, tried in order
	Timeout time.Duration // per query and server; 0 means 1 s
	// Dial, if set, opens the connections (tests dial from inside a
	// network namespace); nil means the system's dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DNSError is a query's negative answer, for diagnosis.
type DNSError struct {
	Name  string
	Type  string
	Rcode int // dns.RcodeNameError is NXDOMAIN; RcodeSuccess with no records is NODATA
}

func (e *DNSError) Error() string {
	switch e.Rcode {
	case dns.RcodeNameError:
		return fmt.Sprintf("%s %s: NXDOMAIN (no such name)", e.Name, e.Type)
	case dns.RcodeSuccess:
		return fmt.Sprintf("%s %s: no such record (NODATA)", e.Name, e.Type)
	}
	return fmt.Sprintf("%s %s: %s", e.Name, e.Type, dns.RcodeToString[e.Rcode])
}

func isNoData(err error) bool {
	var de *DNSError
	return errors.As(err, &de) && (de.Rcode == dns.RcodeSuccess || de.Rcode == dns.RcodeNameError)
}

// Query asks each server in turn for name's records of type t; the first
// server that answers decides. A truncated UDP answer is asked again over
// TCP. An answer without records of type t is a *DNSError.
func (r *Resolver) Query(ctx context.Context, name string, t uint16) (*dns.Msg, error) {
	if len(r.Servers) == 0 {
		return nil, errors.New("no DNS server (resolv.conf has no nameserver line)")
	}
	timeout := orDur(r.Timeout, time.Second)
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), t)
	q.RecursionDesired = true
	q.SetEdns0(1232, false)
	var errs []error
	for _, s := range r.Servers {
		if ctx.Err() != nil {
			break
		}
		m, err := r.exchange(ctx, q, s, "udp", timeout)
		if err == nil && m.Truncated {
			m, err = r.exchange(ctx, q, s, "tcp", timeout)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("server %s: %w", s, err))
			continue
		}
		if m.Rcode == dns.RcodeServerFailure || m.Rcode == dns.RcodeRefused {
			errs = append(errs, fmt.Errorf("server %s: %s", s, dns.RcodeToString[m.Rcode]))
			continue
		}
		for _, rr := range m.Answer {
			if rr.Header().Rrtype == t {
				return m, nil
			}
		}
		return m, &DNSError{Name: q.Question[0].Name, Type: dns.TypeToString[t], Rcode: m.Rcode}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("%s %s: %w", name, dns.TypeToString[t], errors.Join(errs...))
}

func (r *Resolver) exchange(ctx context.Context, q *dns.Msg, server, network string, timeout time.Duration) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &dns.Client{Net: network, Timeout: timeout, UDPSize: 1232}
	if r.Dial == nil {
		m, _, err := c.ExchangeContext(ctx, q, server)
		return m, err
	}
	conn, err := r.Dial(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	m, _, err := c.ExchangeWithConnContext(ctx, q, &dns.Conn{Conn: conn, UDPSize: 1232})
	return m, err
}

// BrowseDomains returns the browse domains a network names for domain
// (RFC 6763 section 11: PTR records at b._dns-sd._udp.<domain> and
// lb._dns-sd._udp.<domain>), then domain itself, without repeats. The
// error explains why no browse domain was named, for diagnosis; the
// result still holds domain.
func BrowseDomains(ctx context.Context, r *Resolver, domain string) ([]string, error) {
	domain = strings.ToLower(dns.Fqdn(domain))
	var out []string
	var errs []error
	for _, p := range []string{"b._dns-sd._udp.", "lb._dns-sd._udp."} {
		m, err := r.Query(ctx, p+domain, dns.TypePTR)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range m.Answer {
			ptr, ok := rr.(*dns.PTR)
			if !ok || len(out) >= maxSearch {
				continue
			}
			d := strings.ToLower(dns.Fqdn(ptr.Ptr))
			if _, ok := dns.IsDomainName(d); ok && d != "." && !slices.Contains(out, d) {
				out = append(out, d)
			}
		}
	}
	if !slices.Contains(out, domain) {
		out = append(out, domain)
	}
	return out, errors.Join(errs...)
}

// maxInstances bounds how many instances of one browse domain are
// resolved: a zone is the school's, but an answer can come from anyone.
const maxInstances = 16

// UnicastBrowse lists the edges registered in domain: PTR
// _campusedge._tcp.<domain>, then each instance's SRV and TXT and its
// host's addresses. Instances whose TXT record does not parse, or with
// another edge id than wantID (when set), are skipped and logged; skipped
// says why each was, for diagnosis.
func UnicastBrowse(ctx context.Context, r *Resolver, domain, wantID string, log *slog.Logger) (found []Found, skipped []string, err error) {
	if log == nil {
		log = slog.Default()
	}
	svc := serviceIn(strings.ToLower(domain))
	m, err := r.Query(ctx, svc, dns.TypePTR)
	if err != nil {
		return nil, nil, err
	}
	n := 0
	for _, rr := range m.Answer {
		ptr, ok := rr.(*dns.PTR)
		if !ok || !sameName(rr.Header().Name, svc) {
			continue
		}
		if n++; n > maxInstances {
			break
		}
		f, why := resolveInstance(ctx, r, ptr.Ptr, svc, wantID)
		if why != "" {
			log.Debug("ignoring a DNS-SD instance", "name", ptr.Ptr, "why", why)
			skipped = append(skipped, why)
			continue
		}
		found = append(found, f...)
	}
	if len(found) == 0 && len(skipped) == 0 {
		return nil, nil, fmt.Errorf("%s: no instance named", svc)
	}
	return found, skipped, nil
}

// resolveInstance resolves one instance name to candidates, one per
// address; why says why it is unusable.
func resolveInstance(ctx context.Context, r *Resolver, name, svc, wantID string) ([]Found, string) {
	inst, ok := instanceIn(name, svc)
	if !ok {
		return nil, fmt.Sprintf("%s is not an instance of %s", truncate(name), svc)
	}
	txt, err := r.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, fmt.Sprintf("%s: %v", inst, err)
	}
	var info Info
	var perr error = errors.New("no TXT record")
	for _, rr := range txt.Answer {
		if t, ok := rr.(*dns.TXT); ok && sameName(t.Hdr.Name, name) {
			info, perr = ParseTXT(t.Txt)
			break
		}
	}
	if perr != nil {
		return nil, fmt.Sprintf("%s: bad TXT record: %v", inst, perr)
	}
	if wantID != "" && info.EdgeID != wantID {
		return nil, fmt.Sprintf("%s: another edge (id %s, this terminal's edge is %s)", inst, info.EdgeID, wantID)
	}
	srvm, err := r.Query(ctx, name, dns.TypeSRV)
	if err != nil {
		return nil, fmt.Sprintf("%s: %v", inst, err)
	}
	var srv *dns.SRV
	for _, rr := range srvm.Answer {
		if s, ok := rr.(*dns.SRV); ok && sameName(s.Hdr.Name, name) && s.Port != 0 {
			srv = s
			break
		}
	}
	if srv == nil {
		return nil, fmt.Sprintf("%s: no usable SRV record", inst)
	}
	ips, err := LookupAddrs(ctx, r, srv.Target)
	if err != nil {
		return nil, fmt.Sprintf("%s: host %s: %v", inst, srv.Target, err)
	}
	var out []Found
	for _, ip := range ips {
		out = append(out, newFound(inst, srv.Target, net.IP(ip.AsSlice()), "", int(srv.Port), info))
	}
	return out, ""
}

// LookupAddrs returns host's IPv4 then IPv6 addresses (at most 8).
func LookupAddrs(ctx context.Context, r *Resolver, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	var errs []error
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m, err := r.Query(ctx, host, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, a := range addrsOf(m) {
			if !a.IsUnspecified() && !a.IsMulticast() && len(out) < 8 {
				out = append(out, a)
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// instanceIn returns the instance label of name if name is an instance of
// the service svc ("<label>.<svc>"), unescaped.
func instanceIn(name, svc string) (string, bool) {
	var buf [256]byte
	n, err := dns.PackDomainName(dns.Fqdn(name), buf[:], 0, nil, false)
	if err != nil || n < 1 {
		return "", false
	}
	l := int(buf[0])
	if l == 0 || 1+l > n {
		return "", false
	}
	rest, ok := canonical(svc)
	if !ok {
		return "", false
	}
	tail := []byte(strings.Clone(string(buf[1+l : n])))
	for i, c := range tail {
		if c >= 'A' && c <= 'Z' {
			tail[i] = c + 'a' - 'A'
		}
	}
	if string(tail) != rest {
		return "", false
	}
	return string(buf[1 : 1+l]), true
}
