package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultsAndOverrides(t *testing.T) {
	c, err := Parse("edged", nil, io.Discard)
	if err != nil || c.DataDir != "./data" || c.Listen != ":8080" || !c.MDNS || c.Cloud != "" {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	file := filepath.Join(t.TempDir(), "edged.json")
	if err := os.WriteFile(file, []byte(`{"listen":"127.0.0.1:9000","school":"S1","mdns":false}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Parse("edged", []string{"-config", file, "-school", "S2", "-mdns-interfaces", "eth0, wlan0"}, io.Discard)
	if err != nil || c.Listen != "127.0.0.1:9000" || c.School != "S2" || c.MDNS || len(c.MDNSInterfaces) != 2 {
		t.Fatalf("file + flags: %+v %v", c, err)
	}
}

func TestBadInput(t *testing.T) {
	for _, args := range [][]string{{"-listen", "8080"}, {"-cloud", "ftp://x"}, {"-school", "a b"}, {"-log-level", "loud"}, {"extra"}} {
		if _, err := Parse("edged", args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	file := filepath.Join(t.TempDir(), "bad.json")
	_ = os.WriteFile(file, []byte(`{"lisen":":1"}`), 0o600)
	if _, err := Parse("edged", []string{"-config", file}, io.Discard); err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Errorf("misspelt key: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"data":"/var/lib/edged","listen":":8080","mdns_interfaces":["eth0"]}`))
	f.Add([]byte(`{"mdns":"yes"}`))
	f.Add([]byte(`nul`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Defaults()
		if err := Decode(data, &c); err == nil {
			_ = c.Validate()
		}
	})
}
