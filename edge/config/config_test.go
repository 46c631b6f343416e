package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/campusedge/campusedge/edge/certs/certstest"
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

// -cloud-ca (or cloud_ca) must name a file of PEM certificates: a missing
// file or one holding a key stops edged at start, naming the file.
func TestCloudCA(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "city-root.pem")
	if err := os.WriteFile(root, certstest.NewCA(t, "Test city root").PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Parse("edged", []string{"-cloud", "https://hub.city.example", "-cloud-ca", root}, io.Discard)
	if err != nil || c.CloudCA != root {
		t.Fatalf("-cloud-ca %s: %+v %v", root, c, err)
	}
	file := filepath.Join(dir, "edged.json")
	_ = os.WriteFile(file, []byte(`{"cloud":"https://hub.city.example","cloud_ca":"`+root+`"}`), 0o600)
	if c, err := Parse("edged", []string{"-config", file}, io.Discard); err != nil || c.CloudCA != root {
		t.Fatalf("cloud_ca in the file: %+v %v", c, err)
	}
	key := filepath.Join(dir, "key.pem")
	_ = os.WriteFile(key, []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), 0o600)
	for path, want := range map[string]string{filepath.Join(dir, "none.pem"): "no such file", key: "never a key", file: "no PEM certificate"} {
		if _, err := Parse("edged", []string{"-cloud-ca", path}, io.Discard); err == nil || !strings.Contains(err.Error(), "-cloud-ca") || !strings.Contains(err.Error(), want) {
			t.Errorf("-cloud-ca %s: %v, want an error saying %q", path, err, want)
		}
	}
}
