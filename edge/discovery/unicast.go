package discovery

// Unicast DNS-SD (RFC 6763 section 11): multicast does not cross a router,
// so schools with classroom, staff and server VLANs find the edge through
// their ordinary DNS instead. The edge keeps the same DNS-SD records as on
// mDNS (PTR, SRV, TXT, and the host's addresses) in a zone the school names,
// by RFC 2136 dynamic update signed with TSIG (register.go); terminals
// follow the browse domains of their search domains (ubrowse.go).

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// WellKnownHost is the host label the edge's address records use in the
// school's zone: campusedge.<zone>. Terminals that find no DNS-SD records
// try this name too, so a school that adds just one A record by hand is
// found as well.
const WellKnownHost = "campusedge"

// Publication is what the edge keeps in the school's zone.
type Publication struct {
	Zone     string // fully qualified, e.g. "school.example."
	Instance string // DNS-SD instance name (InstanceName)
	Host     string // fully qualified target host, campusedge.<zone> by default
	Port     int    // the edge's HTTP port (the SRV port, as on mDNS)
	Info     Info
	Addrs    []netip.Addr
	TTL      uint32
}

// serviceIn is the service name in a domain: _campusedge._tcp.<domain>.
func serviceIn(domain string) string { return ServiceType + "." + dns.Fqdn(domain) }

// InstanceFQDN is the instance's name in presentation form, with the
// label escaped (spaces and UTF-8 bytes as \DDD) so that miekg/dns and zone
// files read it back as one label.
func (p Publication) InstanceFQDN() string { return escapeLabel(p.Instance) + "." + serviceIn(p.Zone) }

// escapeLabel writes one DNS label in presentation form: letters, digits,
// '-' and '_' as they are, every other byte as \DDD.
func escapeLabel(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "\\%03d", c)
	}
	return b.String()
}

// check validates a publication before anything is sent.
func (p Publication) check() error {
	if err := checkZone(p.Zone); err != nil {
		return err
	}
	if err := checkInstance(p.Instance); err != nil {
		return err
	}
	if _, ok := dns.IsDomainName(p.Host); !ok || !dns.IsFqdn(p.Host) {
		return fmt.Errorf("host %q is not a fully qualified domain name", truncate(p.Host))
	}
	if p.Port < 1 || p.Port > 65535 {
		return fmt.Errorf("port %d is not a TCP port", p.Port)
	}
	if _, err := ParseTXT(p.Info.TXT()); err != nil {
		return fmt.Errorf("invalid Info: %w", err)
	}
	return nil
}

// checkZone accepts a fully qualified zone name ("school.example.").
func checkZone(z string) error {
	if z == "" || z == "." {
		return errors.New("DNS zone is empty: give the school's zone, e.g. -dns-zone school.example.")
	}
	if _, ok := dns.IsDomainName(z); !ok || !dns.IsFqdn(z) || strings.ContainsAny(z, " \\") {
		return fmt.Errorf("DNS zone %q is not a fully qualified domain name (e.g. school.example.)", truncate(z))
	}
	return nil
}

// RRs returns the records of p: the service enumeration PTR, the service
// PTR, SRV, TXT, and one A or AAAA record per address.
func (p Publication) RRs() []dns.RR {
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: p.TTL}
	}
	inst := p.InstanceFQDN()
	rrs := []dns.RR{
		&dns.PTR{Hdr: hdr("_services._dns-sd._udp."+dns.Fqdn(p.Zone), dns.TypePTR), Ptr: serviceIn(p.Zone)},
		&dns.PTR{Hdr: hdr(serviceIn(p.Zone), dns.TypePTR), Ptr: inst},
		&dns.SRV{Hdr: hdr(inst, dns.TypeSRV), Port: uint16(p.Port), Target: p.Host},
		&dns.TXT{Hdr: hdr(inst, dns.TypeTXT), Txt: p.Info.TXT()},
	}
	rrs = append(rrs, p.addrRRs()...)
	return rrs
}

func (p Publication) addrRRs() []dns.RR {
	var rrs []dns.RR
	for _, a := range p.Addrs {
		a = a.Unmap()
		if a.Is4() {
			rrs = append(rrs, &dns.A{Hdr: dns.RR_Header{Name: p.Host, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: p.TTL}, A: a.AsSlice()})
		} else {
			rrs = append(rrs, &dns.AAAA{Hdr: dns.RR_Header{Name: p.Host, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: p.TTL}, AAAA: a.AsSlice()})
		}
	}
	return rrs
}

