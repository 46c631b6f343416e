//go:build !linux

package netnstest

import (
	"errors"
	"testing"
)

// InNetns is always false off Linux.
func InNetns() bool { return false }

// RunInNetns skips t (fails it under CI=true): network namespaces are Linux's.
func RunInNetns(t testing.TB, testName string, args ...string) {
	t.Helper()
	skipOrFail(t, "network namespaces need Linux")
}

// Isolate skips t off Linux and returns false.
func Isolate(t *testing.T, args ...string) bool {
	t.Helper()
	RunInNetns(t, t.Name(), args...)
	return false
}

// SetupLoopbackMulticast is not available off Linux.
func SetupLoopbackMulticast() error { return errors.New("netnstest: network namespaces need Linux") }

// RunBenchmarkInNetns skips b off Linux.
func RunBenchmarkInNetns(b *testing.B) {
	b.Helper()
	skipOrFail(b, "network namespaces need Linux")
}

// AddVeth is not available off Linux.
func AddVeth(name, addr4, addr6 string) error {
	return errors.New("netnstest: network namespaces need Linux")
}

// AddAddr needs Linux network namespaces.
func AddAddr(dev, cidr string) error { return errors.New("netnstest: network namespaces need Linux") }

// DisableIPv6 needs Linux network namespaces.
func DisableIPv6(dev string) error { return errors.New("netnstest: network namespaces need Linux") }
