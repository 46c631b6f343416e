package bundle

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type fixture struct {
	dir  string
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	keys *Keyring
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	privPath, pubPath, err := GenerateKey(filepath.Join(dir, "keys"), nil)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := LoadPrivateKey(privPath)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(filepath.Base(pubPath), "pub") {
		t.Fatalf("public key file %s has no 'pub' in its name", pubPath)
	}
	payload := filepath.Join(dir, "payload")
	mustWrite(t, filepath.Join(payload, "edged"), bytes.Repeat([]byte("ELF binary "), 5000), 0o755)
	mustWrite(t, filepath.Join(payload, "share", "notes.txt"), []byte("release notes\n"), 0o644)
	mustWrite(t, filepath.Join(payload, "share", "empty"), nil, 0o644)
	return &fixture{dir: dir, priv: priv, pub: pub, keys: NewKeyring(pub)}
}

func mustWrite(t *testing.T, p string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
}

func (fx *fixture) build(t *testing.T, b Build, key ed25519.PrivateKey) []byte {
	t.Helper()
	if b.Dir == "" {
		b.Dir = filepath.Join(fx.dir, "payload")
	}
	if b.Product == "" {
		b.Product = "campusedge"
	}
	if b.Target == "" {
		b.Target = "linux-amd64"
	}
	if b.Version == "" {
		b.Version = "1.2.0"
	}
	if b.Entry == "" {
		b.Entry = "edged"
	}
	out := filepath.Join(t.TempDir(), "fw.bundle")
	if _, err := Create(b, key, out); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func check(data []byte, keys *Keyring, p Policy) error {
	r, err := Open(bytes.NewReader(data), keys, p)
	if err != nil {
		return err
	}
	return r.Verify()
}

var edgePolicy = Policy{Product: "campusedge", Target: "linux-amd64", Installed: "1.1.0", Floor: "1.1.0"}

func TestGoodBundleVerifiesAndStreamsFiles(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	data := fx.build(t, Build{}, fx.priv)
	r, err := Open(bytes.NewReader(data), fx.keys, edgePolicy)
	if err != nil {
		t.Fatal(err)
	}
	m := r.Manifest()
	if m.Version != "1.2.0" || len(m.Files) != 3 || m.Entry != "edged" {
		t.Fatalf("manifest %+v", m)
	}
	got := map[string][]byte{}
	for {
		f, rd, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rd)
		if err != nil {
			t.Fatalf("%s: %v", f.Path, err)
		}
		got[f.Path] = b
	}
	want, _ := os.ReadFile(filepath.Join(fx.dir, "payload", "edged"))
	if !bytes.Equal(got["edged"], want) || string(got["share/notes.txt"]) != "release notes\n" || len(got["share/empty"]) != 0 {
		t.Fatalf("streamed files differ: %d files", len(got))
	}
	if _, _, err := VerifyManifest(r.RawManifest(), r.Signature(), fx.keys); err != nil {
		t.Fatalf("stored manifest does not re-verify: %v", err)
	}
}

// fileOffset is where the bundle's first file (alphabetically "edged") starts.
func fileOffset(t *testing.T, data []byte) int {
	t.Helper()
	n := int(data[8])<<24 | int(data[9])<<16 | int(data[10])<<8 | int(data[11])
	return 12 + n + 2 + sigBlockSize
}

func TestRefusesTamperedFile(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	data := fx.build(t, Build{}, fx.priv)
	for _, off := range []int{0, 1000, 54999} { // first, middle and last byte of "edged"
		bad := bytes.Clone(data)
		bad[fileOffset(t, data)+off] ^= 0x20
		err := check(bad, fx.keys, edgePolicy)
		if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "edged") {
			t.Fatalf("byte %d flipped: got %v, want ErrTampered naming edged", off, err)
		}
	}
	// The reader must refuse while streaming: the consumer sees the error at the end of the file.
	bad := bytes.Clone(data)
	bad[len(bad)-5] ^= 1 // inside share/notes.txt
	r, err := Open(bytes.NewReader(bad), fx.keys, edgePolicy)
	if err != nil {
		t.Fatal(err)
	}
	var sawErr error
	for sawErr == nil {
		var rd io.Reader
		_, rd, sawErr = r.Next()
		if sawErr == nil {
			_, sawErr = io.ReadAll(rd)
		}
	}
	if !errors.Is(sawErr, ErrTampered) {
		t.Fatalf("got %v, want ErrTampered", sawErr)
	}
}

