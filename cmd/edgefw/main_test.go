package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func edgefw(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func keygenIn(t *testing.T, dir string) (priv, pub string) {
	t.Helper()
	if code, _, stderr := edgefw(t, "keygen", "-out", dir); code != 0 {
		t.Fatalf("keygen: %d %s", code, stderr)
	}
	pubs, _ := filepath.Glob(filepath.Join(dir, "*pub*"))
	privs, _ := filepath.Glob(filepath.Join(dir, "*.key"))
	if len(pubs) != 1 || len(privs) != 1 {
		t.Fatalf("keygen wrote %v %v", pubs, privs)
	}
	if fi, _ := os.Stat(privs[0]); fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v, want 0600", fi.Mode().Perm())
	}
	return privs[0], pubs[0]
}

func TestKeygenBuildVerify(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	priv, pub := keygenIn(t, filepath.Join(dir, "k1"))
	_, otherPub := keygenIn(t, filepath.Join(dir, "k2"))
	payload := filepath.Join(dir, "payload")
	os.MkdirAll(payload, 0o755)
	os.WriteFile(filepath.Join(payload, "edged"), []byte("binary"), 0o755)
	out := filepath.Join(dir, "fw.bundle")
	if code, _, stderr := edgefw(t, "build", "-key", priv, "-version", "1.3.0", "-target", "linux-amd64", "-o", out, payload); code != 0 {
		t.Fatalf("build: %d %s", code, stderr)
	}
	if code, stdout, stderr := edgefw(t, "verify", "-pub", pub, out); code != 0 || !strings.Contains(stdout, "OK") {
		t.Fatalf("verify good bundle: %d %q %q", code, stdout, stderr)
	}
	// Rotation: a comma-separated set where one key signed it.
	if code, _, stderr := edgefw(t, "verify", "-pub", otherPub+","+pub, out); code != 0 {
		t.Fatalf("verify with two keys: %s", stderr)
	}
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"wrong key":    {[]string{"-pub", otherPub, out}, "not signed by a trusted release key"},
		"other target": {[]string{"-pub", pub, "-target", "linux-arm64", out}, "another target"},
		"older":        {[]string{"-pub", pub, "-floor", "1.4.0", out}, "anti-rollback floor"},
	} {
		code, _, stderr := edgefw(t, append([]string{"verify"}, tc.args...)...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, %q; want exit 1 and %q", name, code, stderr, tc.want)
		}
	}
	data, _ := os.ReadFile(out)
	tampered := filepath.Join(dir, "tampered.bundle")
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	os.WriteFile(tampered, bad, 0o644)
	if code, _, stderr := edgefw(t, "verify", "-pub", pub, tampered); code != 1 || !strings.Contains(stderr, "does not match its signed manifest") {
		t.Errorf("tampered: exit %d %q", code, stderr)
	}
	trunc := filepath.Join(dir, "trunc.bundle")
	os.WriteFile(trunc, data[:len(data)-2], 0o644)
	if code, _, stderr := edgefw(t, "verify", "-pub", pub, trunc); code != 1 || !strings.Contains(stderr, "truncated") {
		t.Errorf("truncated: exit %d %q", code, stderr)
	}
	if code, _, _ := edgefw(t, "verify", out); code != 2 {
		t.Errorf("verify without -pub: exit %d, want 2", code)
	}
}
