//go:build linux

package netnstest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envInside marks the re-run of a test binary inside its namespace.
const envInside = "CAMPUSEDGE_NETNSTEST_INSIDE"

// InNetns reports whether this process is a test binary re-run by
// RunInNetns or Command inside a fresh user and network namespace.
func InNetns() bool { return os.Getenv(envInside) == "1" }

// Command returns a command that runs the current test binary with args in
// a new user and network namespace (mapped to uid/gid 0 there, so no root is
// needed outside), with InNetns true. The namespace has only lo, down: call
// SetupLoopbackMulticast inside.
func Command(ctx context.Context, args ...string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("netnstest: own executable: %w", err)
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), envInside+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		Pdeathsig:   syscall.SIGKILL, // fires when the forking thread ends: see Netns.Command
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd, nil
}

// RunInNetns re-runs the test named testName (t.Name() of the caller, as a
// rule) in a fresh user and network namespace and carries its outcome over
// to t: t fails if it failed or did not run, and is skipped if it skipped.
// args are extra flags for the test binary (for example a test's own
// -latency-runs=50). The child's output is logged to t (shown with -v).
func RunInNetns(t testing.TB, testName string, args ...string) {
	t.Helper()
	ctx := context.Background()
	timeout := 5 * time.Minute
	if tt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := tt.Deadline(); ok {
			timeout = time.Until(dl) - 5*time.Second
		}
	}
	if timeout < 5*time.Second {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	flags := []string{
		"-test.run=" + runPattern(testName),
		"-test.v=true",
		"-test.count=1",
		"-test.timeout=" + timeout.String(),
	}
	if testing.Short() {
		flags = append(flags, "-test.short=true")
	}
	cmd, err := Command(ctx, append(flags, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		skipOrFail(t, fmt.Sprintf("cannot create a user+network namespace (kernel.unprivileged_userns_clone or user.max_user_namespaces?): %v", err))
	}
	err = cmd.Wait()
	text := out.String()
	t.Logf("in netns: %s\n%s", strings.Join(cmd.Args[1:], " "), indent(text))
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr) || ctx.Err() != nil:
		t.Fatalf("%s failed in its network namespace (%v); its output is above", testName, err)
	case err != nil:
		t.Fatalf("running %s in a network namespace: %v", testName, err)
	case strings.Contains(text, "--- SKIP: "+testName+" "):
		t.Skipf("%s skipped in its network namespace; see the output above", testName)
	case !strings.Contains(text, "--- PASS: "+testName+" "):
		t.Fatalf("%s did not run in its network namespace (pattern %s); output above", testName, runPattern(testName))
	}
}

// RunBenchmarkInNetns re-runs benchmark b in a fresh user and network
// namespace, with the same -test.benchtime, and reports the child's
// figures (ns/op and any custom metrics) as b's own. The caller returns
// after it; inside (InNetns), the benchmark calls SetupLoopbackMulticast and
// does the work.
//
//	func BenchmarkX(b *testing.B) {
//		if !netnstest.InNetns() {
//			netnstest.RunBenchmarkInNetns(b)
//			return
//		}
//		...
//	}
func RunBenchmarkInNetns(b *testing.B) {
	b.Helper()
	benchtime := "1s"
	if f := flag.Lookup("test.benchtime"); f != nil {
		benchtime = f.Value.String()
	}
	if n := strings.TrimSuffix(benchtime, "x"); n != benchtime && n != "1" && b.N == 1 {
		return // the probe run before the real -benchtime=Nx run: nothing to measure
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd, err := Command(ctx, "-test.run=^$", "-test.bench="+runPattern(b.Name()), "-test.benchtime="+benchtime,
		"-test.count=1", "-test.cpu="+strconv.Itoa(runtime.GOMAXPROCS(0)))
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		if cmd.Process == nil {
			skipOrFail(b, fmt.Sprintf("cannot create a user+network namespace: %v", err))
		}
		b.Fatalf("%s in its network namespace: %v\n%s", b.Name(), err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || (f[0] != b.Name() && !strings.HasPrefix(f[0], b.Name()+"-")) {
			continue
		}
		// Name N value unit [value unit]...
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				b.Fatalf("cannot parse %q", line)
			}
			b.ReportMetric(v, f[i+1])
		}
		b.Logf("in netns: %s", line)
		return
	}
	b.Fatalf("no result line for %s in:\n%s", b.Name(), out)
}