func TestRefusesTamperedManifest(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	data := fx.build(t, Build{}, fx.priv)
	i := bytes.Index(data, []byte(`"1.2.0"`))
	bad := bytes.Clone(data)
	bad[i+3] = '9' // "1.9.0": same length, so only the signature can catch it
	if err := check(bad, fx.keys, edgePolicy); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("got %v, want ErrBadSignature", err)
	}
}

func TestRefusesWrongKey(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	other := newFixture(t)
	data := fx.build(t, Build{}, other.priv)
	if err := check(data, fx.keys, edgePolicy); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("got %v, want ErrUntrusted", err)
	}
	// A signature by another key under a trusted key's id is a bad signature.
	fixed := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	good := fx.build(t, Build{Created: fixed}, fx.priv)
	forged := fx.build(t, Build{Created: fixed}, other.priv)
	mlen := fileOffset(t, good) - sigBlockSize
	copy(forged[mlen:mlen+KeyIDSize], good[mlen:mlen+KeyIDSize])
	if err := check(forged, fx.keys, edgePolicy); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("got %v, want ErrBadSignature", err)
	}
}

func TestKeyRotationTrustsEveryKeyInTheRing(t *testing.T) {
	t.Parallel()
	oldK, newK := newFixture(t), newFixture(t)
	ring := NewKeyring(oldK.pub, newK.pub)
	for name, priv := range map[string]ed25519.PrivateKey{"old": oldK.priv, "new": newK.priv} {
		if err := check(oldK.build(t, Build{}, priv), ring, edgePolicy); err != nil {
			t.Fatalf("%s key: %v", name, err)
		}
	}
	// Loading from a directory picks up every *pub* file.
	dir := t.TempDir()
	for i, fx := range []*fixture{oldK, newK} {
		src, _ := filepath.Glob(filepath.Join(fx.dir, "keys", "*.pub"))
		b, _ := os.ReadFile(src[0])
		mustWrite(t, filepath.Join(dir, "release-"+string(rune('a'+i))+".pub"), b, 0o644)
	}
	mustWrite(t, filepath.Join(dir, "README"), []byte("not a key"), 0o644)
	ring2, err := LoadKeyring(dir)
	if err != nil || ring2.Len() != 2 {
		t.Fatalf("LoadKeyring: %v, %d keys", err, ring2.Len())
	}
}

func TestRefusesUnsignedManifest(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	data := fx.build(t, Build{}, nil)
	if err := check(data, fx.keys, edgePolicy); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("got %v, want ErrUnsigned", err)
	}
}

