package slot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/campusedge/campusedge/firmware/bundle"
)

// DefaultMaxBoots is how many starts a slot on trial gets before it is
// abandoned.
const DefaultMaxBoots = 3

// Manager applies the update rules to a Backend. Every change of State
// happens under the backend's lock, read-modify-write.
type Manager struct {
	b        Backend
	keys     *bundle.Keyring
	maxBoots int
	now      func() time.Time
}

// NewManager returns a manager; keys are the trusted release keys slots
// are re-verified against.
func NewManager(b Backend, keys *bundle.Keyring, maxBoots int) *Manager {
	if maxBoots <= 0 {
		maxBoots = DefaultMaxBoots
	}
	return &Manager{b: b, keys: keys, maxBoots: maxBoots, now: time.Now}
}

// Backend returns the backend.
func (m *Manager) Backend() Backend { return m.b }

func (m *Manager) update(f func(st *State) error) (State, error) {
	unlock, err := m.b.Lock()
	if err != nil {
		return State{}, err
	}
	defer unlock()
	st, err := m.b.LoadState()
	if err != nil {
		return State{}, err
	}
	if err := f(&st); err != nil {
		return st, err
	}
	st.Gen++
	return st, m.b.StoreState(st)
}

// State reads the pointer.
func (m *Manager) State() (State, error) {
	unlock, err := m.b.Lock()
	if err != nil {
		return State{}, err
	}
	defer unlock()
	return m.b.LoadState()
}

// Manifest returns a slot's stored manifest after checking its signature
// (not its files; Verify does that).
func (m *Manager) Manifest(slot string) (bundle.Manifest, error) {
	s, err := m.b.Read(slot)
	if err != nil {
		return bundle.Manifest{}, err
	}
	man, _, err := bundle.VerifyManifest(s.RawManifest, s.Signature, m.keys)
	if err != nil {
		return bundle.Manifest{}, fmt.Errorf("slot %s: %w", slot, err)
	}
	return man, nil
}

// Verify re-checks a slot completely: the manifest's signature by a
// trusted key, and every file's size, mode and SHA-256.
func (m *Manager) Verify(slot string) (bundle.Manifest, error) {
	s, err := m.b.Read(slot)
	if err != nil {
		return bundle.Manifest{}, err
	}
	man, _, err := bundle.VerifyManifest(s.RawManifest, s.Signature, m.keys)
	if err != nil {
		return bundle.Manifest{}, fmt.Errorf("slot %s: %w", slot, err)
	}
	buf := make([]byte, 256<<10)
	for _, f := range man.Files {
		if err := verifyFile(s.Files, f, buf); err != nil {
			return bundle.Manifest{}, fmt.Errorf("slot %s: %w", slot, err)
		}
	}
	return man, nil
}

func verifyFile(fsys fs.FS, f bundle.File, buf []byte) error {
	h, err := fsys.Open(f.Path)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", bundle.ErrTampered, f.Path, err)
	}
	defer h.Close()
	fi, err := h.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != f.Size || uint32(fi.Mode().Perm()) != f.Mode || !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is %d bytes mode %o, the manifest says %d bytes mode %o", bundle.ErrTampered, f.Path, fi.Size(), fi.Mode().Perm(), f.Size, f.Mode)
	}
	sum := sha256.New()
	if _, err := io.CopyBuffer(sum, io.LimitReader(h, f.Size+1), buf); err != nil {
		return fmt.Errorf("read %s: %w", f.Path, err)
	}
	if hex.EncodeToString(sum.Sum(nil)) != f.SHA256 {
		return fmt.Errorf("%w: %s changed on disk", bundle.ErrTampered, f.Path)
	}
	return nil
}

// Recover finishes what a power cut interrupted: an install marker means
// its slot is incomplete, so the slot is erased and the marker cleared.
// It returns the slot it erased, if any.
func (m *Manager) Recover() (string, error) {
	var erased string
	_, err := m.update(func(st *State) error {
		if st.Txn == nil {
			return nil
		}
		if st.Txn.Slot == st.Active {
			return fmt.Errorf("firmware state says an install into the active slot %s was interrupted; this never happens by itself: inspect %v", st.Active, st.Txn)
		}
		if err := m.b.Erase(st.Txn.Slot); err != nil {
			return err
		}
		erased = st.Txn.Slot
		st.Txn = nil
		return nil
	})
	return erased, err
}

// Policy is the bundle policy for this device now: the running version
// (for min_version) and the anti-rollback floor.
func (m *Manager) Policy(product, target string) (bundle.Policy, error) {
	st, err := m.State()
	if err != nil {
		return bundle.Policy{}, err
	}
	p := bundle.Policy{Product: product, Target: target, Floor: st.Floor, Failed: append([]string(nil), st.Bad...)}
	if st.Active != "" {
		man, err := m.Manifest(st.Active)
		if err == nil {
			p.Installed = man.Version
		}
	}
	return p, nil
}

// ErrOnTrial refuses an install while the active slot is still on trial:
// the inactive slot is the way back and must not be overwritten.
var ErrOnTrial = errors.New("the running version has not passed its health check yet; install after it is committed")

