//go:build linux

package netnstest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Avahi is a private avahi-daemon running in a test namespace, on its own
// D-Bus system bus, so it neither needs nor touches the host's.
type Avahi struct {
	ns       *Netns
	env      []string // DBUS_SYSTEM_BUS_ADDRESS for avahi's clients
	Daemon   *Process
	Bus      *Process
	browser  string
	resolver string // avahi-resolve
}

// StartAvahi starts dbus-daemon and avahi-daemon inside n, avahi limited to
// n.Link, and waits until avahi reports "Server startup complete". The
// recipe (FIELD-NOTES): a private bus config and socket in a mode-0755
// directory avahi's dropped-root user can reach, DBUS_SYSTEM_BUS_ADDRESS
// pointing at it, `avahi-daemon -f CONF --no-chroot` with allow-interfaces
// and enable-dbus=yes. avahi-daemon also runs under a private tmpfs /run
// (ip netns exec gives it its own mount namespace), so its pid file cannot
// clash with a host avahi or a parallel test. Cleanup stops both.
func (n *Netns) StartAvahi(t testing.TB) *Avahi {
	t.Helper()
	return n.startAvahi(t, "")
}

// StartAvahiWideArea is StartAvahi with avahi's wide-area (unicast
// DNS-SD) browsing on, using the DNS servers of resolvConf (bind-mounted
// over /etc/resolv.conf in avahi's own mount namespace only), so that
// `avahi-browse -d DOMAIN` asks them (BrowseDomain).
func (n *Netns) StartAvahiWideArea(t testing.TB, resolvConf string) *Avahi {
	t.Helper()
	return n.startAvahi(t, resolvConf)
}