func TestRefusesOlderVersionUnlessSignedAllowRollback(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	old := fx.build(t, Build{Version: "1.0.9"}, fx.priv)
	if err := check(old, fx.keys, edgePolicy); !errors.Is(err, ErrRollback) {
		t.Fatalf("got %v, want ErrRollback", err)
	}
	// A signed rollback holds for the edges it names, until it expires
	// (issue 14 finding 11: allow_rollback alone was replayable without bound).
	now := time.Now()
	allowed := fx.build(t, Build{Version: "1.0.9", AllowRollback: true, RollbackEdges: []string{"edge-a"}, RollbackExpires: now.Add(time.Hour)}, fx.priv)
	here := edgePolicy
	here.Edge, here.Now = "edge-a", now
	if err := check(allowed, fx.keys, here); err != nil {
		t.Fatalf("signed rollback for this edge refused: %v", err)
	}
	other := here
	other.Edge = "edge-b"
	if err := check(allowed, fx.keys, other); !errors.Is(err, ErrRollback) {
		t.Fatalf("rollback for another edge: %v, want ErrRollback", err)
	}
	later := here
	later.Now = now.Add(2 * time.Hour)
	if err := check(allowed, fx.keys, later); !errors.Is(err, ErrRollback) {
		t.Fatalf("expired rollback: %v, want ErrRollback", err)
	}
	if _, err := Create(Build{Dir: t.TempDir(), Product: "campusedge", Target: "linux-amd64", Version: "1.0.9", AllowRollback: true, Entry: "edged"}, fx.priv, filepath.Join(t.TempDir(), "b")); err == nil {
		t.Fatal("a rollback bundle without edges and expiry was built")
	}
	// Not newer than the running version, or failed here: refused without a rollback.
	same := fx.build(t, Build{Version: "1.1.0"}, fx.priv)
	running := Policy{Installed: "1.1.0"}
	if err := check(same, fx.keys, running); !errors.Is(err, ErrNotNewer) {
		t.Fatalf("the running version again: %v, want ErrNotNewer", err)
	}
	failed := fx.build(t, Build{Version: "1.2.0"}, fx.priv)
	if err := check(failed, fx.keys, Policy{Installed: "1.1.0", Failed: []string{"1.2.0"}}); !errors.Is(err, ErrFailedHere) {
		t.Fatalf("a version that failed here: %v, want ErrFailedHere", err)
	}
	// Numeric, not lexical, comparison: 1.10.0 is newer than 1.9.0.
	if err := check(fx.build(t, Build{Version: "1.10.0"}, fx.priv), fx.keys, Policy{Floor: "1.9.0"}); err != nil {
		t.Fatalf("1.10.0 over floor 1.9.0: %v", err)
	}
	// min_version: an installed version too old for this bundle.
	needs := fx.build(t, Build{Version: "2.0.0", MinVersion: "1.5.0"}, fx.priv)
	if err := check(needs, fx.keys, edgePolicy); !errors.Is(err, ErrNeedsNewer) {
		t.Fatalf("got %v, want ErrNeedsNewer", err)
	}
}

func TestRefusesOtherTargetAndProduct(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	if err := check(fx.build(t, Build{Target: "linux-arm64"}, fx.priv), fx.keys, edgePolicy); !errors.Is(err, ErrWrongTarget) {
		t.Fatalf("got %v, want ErrWrongTarget", err)
	}
	if err := check(fx.build(t, Build{Product: "classterm"}, fx.priv), fx.keys, edgePolicy); !errors.Is(err, ErrWrongProduct) {
		t.Fatalf("got %v, want ErrWrongProduct", err)
	}
}

func TestRefusesTruncatedBundleAtEveryBoundary(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	data := fx.build(t, Build{}, fx.priv)
	fo := fileOffset(t, data)
	cuts := []int{0, 5, 8, 11, 12, 40, fo - sigBlockSize - 1, fo - 10, fo, fo + 1, fo + 30000, len(data) - 1}
	for _, n := range cuts {
		err := check(data[:n], fx.keys, edgePolicy)
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("cut at %d of %d: got %v, want ErrTruncated", n, len(data), err)
		}
	}
	if err := check(append(bytes.Clone(data), 'x'), fx.keys, edgePolicy); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing byte: got %v, want ErrMalformed", err)
	}
}