// ZoneSnippet is the records of p in zone-file syntax, for a school whose
// DNS takes no dynamic updates: the admin pastes it into the zone.
func (p Publication) ZoneSnippet() string {
	var b strings.Builder
	fmt.Fprintf(&b, "; CampusEdge %s (edge %s): add to the zone %s\n", p.Instance, p.Info.EdgeID, p.Zone)
	fmt.Fprintf(&b, "; and, for terminals whose search domain is another name, b._dns-sd._udp.<that domain> PTR %s\n", p.Zone)
	fmt.Fprintf(&b, "b._dns-sd._udp.%s\t%d\tIN\tPTR\t%s\n", p.Zone, p.TTL, p.Zone)
	for _, rr := range p.RRs() {
		b.WriteString(rr.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// DnsmasqSnippet is the records of p as dnsmasq options (dnsmasq takes no
// dynamic updates). dnsmasq reads names as host names (and answers them
// in lower case), so an instance name with spaces or non-ASCII characters
// is given as campusedge-<id>.
func (p Publication) DnsmasqSnippet() string {
	inst := p.Instance
	for i := 0; i < len(inst); i++ {
		c := inst[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			inst = strings.ToLower("campusedge-" + p.Info.EdgeID)
			break
		}
	}
	zone := strings.TrimSuffix(p.Zone, ".")
	name := inst + "." + ServiceType + "." + zone
	host := strings.TrimSuffix(p.Host, ".")
	var b strings.Builder
	fmt.Fprintf(&b, "# CampusEdge %s (edge %s): add to dnsmasq.conf and restart dnsmasq\n", p.Instance, p.Info.EdgeID)
	fmt.Fprintf(&b, "ptr-record=b._dns-sd._udp.%s,%s\n", zone, zone)
	fmt.Fprintf(&b, "ptr-record=%s.%s,%s\n", ServiceType, zone, name)
	fmt.Fprintf(&b, "srv-host=%s,%s,%d,0,0\n", name, host, p.Port)
	b.WriteString("txt-record=" + name)
	for _, t := range p.Info.TXT() {
		b.WriteString(",\"" + t + "\"")
	}
	b.WriteByte('\n')
	for _, a := range p.Addrs {
		fmt.Fprintf(&b, "host-record=%s,%s\n", host, a.Unmap())
	}
	return b.String()
}

// TSIGKey is a TSIG key as BIND's tsig-keygen writes it.
type TSIGKey struct {
	Name      string // fully qualified, lower case
	Algorithm string // miekg/dns name, e.g. dns.HmacSHA256
	Secret    string // base64
}

const maxKeyFile = 4 << 10

// ReadTSIGKeyFile reads -dns-tsig-key-file.
func ReadTSIGKeyFile(path string) (TSIGKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return TSIGKey{}, fmt.Errorf("TSIG key file: %w", err)
	}
	defer f.Close()
	buf := make([]byte, maxKeyFile+1)
	n, _ := f.Read(buf)
	k, err := ParseTSIGKey(buf[:n])
	if err != nil {
		return TSIGKey{}, fmt.Errorf("TSIG key file %s: %w", path, err)
	}
	return k, nil
}

var tsigAlgorithms = map[string]string{
	"hmac-sha1": dns.HmacSHA1, "hmac-sha224": dns.HmacSHA224, "hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384, "hmac-sha512": dns.HmacSHA512,
}

// ParseTSIGKey reads one key in BIND's syntax, the output of
// `tsig-keygen -a hmac-sha256 NAME`:
//
//	key "NAME" { algorithm hmac-sha256; secret "BASE64"; };
//
// Comments (#, //) are allowed; the first key in the text is used.
func ParseTSIGKey(text []byte) (TSIGKey, error) {
	if len(text) > maxKeyFile {
		return TSIGKey{}, fmt.Errorf("more than %d bytes: not a TSIG key file", maxKeyFile)
	}
	toks := tokenize(string(text))
	i := slices.Index(toks, "key")
	if i < 0 || i+2 >= len(toks) || toks[i+2] != "{" {
		return TSIGKey{}, errors.New(`no 'key "NAME" { ... };' clause (make one with: tsig-keygen -a hmac-sha256 campusedge-key)`)
	}
	k := TSIGKey{Name: strings.ToLower(dns.Fqdn(unquote(toks[i+1])))}
	if _, ok := dns.IsDomainName(k.Name); !ok || k.Name == "." || strings.ContainsAny(k.Name, " \\\"") {
		return TSIGKey{}, fmt.Errorf("key name %q is not a domain name", truncate(toks[i+1]))
	}
	for j := i + 3; j+1 < len(toks) && toks[j] != "}"; j++ {
		switch toks[j] {
		case "algorithm":
			alg, ok := tsigAlgorithms[strings.ToLower(unquote(toks[j+1]))]
			if !ok {
				return TSIGKey{}, fmt.Errorf("algorithm %q is not supported (use hmac-sha256)", truncate(toks[j+1]))
			}
			k.Algorithm = alg
		case "secret":
			k.Secret = unquote(toks[j+1])
		}
	}
	if k.Algorithm == "" {
		return TSIGKey{}, errors.New("the key has no algorithm (e.g. algorithm hmac-sha256;)")
	}
	raw, err := base64.StdEncoding.DecodeString(k.Secret)
	if err != nil || len(raw) < 16 {
		return TSIGKey{}, errors.New("the key's secret is missing, not base64, or shorter than 16 bytes")
	}
	return k, nil
}

// tokenize splits BIND configuration text into words, quoted strings,
// braces and semicolons, dropping comments.
func tokenize(s string) []string {
	var toks []string
	for len(s) > 0 && len(toks) < 256 {
		c := s[0]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ';':
			s = s[1:]
		case c == '#' || strings.HasPrefix(s, "//"):
			_, s, _ = strings.Cut(s, "\n")
		case c == '{' || c == '}':
			toks = append(toks, s[:1])
			s = s[1:]
		case c == '"':
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return append(toks, s)
			}
			toks = append(toks, s[:end+2])
			s = s[end+2:]
		default:
			end := strings.IndexAny(s, " \t\r\n;{}\"")
			if end < 0 {
				end = len(s)
			}
			toks = append(toks, s[:end])
			s = s[end:]
		}
	}
	return toks
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// hostPort adds DNS's port 53 to a server given without one.
func hostPort(server string) string {
	if _, _, err := net.SplitHostPort(server); err == nil {
		return server
	}
	return net.JoinHostPort(strings.Trim(server, "[]"), "53")
}