// Isolate makes the calling test run in its own user and network namespace
// with multicast on lo. Outside (the normal test run) it re-runs the test
// there via RunInNetns and returns false: the caller must return at once.
// Inside, it sets lo up for multicast and returns true: the test goes on.
//
//	func TestX(t *testing.T) {
//		if !netnstest.Isolate(t) {
//			return
//		}
//		// multicast on lo works here, and reaches nothing outside
//	}
func Isolate(t *testing.T, args ...string) bool {
	t.Helper()
	if !InNetns() {
		RunInNetns(t, t.Name(), args...)
		return false
	}
	if err := SetupLoopbackMulticast(); err != nil {
		t.Fatal(err)
	}
	return true
}

// SetupLoopbackMulticast makes lo carry multicast, in a namespace this
// process owns (it refuses to run outside one made by RunInNetns or Command,
// so that it can never change the host's lo): lo up, MULTICAST flag on, and
// routes sending IPv4 and IPv6 multicast out of lo. Without the routes a
// socket joining a group with no interface given fails or picks nothing.
// It is idempotent. IPv4 multicast then works on lo; IPv6 multicast does
// not, whatever the route (see AddVeth).
func SetupLoopbackMulticast() error {
	if !InNetns() {
		return errors.New("netnstest: SetupLoopbackMulticast outside a test namespace; refusing to change the host's lo")
	}
	steps := [][]string{
		{"link", "set", "lo", "up"},
		{"link", "set", "lo", "multicast", "on"},
		{"route", "replace", "224.0.0.0/4", "dev", "lo"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		if err := ip("-6", "route", "replace", "ff00::/8", "dev", "lo", "table", "local"); err != nil {
			return err
		}
	}
	return nil
}

// AddVeth adds a veth pair, name and name+"p", inside the test namespace
// (it refuses to run outside one), both ends up and multicast-capable,
// with addr4 (e.g. "10.9.0.1/24") and addr6 (e.g. "fe80::1/64", added
// without duplicate address detection so it is usable at once) on name.
// Either address may be empty.
//
// Use it for IPv6 multicast: Linux does not deliver IPv6 multicast on lo
// (sends fail route lookup, Ip6OutNoRoutes, even with the ff00::/8 route
// SetupLoopbackMulticast adds), while a veth with a link-local address
// loops it back to local sockets as a real LAN interface does.
func AddVeth(name, addr4, addr6 string) error {
	if !InNetns() {
		return errors.New("netnstest: AddVeth outside a test namespace; refusing to change the host")
	}
	steps := [][]string{
		{"link", "add", name, "type", "veth", "peer", "name", name + "p"},
		{"link", "set", name, "up"},
		{"link", "set", name + "p", "up"},
	}
	if addr4 != "" {
		steps = append(steps, []string{"addr", "add", addr4, "dev", name})
	}
	if addr6 != "" {
		steps = append(steps, []string{"-6", "addr", "add", addr6, "dev", name, "nodad"})
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// ipPath finds iproute2's ip, which is often outside a non-root PATH.
func ipPath() (string, error) {
	if p, err := exec.LookPath("ip"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("netnstest: iproute2's ip not found (apt-get install iproute2)")
}

func ip(args ...string) error {
	_, err := ipOutput(args...)
	return err
}

// ipOutput runs ip with args and returns its standard output.
func ipOutput(args ...string) (string, error) {
	p, err := ipPath()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(p, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()+string(out)))
	}
	return string(out), nil
}

// AddAddr adds an address (e.g. "10.231.0.1/32") to dev inside the test
// namespace (it refuses to run outside one): a LAN address on lo is enough
// for a page that must not be a loopback secure context, or for an address
// that appears while a server runs, as DHCP does.
func AddAddr(dev, cidr string) error {
	if !InNetns() {
		return errors.New("netnstest: AddAddr outside a test namespace; refusing to change the host")
	}
	return ip("addr", "add", cidr, "dev", dev)
}

// DisableIPv6 turns IPv6 off on dev inside the test namespace (it refuses
// to run outside one). A new link's IPv6 link-local address finishes
// duplicate address detection a second or two after the link comes up, and
// Chromium takes that change of addresses for a new network and aborts the
// page loads in flight (net::ERR_NETWORK_CHANGED); a test LAN that needs no
// IPv6 turns it off before the browser starts.
func DisableIPv6(dev string) error {
	if !InNetns() {
		return errors.New("netnstest: DisableIPv6 outside a test namespace; refusing to change the host")
	}
	p := "/proc/sys/net/ipv6/conf/" + dev + "/disable_ipv6"
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return nil // no IPv6 in this kernel: nothing to wait for
	}
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("netnstest: turn IPv6 off on %s: %w", dev, err)
	}
	return nil
}
