package netnstest

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseAvahiBrowse(t *testing.T) {
	out := `+;ve0;IPv4;Springfield\032\231\172\172\228\184\128\228\184\173\229\173\166;_campusedge._tcp;local
=;ve0;IPv4;Springfield\032\231\172\172\228\184\128\228\184\173\229\173\166;_campusedge._tcp;local;edge-a.local;10.1.2.1;8443;"api=/api/v1" "school=a;b" "id=k3x9q2m7ab" "v=1" "q=\"x\\"
-;ve0;IPv4;Gone\.Edge;_campusedge._tcp;local
garbage
`
	svcs, errs := ParseAvahiBrowse(out)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "garbage") {
		t.Fatalf("errors %v, want one about the garbage line", errs)
	}
	if len(svcs) != 3 {
		t.Fatalf("got %d services: %+v", len(svcs), svcs)
	}
	if svcs[0].Event != "+" || svcs[0].Name != "Springfield 第一中学" || svcs[0].Iface != "ve0" {
		t.Errorf("browse line: %+v", svcs[0])
	}
	r := svcs[1]
	if r.Event != "=" || r.Host != "edge-a.local" || r.Address != "10.1.2.1" || r.Port != 8443 {
		t.Errorf("resolved line: %+v", r)
	}
	wantTXT := []string{"api=/api/v1", "school=a;b", "id=k3x9q2m7ab", "v=1", `q="x\`}
	if !reflect.DeepEqual(r.TXT, wantTXT) {
		t.Errorf("TXT %q, want %q", r.TXT, wantTXT)
	}
	if m := r.TXTMap(); m["v"] != "1" || m["school"] != "a;b" {
		t.Errorf("TXTMap %v", m)
	}
	if svcs[2].Event != "-" || svcs[2].Name != "Gone.Edge" {
		t.Errorf("removal line: %+v", svcs[2])
	}
}

func TestRunPattern(t *testing.T) {
	if got := runPattern("TestA/sub.x"); got != `^TestA$/^sub\.x$` {
		t.Fatalf("runPattern = %q", got)
	}
}
