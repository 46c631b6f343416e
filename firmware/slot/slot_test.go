package slot_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/internal/fwtest"
	"github.com/campusedge/campusedge/firmware/slot"
)

func makeBundle(t *testing.T, k fwtest.Keys, version, content string) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "edged"), []byte("#!/bin/sh\n# "+content+"\n"), 0o755)
	os.MkdirAll(filepath.Join(dir, "share"), 0o755)
	os.WriteFile(filepath.Join(dir, "share", "v"), []byte(version), 0o644)
	out := filepath.Join(t.TempDir(), "b")
	if _, err := bundle.Create(bundle.Build{Dir: dir, Product: "campusedge", Target: "t", Version: version, Entry: "edged"}, k.Priv, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func install(t *testing.T, m *slot.Manager, path string) (string, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pol, err := m.Policy("campusedge", "t")
	if err != nil {
		t.Fatal(err)
	}
	r, err := bundle.Open(bufio.NewReader(f), m.Keyring(), pol)
	if err != nil {
		return "", err
	}
	return m.Install(context.Background(), r)
}

func TestInstallSwitchCommitAndFloor(t *testing.T) {
	t.Parallel()
	k := fwtest.NewKeys(t, t.TempDir())
	be, _ := slot.NewDir(t.TempDir())
	m := slot.NewManager(be, k.Ring, 3)
	if _, err := m.Boot(); !errors.Is(err, slot.ErrNothingInstalled) {
		t.Fatalf("empty: %v", err)
	}
	s1, err := install(t, m, makeBundle(t, k, "1.0.0", "one"))
	if err != nil || s1 != slot.A {
		t.Fatalf("install 1: %s %v", s1, err)
	}
	if err := m.Switch(s1); err != nil {
		t.Fatal(err)
	}
	b, err := m.Boot()
	if err != nil || b.Slot != slot.A || !b.Trial || b.Boots != 1 {
		t.Fatalf("boot: %+v %v", b, err)
	}
	if _, err := install(t, m, makeBundle(t, k, "1.1.0", "two")); !errors.Is(err, slot.ErrOnTrial) {
		t.Fatalf("install during trial: %v, want ErrOnTrial", err)
	}
	if _, err := m.Commit(slot.A); err != nil {
		t.Fatal(err)
	}
	s2, err := install(t, m, makeBundle(t, k, "1.1.0", "two"))
	if err != nil || s2 != slot.B {
		t.Fatalf("install 2: %s %v", s2, err)
	}
	if err := m.Switch(s2); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Commit(slot.B); err != nil {
		t.Fatal(err)
	}
	st, _ := m.State()
	if st.Active != slot.B || st.Previous != slot.A || st.Trial || st.Floor != "1.1.0" {
		t.Fatalf("state %+v", st)
	}
	// Anti-rollback: 1.0.5 is below the committed floor 1.1.0.
	if _, err := install(t, m, makeBundle(t, k, "1.0.5", "old")); !errors.Is(err, bundle.ErrRollback) {
		t.Fatalf("older bundle: %v, want ErrRollback", err)
	}
}

func TestInterruptedInstallIsDetectedAndErased(t *testing.T) {
	t.Parallel()
	k := fwtest.NewKeys(t, t.TempDir())
	root := t.TempDir()
	be, _ := slot.NewDir(root)
	m := slot.NewManager(be, k.Ring, 3)
	s, _ := install(t, m, makeBundle(t, k, "1.0.0", "one"))
	m.Switch(s)
	m.Commit(s)
	// Simulate the state a power cut mid-install leaves: the marker is set
	// and slot b holds part of the files but no manifest.
	st, _ := be.LoadState()
	st.Txn = &slot.Txn{Op: "install", Slot: slot.B, Version: "1.1.0"}
	be.StoreState(st)
	os.MkdirAll(filepath.Join(root, "b", "files"), 0o755)
	os.WriteFile(filepath.Join(root, "b", "files", "edged"), []byte("half"), 0o755)
	b, err := m.Boot()
	if err != nil || b.Slot != slot.A || b.Version != "1.0.0" {
		t.Fatalf("boot after cut: %+v %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(root, "b")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("half-installed slot b not erased: %v", err)
	}
	if st, _ := m.State(); st.Txn != nil {
		t.Fatalf("marker not cleared: %+v", st.Txn)
	}
}

func TestDamagedActiveSlotFallsBack(t *testing.T) {
	t.Parallel()
	k := fwtest.NewKeys(t, t.TempDir())
	root := t.TempDir()
	be, _ := slot.NewDir(root)
	m := slot.NewManager(be, k.Ring, 3)
	for _, v := range []string{"1.0.0", "1.1.0"} {
		s, err := install(t, m, makeBundle(t, k, v, v))
		if err != nil {
			t.Fatal(err)
		}
		m.Switch(s)
		m.Commit(s)
	}
	os.WriteFile(filepath.Join(root, "b", "files", "share", "v"), []byte("9.9.9"), 0o644) // bit rot or tampering
	b, err := m.Boot()
	if err != nil || b.Slot != slot.A || b.FellBack == "" {
		t.Fatalf("boot with damaged slot: %+v %v", b, err)
	}
	// Both damaged: refuse to run anything.
	os.WriteFile(filepath.Join(root, "a", "files", "edged"), []byte("evil"), 0o755)
	if _, err := m.Boot(); err == nil {
		t.Fatal("booted a damaged slot")
	}
	// Switch refuses a damaged slot too.
	if err := m.Switch(slot.B); err == nil {
		t.Fatal("switched to a damaged slot")
	}
}

func TestBootCounterFallsBack(t *testing.T) {
	t.Parallel()
	k := fwtest.NewKeys(t, t.TempDir())
	be, _ := slot.NewDir(t.TempDir())
	m := slot.NewManager(be, k.Ring, 2)
	s, _ := install(t, m, makeBundle(t, k, "1.0.0", "one"))
	m.Switch(s)
	m.Commit(s)
	s2, _ := install(t, m, makeBundle(t, k, "2.0.0", "two"))
	m.Switch(s2)
	for i := 1; i <= 2; i++ {
		b, _ := m.Boot()
		if b.Slot != slot.B || b.Boots != i {
			t.Fatalf("boot %d: %+v", i, b)
		}
	}
	b, err := m.Boot()
	if err != nil || b.Slot != slot.A || b.FellBack == "" || b.Trial {
		t.Fatalf("third boot: %+v %v", b, err)
	}
	st, _ := m.State()
	if len(st.Bad) != 1 || st.Bad[0] != "2.0.0" || st.LastFallback == nil || st.Floor != "1.0.0" {
		t.Fatalf("state after fallback %+v", st)
	}
}