// Install writes a verified bundle into the inactive slot under a
// transaction marker and returns the slot. It does not switch.
func (m *Manager) Install(ctx context.Context, r *bundle.Reader) (string, error) {
	var target string
	man := r.Manifest()
	_, err := m.update(func(st *State) error {
		if st.Trial {
			return ErrOnTrial
		}
		if st.Txn != nil && st.Txn.Slot != st.Active {
			if err := m.b.Erase(st.Txn.Slot); err != nil {
				return err
			}
		}
		target = A
		if st.Active != "" {
			target = Other(st.Active)
		}
		st.Txn = &Txn{Op: "install", Slot: target, Version: man.Version, Started: m.now().UTC()}
		if st.Previous == target {
			st.Previous = "" // about to be overwritten: no longer a way back
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if err := m.b.Erase(target); err != nil {
		return "", err
	}
	if err := m.b.Write(ctx, target, r); err != nil {
		// Leave nothing half-written behind; a crash here is handled by Recover.
		if eerr := m.b.Erase(target); eerr == nil {
			_, _ = m.update(func(st *State) error { st.Txn = nil; return nil })
		}
		return "", err
	}
	_, err = m.update(func(st *State) error { st.Txn = nil; return nil })
	return target, err
}

// Switch makes slot the active one, on trial, after verifying it fully.
func (m *Manager) Switch(slot string) error {
	if err := checkName(slot); err != nil {
		return err
	}
	if _, err := m.Verify(slot); err != nil {
		return fmt.Errorf("will not switch to slot %s: %w", slot, err)
	}
	_, err := m.update(func(st *State) error {
		if st.Active == slot {
			return fmt.Errorf("slot %s is already active", slot)
		}
		if st.Txn != nil {
			return fmt.Errorf("an install into slot %s is still in progress", st.Txn.Slot)
		}
		st.Previous, st.Active, st.Trial, st.Boots = st.Active, slot, true, 0
		return nil
	})
	return err
}

// Boot is what the supervisor should start.
type Boot struct {
	Slot     string
	Version  string
	Path     string
	Trial    bool
	Boots    int
	Manifest bundle.Manifest
	// FellBack explains a fallback this call made, if any.
	FellBack string
}

// ErrNothingInstalled means no slot was ever installed.
var ErrNothingInstalled = errors.New("no firmware installed (provision a slot with edgesup install BUNDLE)")

// Boot prepares the next start: it recovers an interrupted install,
// verifies the active slot, counts the start if the slot is on trial, and
// falls back to the previous slot when the active one fails verification
// or has used up its boots.
func (m *Manager) Boot() (Boot, error) {
	if _, err := m.Recover(); err != nil {
		return Boot{}, err
	}
	var b Boot
	_, err := m.update(func(st *State) error {
		for range 2 {
			if st.Active == "" {
				return ErrNothingInstalled
			}
			man, verr := m.Verify(st.Active)
			reason := ""
			switch {
			case verr != nil:
				reason = "active slot failed verification: " + verr.Error()
			case st.Trial && st.Boots >= m.maxBoots:
				reason = fmt.Sprintf("version %s started %d times without becoming healthy", man.Version, st.Boots)
			}
			if reason != "" {
				if err := m.fallbackLocked(st, man.Version, reason); err != nil {
					if verr != nil {
						return fmt.Errorf("%s, and no fallback: %w", reason, err)
					}
					// Nothing to go back to: keep trying the only slot there is.
					st.Boots = 0
				} else {
					b.FellBack = reason
					continue
				}
			}
			if st.Trial {
				st.Boots++
			}
			b = Boot{Slot: st.Active, Version: man.Version, Path: m.b.EntryPath(st.Active, man.Entry), Trial: st.Trial,
				Boots: st.Boots, Manifest: man, FellBack: b.FellBack}
			return nil
		}
		return errors.New("both slots failed; reinstall firmware")
	})
	return b, err
}

func (m *Manager) fallbackLocked(st *State, failedVersion, reason string) error {
	if st.Previous == "" {
		return errors.New("there is no previous slot")
	}
	prev, err := m.Verify(st.Previous)
	if err != nil {
		return fmt.Errorf("previous slot is not usable: %w", err)
	}
	if failedVersion != "" && st.Trial {
		st.Bad = append(st.Bad, failedVersion)
		if len(st.Bad) > maxBad {
			st.Bad = st.Bad[len(st.Bad)-maxBad:]
		}
	}
	st.LastFallback = &Fallback{From: failedVersion, To: prev.Version, Reason: reason, At: m.now().UTC(), OldSlot: st.Active}
	// The failed slot is no longer a way back; the next install overwrites it.
	st.Active, st.Previous, st.Trial, st.Boots = st.Previous, "", false, 0
	return nil
}

// Fallback abandons the active slot on trial (it did not become healthy)
// and makes the previous one active again.
func (m *Manager) Fallback(slot, reason string) error {
	_, err := m.update(func(st *State) error {
		if st.Active != slot || !st.Trial {
			return fmt.Errorf("slot %s is not on trial", slot)
		}
		v := ""
		if man, err := m.Manifest(slot); err == nil {
			v = man.Version
		}
		return m.fallbackLocked(st, v, reason)
	})
	return err
}

// Commit marks the active slot on trial as good: it stays, and its
// version raises the anti-rollback floor.
func (m *Manager) Commit(slot string) (bundle.Manifest, error) {
	man, err := m.Manifest(slot)
	if err != nil {
		return man, err
	}
	_, err = m.update(func(st *State) error {
		if st.Active != slot {
			return fmt.Errorf("slot %s is no longer active", slot)
		}
		st.Trial, st.Boots = false, 0
		if st.Floor == "" {
			st.Floor = man.Version
		} else if c, err := bundle.CompareStrings(man.Version, st.Floor); err == nil && c > 0 {
			st.Floor = man.Version
		}
		return nil
	})
	return man, err
}

// Keyring is the trusted release keys.
func (m *Manager) Keyring() *bundle.Keyring { return m.keys }
