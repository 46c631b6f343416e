// Package slot keeps two firmware slots (A and B) and the pointer that says
// which one runs, so that an update is installed beside the running
// version, switched to atomically, proven healthy, or undone by itself.
//
// The pointer is a small State record. Writing it is the only way to change
// what boots, and a Backend writes it atomically and durably (a file
// replaced by rename and fsync here; a bootloader environment on hardware).
// Three fields make failures visible instead of fatal:
//
//   - Txn, the transaction marker, is written before the inactive slot is
//     touched and cleared after it is complete and synced. A Txn found at
//     start means power was cut mid-install: that slot is erased.
//   - Trial says the active slot has not yet been healthy. The supervisor
//     commits it after its first health check passes, or falls back to
//     Previous when the deadline passes.
//   - Boots counts starts of a slot on trial. A slot that crashes before it
//     is healthy is started again at most MaxBoots times, then abandoned.
//
// Every start re-verifies the active slot's files against its signed
// manifest, so a slot that was damaged on disk is not run either.
package slot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/campusedge/campusedge/firmware/bundle"
)

// The two slots.
const (
	A = "a"
	B = "b"
)

// Other returns the slot that is not s.
func Other(s string) string {
	if s == A {
		return B
	}
	return A
}

// State is the pointer record.
type State struct {
	// Active is the slot that boots; "" before the first install.
	Active string `json:"active"`
	// Previous is the slot to fall back to; "" when there is none.
	Previous string `json:"previous,omitempty"`
	Trial    bool   `json:"trial"`
	Boots    int    `json:"boots"`
	// Floor is the anti-rollback floor: the newest version ever committed.
	Floor string `json:"floor,omitempty"`
	Txn   *Txn   `json:"txn,omitempty"`
	// Bad lists versions that failed their trial, newest last (bounded), so
	// an updater does not install the same broken release again.
	Bad          []string  `json:"bad,omitempty"`
	LastFallback *Fallback `json:"last_fallback,omitempty"`
	// Gen increases with every write; it helps reading logs.
	Gen uint64 `json:"gen"`
}

// Txn marks an install in progress.
type Txn struct {
	Op      string    `json:"op"`
	Slot    string    `json:"slot"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
}

// Fallback records why the last fallback happened.
type Fallback struct {
	From    string    `json:"from_version"`
	To      string    `json:"to_version"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
	OldSlot string    `json:"old_slot"`
}

const maxBad = 8

// Stored is what a backend keeps of a slot besides its files: the signed
// manifest exactly as released and its signature.
type Stored struct {
	RawManifest []byte
	Signature   []byte
	Files       fs.FS
}

// Backend is where slots and the pointer live. Dir is the one here;
// a hardware backend maps slots to partitions and State to the
// bootloader's environment.
type Backend interface {
	// Lock serialises read-modify-write of State across processes (the
	// supervisor and edged both change it).
	Lock() (unlock func(), err error)
	// LoadState reads the pointer; none yet is the zero State.
	LoadState() (State, error)
	// StoreState replaces the pointer atomically and durably: after a
	// power cut either the old or the new State is read back.
	StoreState(State) error
	// Erase empties a slot.
	Erase(slot string) error
	// Write streams a verified bundle's files into an erased slot and
	// stores its signed manifest last, so a slot with a manifest is whole.
	// Everything is on stable storage when it returns.
	Write(ctx context.Context, slot string, r *bundle.Reader) error
	// Read opens a slot's stored manifest and files; fs.ErrNotExist if
	// the slot is empty.
	Read(slot string) (Stored, error)
	// EntryPath is the host path of the slot's executable.
	EntryPath(slot, entry string) string
}

// ErrEmpty means a slot holds no complete installation.
var ErrEmpty = errors.New("slot is empty")

func checkName(s string) error {
	if s != A && s != B {
		return fmt.Errorf("slot %q is not %q or %q", s, A, B)
	}
	return nil
}
