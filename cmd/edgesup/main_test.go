package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/campusedge/campusedge/firmware/bundle"
)

func TestInstallAndStatus(t *testing.T) {
	t.Parallel()
	keys := t.TempDir()
	privPath, pubPath, err := bundle.GenerateKey(keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := bundle.LoadPrivateKey(privPath)
	payload := t.TempDir()
	os.WriteFile(filepath.Join(payload, "edged"), []byte("bin"), 0o755)
	good := filepath.Join(t.TempDir(), "good")
	if _, err := bundle.Create(bundle.Build{Dir: payload, Product: "campusedge", Target: "t1", Version: "1.0.0", Entry: "edged"}, priv, good); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	edgesup := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"-root", root, "-keys", pubPath}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, _, stderr := edgesup("-target", "t2", "install", good); code != 1 || !strings.Contains(stderr, "another target") {
		t.Fatalf("install for another target: %d %s", code, stderr)
	}
	data, _ := os.ReadFile(good)
	data[len(data)-1] ^= 1
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, data, 0o644)
	if code, _, stderr := edgesup("-target", "t1", "install", bad); code != 1 || !strings.Contains(stderr, "does not match") {
		t.Fatalf("install tampered: %d %s", code, stderr)
	}
	if code, stdout, stderr := edgesup("-target", "t1", "install", good); code != 0 || !strings.Contains(stdout, "slot a") {
		t.Fatalf("install: %d %s %s", code, stdout, stderr)
	}
	code, stdout, _ := edgesup("status")
	var st struct {
		Active string
		Trial  bool
		Txn    any
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &st) != nil || st.Active != "a" || !st.Trial || st.Txn != nil {
		t.Fatalf("status: %d %s", code, stdout)
	}
	if code, _, _ := edgesup("bogus"); code != 2 {
		t.Fatalf("unknown command: %d", code)
	}
}
