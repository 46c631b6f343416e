// Package discovery lets classroom terminals find their school's edge
// without configuration: the edge advertises itself by DNS-SD over mDNS
// (service type _campusedge._tcp on its HTTP port) and terminals browse for it.
//
// The advertisement must be visible to standard tools (avahi-browse, dns-sd,
// Android NSD), not only to this package's Browse. It is served by
// github.com/hashicorp/mdns, plus the few things DNS-SD browsers need that the
// library does not do (see responder.go). Where multicast does not reach
// (VLANs behind routers, no multicast-capable interface) the edge keeps
// running, keeps the same records in the school's own DNS zone by RFC 2136
// dynamic update signed with TSIG (register.go, unicast.go), and terminals
// browse that zone by unicast DNS-SD, RFC 6763 section 11 (ubrowse.go);
// or they are given the edge's URL explicitly (classterm -edge URL).
package discovery

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ServiceType is the DNS-SD service type of a CampusEdge edge.
const ServiceType = "_campusedge._tcp"

const (
	domain       = "local."
	serviceName  = ServiceType + "." + domain // "_campusedge._tcp.local."
	enumName     = "_services._dns-sd._udp." + domain
	txtVersion   = "1"
	defaultAPI   = "/api/v1"
	maxLabel     = 63 // bytes in one DNS label, and so in an instance name
	maxTXTField  = 255
	maxTXTFields = 32
	maxIDLen     = 64
	maxSchoolLen = 64
	maxAPILen    = 128
	defaultInst  = "CampusEdge"
)

// Info is what an edge says about itself in its DNS-SD TXT record.
type Info struct {
	Version string // TXT v=; always "1" for this format (empty means "1")
	EdgeID  string // TXT id=; the short edge id
	School  string // TXT school=; the school code the city knows the school by (may be empty)
	API     string // TXT api=; path of the HTTP API (empty means /api/v1)
	// HTTPSPort is TXT https=: the edge's HTTPS port, where terminals pair
	// and connect (the service's own port stays the plain HTTP one, for
	// /healthz, /metrics and /media). 0: not advertised; terminals then
	// use DefaultHTTPSPort.
	HTTPSPort int
}

// DefaultHTTPSPort is edged's HTTPS port when TXT https= is absent.
const DefaultHTTPSPort = 8443

// TXT returns the TXT record strings for i, in a stable order.
func (i Info) TXT() []string {
	v, api := i.Version, i.API
	if v == "" {
		v = txtVersion
	}
	if api == "" {
		api = defaultAPI
	}
	txt := []string{"v=" + v, "id=" + i.EdgeID, "school=" + i.School, "api=" + api}
	if i.HTTPSPort != 0 {
		txt = append(txt, "https="+strconv.Itoa(i.HTTPSPort))
	}
	return txt
}

// ParseTXT validates the TXT strings of a discovered service and returns the
// edge's Info. It is strict because the strings come from anyone on the LAN:
// v must be "1", id must be a short token, api must be a plain absolute path,
// and every length is bounded. Keys are case-insensitive and only the first
// occurrence of a key counts (RFC 6763 section 6.4); unknown keys are ignored
// so that later versions can add some.
func ParseTXT(fields []string) (Info, error) {
	if len(fields) > maxTXTFields {
		return Info{}, fmt.Errorf("TXT record has %d strings, at most %d allowed", len(fields), maxTXTFields)
	}
	var info Info
	seen := make(map[string]bool, 4)
	for _, f := range fields {
		if len(f) > maxTXTField {
			return Info{}, fmt.Errorf("TXT string of %d bytes, at most %d allowed", len(f), maxTXTField)
		}
		key, value, hasValue := strings.Cut(f, "=")
		key = strings.ToLower(key)
		if key == "" {
			return Info{}, errors.New("TXT string with an empty key")
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		switch key {
		case "v", "id", "school", "api", "https":
		default:
			continue
		}
		if !hasValue {
			return Info{}, fmt.Errorf("TXT key %q has no value", key)
		}
		switch key {
		case "v":
			info.Version = value
		case "id":
			info.EdgeID = value
		case "school":
			info.School = value
		case "api":
			info.API = value
		case "https":
			// Strict like the rest: a port is 1-65535 in plain decimal.
			n, err := strconv.Atoi(value)
			if err != nil || n < 1 || n > 65535 || value != strconv.Itoa(n) {
				return Info{}, fmt.Errorf("TXT https=%q is not a port number", truncate(value))
			}
			info.HTTPSPort = n
		}
	}
	if !seen["v"] {
		return Info{}, errors.New("TXT record has no v= key; not a CampusEdge v1 record")
	}
	if info.Version != txtVersion {
		return Info{}, fmt.Errorf("TXT version v=%q is not supported (this build understands v=%s)", truncate(info.Version), txtVersion)
	}
	if err := checkEdgeID(info.EdgeID); err != nil {
		return Info{}, err
	}
	if err := checkSchool(info.School); err != nil {
		return Info{}, err
	}
	if err := checkAPI(info.API, seen["api"]); err != nil {
		return Info{}, err
	}
	return info, nil
}

// ValidEdgeID says why id is not an edge id as TXT id= carries it.
func ValidEdgeID(id string) error { return checkEdgeID(id) }

func checkEdgeID(id string) error {
	if id == "" {
		return errors.New("TXT id= is missing or empty")
	}
	if len(id) > maxIDLen {
		return fmt.Errorf("TXT id= is %d bytes, at most %d allowed", len(id), maxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("TXT id=%q has a character outside [A-Za-z0-9._-]", truncate(id))
		}
	}
	return nil
}

func checkSchool(s string) error {
	if len(s) > maxSchoolLen {
		return fmt.Errorf("TXT school= is %d bytes, at most %d allowed", len(s), maxSchoolLen)
	}
	if !utf8.ValidString(s) {
		return errors.New("TXT school= is not valid UTF-8")
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("TXT school=%q contains a space or non-printing character", truncate(s))
		}
	}
	return nil
}

