package discovery

import (
	"encoding/base64"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/miekg/dns"
)

// FuzzParseTSIGKey: an operator's key file never panics the parser, and
// whatever is accepted is a usable key.
func FuzzParseTSIGKey(f *testing.F) {
	for _, s := range []string{
		"key \"campusedge-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"" + testSecret + "\";\n};\n",
		"key k { algorithm hmac-sha512; secret " + testSecret + "; };",
		"# c\n// c\nkey \"k\" {",
		"key \"unterminated",
		"key \"k\" { algorithm; secret; }",
		"{}{}{};;;\"\"",
		"key \"北京\" { algorithm hmac-sha1; secret \"" + testSecret + "\"; };",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseTSIGKey(b)
		if err != nil {
			return
		}
		raw, berr := base64.StdEncoding.DecodeString(k.Secret)
		if _, ok := dns.IsDomainName(k.Name); !ok || !dns.IsFqdn(k.Name) || k.Name != strings.ToLower(k.Name) || berr != nil || len(raw) < 16 || k.Algorithm == "" {
			t.Fatalf("accepted an unusable key %+v from %q", k, b)
		}
		// miekg/dns can sign with it.
		m := new(dns.Msg)
		m.SetUpdate("school.test.")
		m.SetTsig(k.Name, k.Algorithm, 300, 1)
		if _, _, err := dns.TsigGenerate(m, k.Secret, "", false); err != nil {
			t.Fatalf("key %+v cannot sign: %v", k, err)
		}
	})
}

// FuzzParseResolvConf: any resolv.conf gives bounded, valid lists.
func FuzzParseResolvConf(f *testing.F) {
	for _, s := range []string{
		"nameserver 10.0.0.53\nsearch classrooms.school.example school.example\n",
		"domain school.example\nnameserver ::1\n",
		"search a b c d e f g h i j k l\n",
		"nameserver\nsearch\n#\n;\n",
		"search ..\\032. \xff\nnameserver 999.1.1.1\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rc := ParseResolvConf(b)
		if len(rc.Nameservers) > maxNameservers || len(rc.Search) > maxSearch {
			t.Fatalf("unbounded: %+v", rc)
		}
		for _, d := range rc.Search {
			if _, ok := dns.IsDomainName(d); !ok || !dns.IsFqdn(d) || d == "." {
				t.Fatalf("search domain %q is not a domain name", d)
			}
		}
	})
}

// FuzzInstanceIn: names from DNS answers never panic the instance check,
// and an accepted instance label round-trips through the escaping the
// edge publishes with.
func FuzzInstanceIn(f *testing.F) {
	for _, s := range []string{
		"Main._campusedge._tcp.school.test.",
		"\\229\\140\\151._campusedge._tcp.School.Test.",
		"a\\.b._campusedge._tcp.school.test.",
		"._campusedge._tcp.school.test.",
		"_campusedge._tcp.school.test.",
		"x.y._campusedge._tcp.school.test",
		"\\999.",
	} {
		f.Add(s)
	}
	const svc = "_campusedge._tcp.school.test."
	f.Fuzz(func(t *testing.T, name string) {
		inst, ok := instanceIn(name, svc)
		if !ok {
			return
		}
		if inst == "" || len(inst) > 63 {
			t.Fatalf("instance %q from %q", inst, name)
		}
		back, ok := instanceIn(escapeLabel(inst)+"."+svc, svc)
		if !ok || back != inst {
			t.Fatalf("round trip of %q: %q %v", inst, back, ok)
		}
		if utf8.ValidString(inst) && InstanceName(inst) == inst {
			p := Publication{Zone: "school.test.", Instance: inst}
			if got, _ := instanceIn(p.InstanceFQDN(), svc); got != inst {
				t.Fatalf("publication name of %q reads back as %q", inst, got)
			}
		}
	})
}
