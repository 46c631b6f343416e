package netnstest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/logtest"
)

// BINDZone is one primary zone for StartBIND.
type BINDZone struct {
	Name string // "school.test" (no trailing dot)
	// Body is the zone file; it should start with $TTL, SOA and NS records.
	Body string
	// UpdateKey names the TSIG key that may update every name in the zone
	// (update-policy grant KEY zonesub ANY); empty: no updates.
	UpdateKey string
}

// TSIGSecret is a TSIG key for StartBIND's configuration.
type TSIGSecret struct {
	Name, Algorithm, Secret string // Algorithm as BIND spells it: hmac-sha256
}

// StartBIND runs Debian's named (package bind9) inside n, listening on
// listen (n's addresses), authoritative for zones and knowing keys; it is
// stopped in t.Cleanup. It returns once named logs "running". Needs root
// and /usr/sbin/named (the test is skipped without it, failed under CI=true).
func (n *Netns) StartBIND(t testing.TB, listen []string, keys []TSIGSecret, zones []BINDZone) *Process {
	t.Helper()
	RequireRoot(t)
	return startBIND(t, n.Start, listen, keys, zones)
}

// StartBINDHere is StartBIND in this process's own namespace, for a test
// isolated with Isolate (listen on 127.0.0.1 there).
func StartBINDHere(t testing.TB, listen []string, keys []TSIGSecret, zones []BINDZone) *Process {
	t.Helper()
	if !InNetns() {
		t.Fatal("StartBINDHere runs only inside a namespace made by Isolate or RunInNetns")
	}
	return startBIND(t, startHere, listen, keys, zones)
}

// startHere is Netns.Start for this process's own namespace.
func startHere(t testing.TB, env []string, name string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out := &logtest.Buffer{Head: 4 << 20}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { _ = p.Stop() })
	return p
}

func startBIND(t testing.TB, start func(testing.TB, []string, string, ...string) *Process, listen []string, keys []TSIGSecret, zones []BINDZone) *Process {
	t.Helper()
	if _, err := exec.LookPath("/usr/sbin/named"); err != nil {
		skipOrFail(t, "named is not installed (Debian package bind9)")
	}
	dir := t.TempDir()
	var conf strings.Builder
	fmt.Fprintf(&conf, "options {\n\tdirectory %q;\n\tpid-file %q;\n\tsession-keyfile %q;\n\tlisten-on { %s; };\n\tlisten-on-v6 { none; };\n"+
		"\trecursion no;\n\tdnssec-validation no;\n\tallow-query { any; };\n\tnotify no;\n};\ncontrols { };\n",
		dir, filepath.Join(dir, "named.pid"), filepath.Join(dir, "session.key"), strings.Join(listen, "; "))
	for _, k := range keys {
		fmt.Fprintf(&conf, "key %q { algorithm %s; secret %q; };\n", k.Name, k.Algorithm, k.Secret)
	}
	for _, z := range zones {
		file := filepath.Join(dir, z.Name+".zone")
		if err := os.WriteFile(file, []byte(z.Body), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, "zone %q {\n\ttype primary;\n\tfile %q;\n\tjournal %q;\n", z.Name, file, file+".jnl")
		if z.UpdateKey != "" {
			fmt.Fprintf(&conf, "\tupdate-policy { grant %s zonesub ANY; };\n", z.UpdateKey)
		}
		conf.WriteString("};\n")
	}
	path := filepath.Join(dir, "named.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// -g: foreground, logs to stderr; -4: the test LANs are IPv4 only.
	p := start(t, nil, "/usr/sbin/named", "-g", "-4", "-n", "1", "-c", path)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "running"); err != nil {
		t.Fatalf("named did not start: %v\n%s", err, p.Output())
	}
	return p
}

// StartDnsmasq runs dnsmasq inside n as an authoritative-only server for
// the records in conf (dnsmasq options such as ptr-record= and srv-host=),
// on n's address, with no DHCP, no upstream and no /etc/hosts. It is
// stopped in t.Cleanup.
func (n *Netns) StartDnsmasq(t testing.TB, conf string) *Process {
	t.Helper()
	RequireRoot(t)
	if _, err := exec.LookPath("/usr/sbin/dnsmasq"); err != nil {
		skipOrFail(t, "dnsmasq is not installed")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "dnsmasq.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := n.Start(t, nil, "/usr/sbin/dnsmasq", "--keep-in-foreground", "--log-facility=-", "--conf-file="+path,
		"--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address="+n.Addr.String(), "--pid-file="+filepath.Join(dir, "pid"),
		"--user=root", "--log-queries")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "started"); err != nil {
		t.Fatalf("dnsmasq did not start: %v\n%s", err, p.Output())
	}
	return p
}