func checkAPI(api string, present bool) error {
	if !present {
		return errors.New("TXT api= is missing")
	}
	if len(api) > maxAPILen {
		return fmt.Errorf("TXT api= is %d bytes, at most %d allowed", len(api), maxAPILen)
	}
	if !strings.HasPrefix(api, "/") || strings.HasPrefix(api, "//") {
		// "//host/x" would make a URL built from it point at another host.
		return fmt.Errorf("TXT api=%q must be an absolute path starting with a single /", truncate(api))
	}
	for i := 0; i < len(api); i++ {
		c := api[i]
		if c <= ' ' || c >= 0x7f || c == '\\' || c == '?' || c == '#' || c == '%' {
			return fmt.Errorf("TXT api=%q must be a plain path (printable ASCII, no space, \\, ?, # or %%)", truncate(api))
		}
	}
	return nil
}

// truncate keeps hostile values short in error messages.
func truncate(s string) string {
	const n = 40
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// InstanceName turns a school's name into a DNS-SD instance name: printable
// UTF-8 (Chinese names stay readable), single spaces, at most 63 bytes cut at
// a character boundary. Dots and backslashes become spaces: they are legal in
// DNS-SD instance names but hashicorp/mdns writes the name into a domain name
// unescaped, where they would split or escape the label. An empty result
// becomes "CampusEdge".
func InstanceName(school string) string {
	var b strings.Builder
	space := false
	for _, r := range school { // invalid UTF-8 arrives as utf8.RuneError, which is printable: replace it too
		if r == utf8.RuneError || r == '.' || r == '\\' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			if b.Len()+1+utf8.RuneLen(r) > maxLabel {
				break
			}
			b.WriteByte(' ')
			space = false
		}
		if b.Len()+utf8.RuneLen(r) > maxLabel {
			break
		}
		b.WriteRune(r)
	}
	if b.Len() == 0 {
		return defaultInst
	}
	return b.String()
}

// checkInstance says why s is not an instance name this package can
// advertise; InstanceName always returns one that passes.
func checkInstance(s string) error {
	switch {
	case s == "":
		return errors.New("instance name is empty (derive it with discovery.InstanceName)")
	case len(s) > maxLabel:
		return fmt.Errorf("instance name is %d bytes, DNS-SD allows at most %d (derive it with discovery.InstanceName)", len(s), maxLabel)
	case s != InstanceName(s):
		return fmt.Errorf("instance name %q has a dot, backslash, control character, invalid UTF-8 or extra spaces (derive it with discovery.InstanceName)", truncate(s))
	}
	return nil
}

// checkHostName validates an mDNS host name such as "edge-1.local.".
func checkHostName(h string) error {
	if !strings.HasSuffix(h, ".") {
		return fmt.Errorf("host name %q must be fully qualified (end with a dot, e.g. edge.local.)", truncate(h))
	}
	if len(h) > 254 {
		return fmt.Errorf("host name is %d bytes, at most 253 allowed", len(h)-1)
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > maxLabel {
			return fmt.Errorf("host name %q has an empty or over-long label", truncate(h))
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("host name %q may only contain letters, digits and '-'", truncate(h))
			}
		}
	}
	return nil
}

// hostLabel makes a host label from the system host name: its first label,
// letters, digits and '-' only.
func hostLabel(hostname string) string {
	first, _, _ := strings.Cut(hostname, ".")
	var b strings.Builder
	for i := 0; i < len(first) && b.Len() < maxLabel; i++ {
		c := first[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
		}
	}
	s := strings.Trim(b.String(), "-")
	if s == "" {
		return "campusedge"
	}
	return s
}
