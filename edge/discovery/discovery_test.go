package discovery

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestInfoTXTRoundTrip(t *testing.T) {
	in := Info{EdgeID: "k3x9q2m7ab", School: "sch-042"}
	got := in.TXT()
	want := []string{"v=1", "id=k3x9q2m7ab", "school=sch-042", "api=/api/v1"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("TXT() = %q, want %q", got, want)
	}
	out, err := ParseTXT(got)
	if err != nil {
		t.Fatal(err)
	}
	if out != (Info{Version: "1", EdgeID: "k3x9q2m7ab", School: "sch-042", API: "/api/v1"}) {
		t.Fatalf("ParseTXT(TXT()) = %+v", out)
	}
	in.HTTPSPort = 8443
	if got := in.TXT(); strings.Join(got, "|") != strings.Join(append(want, "https=8443"), "|") {
		t.Fatalf("TXT() with HTTPS = %q", got)
	}
	if out, err := ParseTXT(in.TXT()); err != nil || out.HTTPSPort != 8443 {
		t.Fatalf("ParseTXT with https= = %+v, %v", out, err)
	}
}

func TestParseTXTGood(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields []string
		want   Info
	}{
		{"plain", []string{"v=1", "id=abc", "school=s1", "api=/api/v1"}, Info{"1", "abc", "s1", "/api/v1", 0}},
		{"any order, upper-case keys", []string{"API=/api/v1", "School=s1", "ID=abc", "V=1"}, Info{"1", "abc", "s1", "/api/v1", 0}},
		{"empty school", []string{"v=1", "id=abc", "school=", "api=/x"}, Info{"1", "abc", "", "/x", 0}},
		{"no school key", []string{"v=1", "id=abc", "api=/x"}, Info{"1", "abc", "", "/x", 0}},
		{"unknown keys ignored", []string{"v=1", "id=abc", "api=/x", "future=yes", "flag"}, Info{"1", "abc", "", "/x", 0}},
		{"first occurrence wins", []string{"v=1", "id=first", "id=second", "api=/x", "v=2"}, Info{"1", "first", "", "/x", 0}},
		{"value with =", []string{"v=1", "id=a", "school=a=b", "api=/x"}, Info{"1", "a", "a=b", "/x", 0}},
		{"utf-8 school", []string{"v=1", "id=a", "school=北京一中", "api=/x"}, Info{"1", "a", "北京一中", "/x", 0}},
		{"https port", []string{"v=1", "id=a", "api=/x", "https=8443"}, Info{"1", "a", "", "/x", 8443}},
		{"id charset", []string{"v=1", "id=A-z_0.9", "api=/api/v1/"}, Info{"1", "A-z_0.9", "", "/api/v1/", 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTXT(tc.fields)
			if err != nil {
				t.Fatalf("ParseTXT(%q): %v", tc.fields, err)
			}
			if got != tc.want {
				t.Fatalf("ParseTXT(%q) = %+v, want %+v", tc.fields, got, tc.want)
			}
		})
	}
}

func TestParseTXTBad(t *testing.T) {
	long := strings.Repeat("a", 300)
	many := make([]string, 40)
	for i := range many {
		many[i] = "x=1"
	}
	for _, tc := range []struct {
		name    string
		fields  []string
		wantErr string
	}{
		{"empty", nil, "no v= key"},
		{"wrong version", []string{"v=2", "id=a", "api=/x"}, "not supported"},
		{"version without value", []string{"v", "id=a", "api=/x"}, "no value"},
		{"missing id", []string{"v=1", "api=/x"}, "id= is missing"},
		{"empty id", []string{"v=1", "id=", "api=/x"}, "id= is missing"},
		{"id with space", []string{"v=1", "id=a b", "api=/x"}, "outside"},
		{"id with slash", []string{"v=1", "id=a/b", "api=/x"}, "outside"},
		{"id too long", []string{"v=1", "id=" + strings.Repeat("a", 65), "api=/x"}, "at most 64"},
		{"missing api", []string{"v=1", "id=a"}, "api= is missing"},
		{"https not a number", []string{"v=1", "id=a", "api=/x", "https=web"}, "not a port"},
		{"https out of range", []string{"v=1", "id=a", "api=/x", "https=70000"}, "not a port"},
		{"https with sign", []string{"v=1", "id=a", "api=/x", "https=+443"}, "not a port"},
		{"https without value", []string{"v=1", "id=a", "api=/x", "https"}, "no value"},
		{"relative api", []string{"v=1", "id=a", "api=api/v1"}, "absolute path"},
		{"protocol-relative api", []string{"v=1", "id=a", "api=//evil.example/api"}, "single /"},
		{"api with query", []string{"v=1", "id=a", "api=/x?y"}, "plain path"},
		{"api with space", []string{"v=1", "id=a", "api=/x y"}, "plain path"},
		{"api too long", []string{"v=1", "id=a", "api=/" + strings.Repeat("a", 200)}, "at most 128"},
		{"school with newline", []string{"v=1", "id=a", "school=a\nb", "api=/x"}, "non-printing"},
		{"school invalid utf-8", []string{"v=1", "id=a", "school=\xff", "api=/x"}, "UTF-8"},
		{"school too long", []string{"v=1", "id=a", "school=" + strings.Repeat("s", 65), "api=/x"}, "at most 64"},
		{"field too long", []string{"v=1", "id=a", "api=/x", long}, "at most 255"},
		{"too many fields", many, "at most 32"},
		{"empty key", []string{"=x", "v=1", "id=a", "api=/x"}, "empty key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTXT(tc.fields)
			if err == nil {
				t.Fatalf("ParseTXT(%q) succeeded, want error containing %q", tc.fields, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseTXT(%q) = %v, want error containing %q", tc.fields, err, tc.wantErr)
			}
		})
	}
}

