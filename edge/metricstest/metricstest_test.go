package metricstest

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	m, err := Parse(strings.NewReader("# HELP x y\n# TYPE x gauge\ngo_goroutines 16\nhttp{route=\"/\"} 3\ncampusedge_terminals_online 2000\n"))
	if err != nil || m["go_goroutines"] != 16 || m["campusedge_terminals_online"] != 2000 || len(m) != 2 {
		t.Errorf("Parse = %v, %v", m, err)
	}
}

func TestValue(t *testing.T) {
	b := []byte("# TYPE campusedge_live_subscribers gauge\ncampusedge_live_subscribers 3\ncampusedge_live_nacks_total 1.5e+01\n")
	if v := Value(b, "campusedge_live_subscribers"); v != 3 {
		t.Errorf("subscribers = %v", v)
	}
	if v := Value(b, "campusedge_live_nacks_total"); v != 15 {
		t.Errorf("nacks = %v", v)
	}
	if v := Value([]byte(`campusedge_sessions_kept{state="ended"} 4`), `campusedge_sessions_kept{state="ended"}`); v != 4 {
		t.Errorf("labelled = %v", v)
	}
	if v := Value(b, "campusedge_live"); v != -1 {
		t.Errorf("a prefix of a name = %v, want -1", v)
	}
}