func TestManifestValidation(t *testing.T) {
	t.Parallel()
	good := Manifest{Format: 1, Product: "campusedge", Target: "linux-amd64", Version: "1.0.0", Entry: "edged",
		Created: time.Unix(0, 0).UTC().Format(time.RFC3339),
		Files:   []File{{Path: "edged", Size: 1, Mode: 0o755, SHA256: strings.Repeat("a", 64)}}}
	b, err := good.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeManifest(b); err != nil {
		t.Fatal(err)
	}
	mut := func(f func(m *Manifest)) Manifest {
		m := good
		m.Files = append([]File(nil), good.Files...)
		f(&m)
		return m
	}
	bad := map[string]Manifest{
		"path traversal": mut(func(m *Manifest) {
			m.Files = append(m.Files, File{Path: "../etc/passwd", Mode: 0o644, SHA256: strings.Repeat("a", 64)})
		}),
		"absolute": mut(func(m *Manifest) {
			m.Files = append(m.Files, File{Path: "/etc/x", Mode: 0o644, SHA256: strings.Repeat("a", 64)})
		}),
		"hidden": mut(func(m *Manifest) {
			m.Files = append(m.Files, File{Path: "a/.x", Mode: 0o644, SHA256: strings.Repeat("a", 64)})
		}),
		"dup": mut(func(m *Manifest) { m.Files = append(m.Files, m.Files[0]) }),
		"file and dir": mut(func(m *Manifest) {
			m.Files = append(m.Files, File{Path: "edged/x", Mode: 0o644, SHA256: strings.Repeat("a", 64)})
		}),
		"huge":           mut(func(m *Manifest) { m.Files[0].Size = MaxFileBytes + 1 }),
		"negative":       mut(func(m *Manifest) { m.Files[0].Size = -1 }),
		"setuid":         mut(func(m *Manifest) { m.Files[0].Mode = 0o4755 }),
		"entry missing":  mut(func(m *Manifest) { m.Entry = "nope" }),
		"entry not exec": mut(func(m *Manifest) { m.Files[0].Mode = 0o644 }),
		"version":        mut(func(m *Manifest) { m.Version = "1.02.0" }),
		"min > version":  mut(func(m *Manifest) { m.MinVersion = "2.0.0" }),
		"format":         mut(func(m *Manifest) { m.Format = 2 }),
		"hash":           mut(func(m *Manifest) { m.Files[0].SHA256 = strings.Repeat("A", 64) }),
	}
	for name, m := range bad {
		if err := m.Validate(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	// Non-canonical spellings of a valid manifest are refused.
	for _, s := range [][]byte{append(bytes.Clone(b), ' '), bytes.Replace(b, []byte(`{"format":1,`), []byte(`{ "format":1,`), 1),
		bytes.Replace(b, []byte(`"format":1,`), []byte(`"format":1,"extra":2,`), 1)} {
		if _, err := DecodeManifest(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: got %v, want ErrMalformed", s, err)
		}
	}
}

func FuzzDecodeManifest(f *testing.F) {
	good := Manifest{Format: 1, Product: "campusedge", Target: "linux-amd64", Version: "1.0.0", Entry: "edged",
		Created: "2026-01-01T00:00:00Z", Files: []File{{Path: "edged", Size: 1, Mode: 0o755, SHA256: strings.Repeat("a", 64)}}}
	b, _ := good.Encode()
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"format":1,"files":[{"path":"../x"}]}`))
	f.Add([]byte("null"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeManifest(data)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded manifest does not validate: %v", err)
		}
		again, err := m.Encode()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("decoded manifest is not canonical")
		}
		for _, fl := range m.Files {
			if !ValidPath(fl.Path) || strings.Contains("/"+fl.Path+"/", "/../") || strings.HasPrefix(fl.Path, "/") {
				t.Fatalf("unsafe path %q accepted", fl.Path)
			}
		}
	})
}

func FuzzOpenBundle(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	keys := NewKeyring(pub)
	dir := f.TempDir()
	os.WriteFile(filepath.Join(dir, "edged"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	out := filepath.Join(f.TempDir(), "b")
	if _, err := Create(Build{Dir: dir, Product: "campusedge", Target: "t", Version: "1.0.0", Entry: "edged"}, priv, out); err != nil {
		f.Fatal(err)
	}
	good, _ := os.ReadFile(out)
	f.Add(good)
	f.Add(good[:40])
	f.Add([]byte(Magic + "\x00\x00\x00\x02{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Open(bytes.NewReader(data), keys, Policy{})
		if err != nil {
			return
		}
		if err := r.Verify(); err == nil && !bytes.Equal(data, good) {
			// Any other byte string that verifies would be a forgery.
			t.Fatalf("a modified bundle verified")
		}
	})
}
