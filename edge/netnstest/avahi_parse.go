package netnstest

import (
	"fmt"
	"strconv"
	"strings"
)

// AvahiService is one line of `avahi-browse -p` (parsable) output.
type AvahiService struct {
	Event    string // "+" appeared, "-" gone, "=" resolved
	Iface    string
	Protocol string // "IPv4" or "IPv6"
	Name     string // instance name, unescaped
	Type     string // "_campusedge._tcp"
	Domain   string
	// Set on resolved ("=") lines only:
	Host    string
	Address string
	Port    int
	TXT     []string // the TXT strings, unquoted
}

// TXTMap returns the TXT strings as key → value (first occurrence wins).
func (s AvahiService) TXTMap() map[string]string {
	m := make(map[string]string, len(s.TXT))
	for _, f := range s.TXT {
		k, v, _ := strings.Cut(f, "=")
		if _, dup := m[k]; !dup {
			m[k] = v
		}
	}
	return m
}

// ParseAvahiBrowse parses `avahi-browse -p` output. Lines it does not
// understand are returned as errors, together with the lines it did.
func ParseAvahiBrowse(out string) ([]AvahiService, []error) {
	var svcs []AvahiService
	var errs []error
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" {
			continue
		}
		s, err := parseAvahiLine(line)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		svcs = append(svcs, s)
	}
	return svcs, errs
}

func parseAvahiLine(line string) (AvahiService, error) {
	f := strings.SplitN(line, ";", 10)
	if len(f) < 6 {
		return AvahiService{}, fmt.Errorf("avahi-browse line %q: want at least 6 fields", line)
	}
	s := AvahiService{Event: f[0], Iface: f[1], Protocol: f[2], Type: f[4], Domain: f[5]}
	switch s.Event {
	case "+", "-", "=":
	default:
		return AvahiService{}, fmt.Errorf("avahi-browse line %q: unknown event %q", line, s.Event)
	}
	name, err := unescapeAvahi(f[3])
	if err != nil {
		return AvahiService{}, fmt.Errorf("avahi-browse line %q: %w", line, err)
	}
	s.Name = name
	if s.Event != "=" {
		return s, nil
	}
	if len(f) < 10 {
		return AvahiService{}, fmt.Errorf("avahi-browse resolved line %q: want 10 fields", line)
	}
	s.Host, s.Address = f[6], f[7]
	if s.Port, err = strconv.Atoi(f[8]); err != nil {
		return AvahiService{}, fmt.Errorf("avahi-browse line %q: port: %w", line, err)
	}
	if s.TXT, err = parseAvahiTXT(f[9]); err != nil {
		return AvahiService{}, fmt.Errorf("avahi-browse line %q: %w", line, err)
	}
	return s, nil
}

// unescapeAvahi undoes avahi's label escaping: \DDD (decimal byte) and \c.
func unescapeAvahi(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			n, _ := strconv.Atoi(s[i+1 : i+4])
			if n > 255 {
				return "", fmt.Errorf("bad escape \\%s", s[i+1:i+4])
			}
			b.WriteByte(byte(n))
			i += 3
			continue
		}
		if i+1 < len(s) {
			b.WriteByte(s[i+1])
			i++
			continue
		}
		return "", fmt.Errorf("trailing backslash in %q", s)
	}
	return b.String(), nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// parseAvahiTXT splits `"a=1" "b=2"` into its strings; inside quotes, \" and
// \\ are escapes.
func parseAvahiTXT(s string) ([]string, error) {
	var out []string
	for i := 0; i < len(s); {
		switch s[i] {
		case ' ':
			i++
			continue
		case '"':
		default:
			return nil, fmt.Errorf("TXT %q: expected a quote at %d", s, i)
		}
		var b strings.Builder
		i++
		for {
			if i >= len(s) {
				return nil, fmt.Errorf("TXT %q: unterminated string", s)
			}
			c := s[i]
			if c == '\\' && i+1 < len(s) {
				b.WriteByte(s[i+1])
				i += 2
				continue
			}
			i++
			if c == '"' {
				break
			}
			b.WriteByte(c)
		}
		out = append(out, b.String())
	}
	return out, nil
}