func (n *Netns) startAvahi(t testing.TB, resolvConf string) *Avahi {
	t.Helper()
	RequireRoot(t)
	paths := map[string]string{}
	for _, name := range []string{"dbus-daemon", "avahi-daemon", "avahi-browse", "avahi-resolve"} {
		p, err := lookSbin(name)
		if err != nil {
			skipOrFail(t, name+" not installed (apt-get install avahi-daemon avahi-utils dbus)")
		}
		paths[name] = p
	}
	dir, err := os.MkdirTemp("", "campusedge-avahi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // avahi drops root and must reach the socket
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "system_bus_socket")
	busConf := filepath.Join(dir, "dbus.conf")
	avahiConf := filepath.Join(dir, "avahi-daemon.conf")
	if err := os.WriteFile(busConf, []byte(fmt.Sprintf(dbusConfig, sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(avahiConfig, "avahi-"+n.Link, n.Link)
	if resolvConf != "" {
		conf = strings.Replace(conf, "enable-wide-area=no", "enable-wide-area=yes", 1)
	}
	if err := os.WriteFile(avahiConf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &Avahi{ns: n, env: []string{"DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + sock}, browser: paths["avahi-browse"], resolver: paths["avahi-resolve"]}
	a.Bus = n.Start(t, nil, paths["dbus-daemon"], "--config-file="+busConf, "--nofork", "--nopidfile")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if done, err := a.Bus.Exited(); done {
			t.Fatalf("dbus-daemon exited: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("dbus-daemon made no socket at %s", sock)
		case <-time.After(10 * time.Millisecond):
		}
	}
	mountResolv := ""
	if resolvConf != "" {
		mountResolv = `mount --bind "$2" /etc/resolv.conf && `
	}
	a.Daemon = n.Start(t, a.env, "/bin/sh", "-c",
		`mount -t tmpfs -o mode=0755 tmpfs /run && `+mountResolv+`exec "$0" -f "$1" --no-chroot`, paths["avahi-daemon"], avahiConf, resolvConf)
	if err := a.Daemon.WaitOutput(ctx, "Server startup complete"); err != nil {
		t.Fatal(err)
	}
	return a
}

// Env returns the environment a D-Bus client of this avahi needs.
func (a *Avahi) Env() []string { return append([]string(nil), a.env...) }

// Browse runs `avahi-browse -rtpk TYPE` once in the namespace (resolve,
// terminate when the cache is exhausted, parsable output) and returns the
// parsed lines. Lines that do not parse are reported in the error together
// with the ones that did.
func (a *Avahi) Browse(ctx context.Context, serviceType string) ([]AvahiService, error) {
	return a.browse(ctx, "-r", "-t", "-p", "-k", serviceType)
}

// BrowseDomain runs `avahi-browse -rpk -d DOMAIN TYPE` for d: wide-area
// (unicast DNS-SD) browsing, with StartAvahiWideArea. Wide-area browsing
// never says "all for now", so it is stopped after d and what it printed
// until then is returned.
func (a *Avahi) BrowseDomain(ctx context.Context, d time.Duration, domain, serviceType string) []AvahiService {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	cmd := a.ns.Command(ctx, a.browser, "-r", "-p", "-k", "-d", domain, serviceType)
	cmd.Env = append(os.Environ(), a.env...)
	out, _ := cmd.Output() // killed at d: the output so far
	svcs, _ := ParseAvahiBrowse(string(out))
	return svcs
}

// BrowseAll runs `avahi-browse -atpk`: every service type, found through
// the _services._dns-sd._udp.local enumeration, not resolved.
func (a *Avahi) BrowseAll(ctx context.Context) ([]AvahiService, error) {
	return a.browse(ctx, "-a", "-t", "-p", "-k")
}

func (a *Avahi) browse(ctx context.Context, args ...string) ([]AvahiService, error) {
	out, err := a.run(ctx, a.browser, args...)
	if err != nil {
		return nil, err
	}
	svcs, errs := ParseAvahiBrowse(out)
	if len(errs) > 0 {
		return svcs, fmt.Errorf("avahi-browse output: %v", errs)
	}
	return svcs, nil
}

// Watch starts `avahi-browse -rpk TYPE` in the namespace and leaves it
// running (stopped in t.Cleanup), as a terminal's browser would be, so that
// WaitEvent can tell when avahi reports a service resolved or gone.
func (a *Avahi) Watch(t testing.TB, serviceType string) *AvahiWatch {
	t.Helper()
	return &AvahiWatch{a.ns.Start(t, a.env, a.browser, "-r", "-p", "-k", serviceType)}
}

// AvahiWatch is an avahi-browse left running by Avahi.Watch.
type AvahiWatch struct{ *Process }

// WaitEvent waits until the browser's output has an IPv4 line with event
// ("=" resolved, "-" gone) for instance, polling every 5 ms, and returns
// when it first saw it; it fails when ctx is done, with the output so far.
func (w *AvahiWatch) WaitEvent(ctx context.Context, event, instance string) (time.Time, error) {
	for {
		out := w.Output()
		svcs, _ := ParseAvahiBrowse(out[:strings.LastIndex(out, "\n")+1]) // complete lines only
		if _, ok := findAvahi(svcs, event, instance); ok {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("avahi-browse -rp saw no %q event for %q: %w\n%s", event, instance, ctx.Err(), out)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// findAvahi returns the first IPv4 line with event for instance.
func findAvahi(svcs []AvahiService, event, instance string) (AvahiService, bool) {
	for _, s := range svcs {
		if s.Event == event && s.Protocol == "IPv4" && s.Name == instance {
			return s, true
		}
	}
	return AvahiService{}, false
}

// ResolveHost4 asks this avahi for host's IPv4 address
// (`avahi-resolve -4 -n HOST`, run in the namespace) and returns it.
func (a *Avahi) ResolveHost4(ctx context.Context, host string) (netip.Addr, error) {
	out, err := a.run(ctx, a.resolver, "-4", "-n", host)
	if err != nil {
		return netip.Addr{}, err
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return netip.Addr{}, fmt.Errorf("avahi-resolve -4 -n %s: output %q: want NAME ADDRESS", host, out)
	}
	addr, err := netip.ParseAddr(f[1])
	if err != nil {
		return netip.Addr{}, fmt.Errorf("avahi-resolve -4 -n %s: %w", host, err)
	}
	return addr, nil
}

// run runs one of avahi's clients in the namespace, on this avahi's bus,
// and returns its standard output; the error carries its standard error.
func (a *Avahi) run(ctx context.Context, prog string, args ...string) (string, error) {
	cmd := a.ns.Command(ctx, prog, args...)
	cmd.Env = append(os.Environ(), a.env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", filepath.Base(prog), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Resolve runs Browse until a resolved ("=") IPv4 line for instance appears
// and returns it, or fails when ctx is done; the error then includes the
// last output seen.
func (a *Avahi) Resolve(ctx context.Context, serviceType, instance string) (AvahiService, error) {
	var last []AvahiService
	var lastErr error
	for {
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		svcs, err := a.Browse(bctx, serviceType)
		cancel()
		if s, ok := findAvahi(svcs, "=", instance); ok {
			return s, nil
		}
		last, lastErr = svcs, err
		select {
		case <-ctx.Done():
			return AvahiService{}, fmt.Errorf("avahi-browse never resolved %q (last lines %+v, last error %v): %w", instance, last, lastErr, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func lookSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// dbusConfig is a system bus that lets anyone own and call anything: it is
// private to one test.
const dbusConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`

// avahiConfig: IPv4 only (the veth has no IPv6 beyond a link-local address
// still in duplicate address detection), one interface, nothing published
// of its own but its host name.
const avahiConfig = `[server]
host-name=%s
use-ipv4=yes
use-ipv6=no
allow-interfaces=%s
enable-dbus=yes

[wide-area]
enable-wide-area=no

[publish]
publish-hinfo=no
publish-workstation=no

[reflector]
enable-reflector=no
`