func TestInstanceName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Springfield Elementary", "Springfield Elementary"},
		{"  St. Mary's   School \t", "St Mary's School"},
		{"北京市第一中学", "北京市第一中学"},
		{"a\\b", "a b"},
		{"x\x00y\nz", "x y z"},
		{"bad \xff utf8", "bad utf8"},
		{"", "CampusEdge"},
		{" . \\ ", "CampusEdge"},
		{"zero\u200bwidth", "zero width"},
		{strings.Repeat("x", 70), strings.Repeat("x", 63)},
		{strings.Repeat("x", 62) + " y", strings.Repeat("x", 62)},
		{strings.Repeat("中", 30), strings.Repeat("中", 21)}, // 63 bytes
		{strings.Repeat("x", 62) + "中", strings.Repeat("x", 62)},
	} {
		got := InstanceName(tc.in)
		if got != tc.want {
			t.Errorf("InstanceName(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if err := checkInstance(got); err != nil {
			t.Errorf("InstanceName(%q) = %q, rejected by checkInstance: %v", tc.in, got, err)
		}
		if len(got) > 63 || !utf8.ValidString(got) {
			t.Errorf("InstanceName(%q) = %q: not a valid label", tc.in, got)
		}
	}
}

func TestCheckInstance(t *testing.T) {
	for _, bad := range []string{"", "a.b", " a", "a ", "a  b", "a\\b", "a\nb", strings.Repeat("x", 64), "\xff"} {
		if err := checkInstance(bad); err == nil {
			t.Errorf("checkInstance(%q) = nil, want an error", bad)
		}
	}
}

func TestHostNames(t *testing.T) {
	for _, good := range []string{"edge.local.", "edge-3.local.", "a.b.c."} {
		if err := checkHostName(good); err != nil {
			t.Errorf("checkHostName(%q): %v", good, err)
		}
	}
	for _, bad := range []string{"edge.local", "", ".", "a..b.", "ed ge.local.", "e_dge.local.", strings.Repeat("a", 64) + ".local."} {
		if err := checkHostName(bad); err == nil {
			t.Errorf("checkHostName(%q) = nil, want an error", bad)
		}
	}
	for in, want := range map[string]string{"box": "box", "box.example.org": "box", "b_o x": "box", "": "campusedge", "--": "campusedge"} {
		if got := hostLabel(in); got != want {
			t.Errorf("hostLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInstanceOf(t *testing.T) {
	for name, want := range map[string]string{
		"Springfield\\ Elementary._campusedge._tcp.local.":       "Springfield Elementary",
		"\\229\\140\\151\\228\\186\\172._CampusEdge._TCP.Local.": "北京",
		"plain._campusedge._tcp.local.":                          "plain",
		"a\\.b._campusedge._tcp.local.":                          "a.b",
	} {
		got, ok := instanceOf(name)
		if !ok || got != want {
			t.Errorf("instanceOf(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
	for _, name := range []string{"x._http._tcp.local.", "_campusedge._tcp.local.", "x.y._campusedge._tcp.local.", "x._campusedge._tcp.local.evil."} {
		if got, ok := instanceOf(name); ok {
			t.Errorf("instanceOf(%q) = %q, true; want false", name, got)
		}
	}
}
