// Package netnstest gives tests real multicast without touching the host's
// outside interface, using Linux network namespaces.
//
// Two kinds of helpers:
//
//   - Without root: Isolate (or RunInNetns + InNetns + SetupLoopbackMulticast)
//     re-runs one test of the current test binary in a fresh user and network
//     namespace whose only interface, lo, is set up for multicast. mDNS
//     advertisers and browsers in that test reach each other and nothing else.
//   - With root (CI runs as root): NewPair makes two named namespaces joined
//     by a veth pair on a private /24, Netns.Start runs any program inside one
//     (a re-run of the test binary or a built binary such as edged), and
//     Netns.StartAvahi runs a private dbus-daemon + avahi-daemon there so that
//     tests can check what standard DNS-SD tools see (Avahi.Browse,
//     Avahi.Watch, Avahi.ResolveHost4). Netns.DialContext connects from
//     inside a namespace, as a client on that host would.
//
// Root-only helpers skip the test when not root, except under CI=true, where
// they fail it: a check that silently skips in CI is a check that never runs.
package netnstest

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// skipOrFail skips t with reason, or fails it when CI=true.
func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: refusing to skip)", reason)
	}
	t.Skip(reason)
}

// RequireRoot skips t unless the process runs as root; under CI=true it
// fails t instead.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root (ip netns, veth, avahi-daemon)")
	}
}

// runPattern turns a test name (with subtests, "TestA/b") into an exact
// -test.run pattern.
func runPattern(testName string) string {
	parts := strings.Split(testName, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

func indent(s string) string {
	return "\t" + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n\t")
}
