package bundle

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BenchmarkVerify measures streaming verification of a 64 MiB bundle
// (header, signature, per-file SHA-256) against the floor it cannot beat:
// a plain SHA-256 of the same bytes from the same page cache in the same
// run, and coreutils sha256sum of the bundle file.
// go test -run '^$' -bench . -benchtime 20x ./firmware/bundle/
func BenchmarkVerify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	dir := b.TempDir()
	big := make([]byte, 64<<20)
	rand.Read(big)
	os.WriteFile(filepath.Join(dir, "edged"), big[:48<<20], 0o755)
	for i := range 16 {
		os.WriteFile(filepath.Join(dir, "share-"+string(rune('a'+i))), big[48<<20+i<<20:48<<20+(i+1)<<20], 0o644)
	}
	out := filepath.Join(b.TempDir(), "b")
	if _, err := Create(Build{Dir: dir, Product: "campusedge", Target: "t", Version: "1.0.0", Entry: "edged"}, priv, out); err != nil {
		b.Fatal(err)
	}
	fi, _ := os.Stat(out)
	keys := NewKeyring(pub)
	b.Run("bundle.Verify", func(b *testing.B) {
		b.SetBytes(fi.Size())
		for b.Loop() {
			f, _ := os.Open(out)
			r, err := Open(bufio.NewReaderSize(f, 1<<20), keys, Policy{})
			if err == nil {
				err = r.Verify()
			}
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sha256-of-file", func(b *testing.B) {
		b.SetBytes(fi.Size())
		for b.Loop() {
			f, _ := os.Open(out)
			h := sha256.New()
			io.Copy(h, f)
			f.Close()
		}
	})
	b.Run("coreutils-sha256sum", func(b *testing.B) {
		if _, err := exec.LookPath("sha256sum"); err != nil {
			b.Skip("sha256sum not installed")
		}
		b.SetBytes(fi.Size())
		for b.Loop() {
			if err := exec.Command("sha256sum", out).Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
