package slot

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/firmware/bundle"
)

// Dir is the directory backend:
//
//	ROOT/state.json     the pointer (replaced by write-temp, fsync, rename, fsync dir)
//	ROOT/lock           flock(2) target
//	ROOT/a/, ROOT/b/    slots: files/ with the bundle's files, then
//	                    manifest.sig and manifest.json written last
type Dir struct {
	Root string
}

// NewDir creates ROOT if needed.
func NewDir(root string) (*Dir, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("firmware root %s: %w", root, err)
	}
	return &Dir{Root: root}, nil
}

const maxStateBytes = 64 << 10

// Lock takes an exclusive flock on ROOT/lock.
func (d *Dir) Lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(d.Root, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("firmware lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("firmware lock: %w", err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// LoadState reads ROOT/state.json.
func (d *Dir) LoadState() (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(d.Root, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read firmware state: %w", err)
	}
	if len(b) > maxStateBytes {
		return st, fmt.Errorf("firmware state %s is %d bytes; it cannot be valid", filepath.Join(d.Root, "state.json"), len(b))
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("firmware state %s is damaged: %w", filepath.Join(d.Root, "state.json"), err)
	}
	if st.Active != "" && checkName(st.Active) != nil || st.Previous != "" && checkName(st.Previous) != nil {
		return State{}, fmt.Errorf("firmware state names unknown slots %q/%q", st.Active, st.Previous)
	}
	return st, nil
}

// StoreState writes ROOT/state.json atomically and durably.
func (d *Dir) StoreState(st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(d.Root, "state.json"), append(b, '\n'), 0o644)
}

func (d *Dir) slotDir(slot string) string { return filepath.Join(d.Root, slot) }

// Erase removes the slot's contents.
func (d *Dir) Erase(slot string) error {
	if err := checkName(slot); err != nil {
		return err
	}
	p := d.slotDir(slot)
	// Remove the completeness markers first and sync, so a power cut
	// while removing the rest leaves a slot that reads as empty.
	for _, n := range []string{"manifest.json", "manifest.sig"} {
		if err := os.Remove(filepath.Join(p, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("erase slot %s: %w", slot, err)
		}
	}
	if _, err := os.Stat(p); err == nil {
		if err := fsutil.SyncDir(p); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("erase slot %s: %w", slot, err)
	}
	return fsutil.SyncDir(d.Root)
}

// Write installs r's files into the (erased) slot.
func (d *Dir) Write(ctx context.Context, slot string, r *bundle.Reader) error {
	if err := checkName(slot); err != nil {
		return err
	}
	p := d.slotDir(slot)
	files := filepath.Join(p, "files")
	if err := os.MkdirAll(files, 0o755); err != nil {
		return fmt.Errorf("slot %s: %w", slot, err)
	}
	dirs := map[string]bool{files: true}
	buf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, rd, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		dst := filepath.Join(files, filepath.FromSlash(f.Path))
		if !strings.HasPrefix(dst, files+string(filepath.Separator)) { // ValidPath already forbids this
			return fmt.Errorf("bundle path %q escapes the slot", f.Path)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("slot %s: %w", slot, err)
		}
		dirs[filepath.Dir(dst)] = true
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fs.FileMode(f.Mode))
		if err != nil {
			return fmt.Errorf("slot %s: %w", slot, err)
		}
		_, err = io.CopyBuffer(out, rd, buf)
		if err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("install %s into slot %s: %w", f.Path, slot, err)
		}
	}
	for dir := range dirs {
		if err := fsutil.SyncDir(dir); err != nil {
			return err
		}
	}
	kid := r.KeyID()
	sig := hex.EncodeToString(kid[:]) + " " + hex.EncodeToString(r.Signature()) + "\n"
	if err := fsutil.WriteFileAtomic(filepath.Join(p, "manifest.sig"), []byte(sig), 0o644); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(p, "manifest.json"), r.RawManifest(), 0o644)
}

// Read opens a slot.
func (d *Dir) Read(slot string) (Stored, error) {
	if err := checkName(slot); err != nil {
		return Stored{}, err
	}
	p := d.slotDir(slot)
	raw, err := readSmall(filepath.Join(p, "manifest.json"), bundle.MaxManifestBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return Stored{}, fmt.Errorf("slot %s: %w", slot, ErrEmpty)
	}
	if err != nil {
		return Stored{}, err
	}
	sl, err := readSmall(filepath.Join(p, "manifest.sig"), 1024)
	if err != nil {
		return Stored{}, fmt.Errorf("slot %s: %w", slot, err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(sl)))
	sc.Split(bufio.ScanWords)
	var words []string
	for sc.Scan() {
		words = append(words, sc.Text())
	}
	if len(words) != 2 {
		return Stored{}, fmt.Errorf("slot %s: manifest.sig is damaged", slot)
	}
	sig, err := hex.DecodeString(words[1])
	if err != nil {
		return Stored{}, fmt.Errorf("slot %s: manifest.sig is damaged: %w", slot, err)
	}
	return Stored{RawManifest: raw, Signature: sig, Files: os.DirFS(filepath.Join(p, "files"))}, nil
}

func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// EntryPath is ROOT/SLOT/files/ENTRY.
func (d *Dir) EntryPath(slot, entry string) string {
	return filepath.Join(d.slotDir(slot), "files", filepath.FromSlash(entry))
}
