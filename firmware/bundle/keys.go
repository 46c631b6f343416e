package bundle

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// PEM block types of release key files.
const (
	pemPrivate = "CAMPUSEDGE RELEASE PRIVATE KEY"
	pemPublic  = "CAMPUSEDGE RELEASE PUBLIC KEY"
)

// KeyIDSize is the length of a key id: the first bytes of SHA-256(public key).
const KeyIDSize = 8

// KeyID names a release public key; bundles carry it so a keyring with
// several keys (during a rotation) finds the right one without trying all.
type KeyID [KeyIDSize]byte

func (k KeyID) String() string { return hex.EncodeToString(k[:]) }

// IDOf returns the key id of pub.
func IDOf(pub ed25519.PublicKey) KeyID {
	sum := sha256.Sum256(pub)
	var id KeyID
	copy(id[:], sum[:KeyIDSize])
	return id
}

// GenerateKey makes a release key pair and writes DIR/release-ID.key (mode
// 0600) and DIR/release-ID.pub. It refuses to overwrite existing files.
func GenerateKey(dir string, rnd io.Reader) (privPath, pubPath string, err error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	pub, priv, err := ed25519.GenerateKey(rnd)
	if err != nil {
		return "", "", fmt.Errorf("generate release key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("create key dir: %w", err)
	}
	id := IDOf(pub)
	privPath = filepath.Join(dir, "release-"+id.String()+".key")
	pubPath = filepath.Join(dir, "release-"+id.String()+".pub")
	if err := writeNew(privPath, pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: priv.Seed()}), 0o600); err != nil {
		return "", "", err
	}
	if err := writeNew(pubPath, pem.EncodeToMemory(&pem.Block{Type: pemPublic, Headers: map[string]string{"Key-Id": id.String()}, Bytes: pub}), 0o644); err != nil {
		return "", "", err
	}
	return privPath, pubPath, nil
}

func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write key: %w (keys are never overwritten; choose an empty -out dir)", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write key %s: %w", path, err)
	}
	return f.Close()
}

func readPEM(path, typ string, size int) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if len(b) > 16<<10 {
		return nil, fmt.Errorf("key file %s is too large to be a release key", path)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != typ {
		return nil, fmt.Errorf("%s is not a %s file (make one with edgefw keygen)", path, strings.ToLower(typ))
	}
	if len(blk.Bytes) != size {
		return nil, fmt.Errorf("%s: key is %d bytes, want %d", path, len(blk.Bytes), size)
	}
	return blk.Bytes, nil
}

// LoadPrivateKey reads a release private key file.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	seed, err := readPEM(path, pemPrivate, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// LoadPublicKey reads a release public key file.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := readPEM(path, pemPublic, ed25519.PublicKeySize)
	if err != nil {
		return nil, err
	}
	return ed25519.PublicKey(b), nil
}

// Keyring is the set of release public keys a device trusts. More than one
// key is normal during a rotation: ship the new public key in a release
// signed by the old one, then sign with the new one.
type Keyring struct {
	keys map[KeyID]ed25519.PublicKey
}

// NewKeyring returns a keyring holding pubs.
func NewKeyring(pubs ...ed25519.PublicKey) *Keyring {
	k := &Keyring{keys: map[KeyID]ed25519.PublicKey{}}
	for _, p := range pubs {
		k.Add(p)
	}
	return k
}

// Add trusts pub.
func (k *Keyring) Add(pub ed25519.PublicKey) { k.keys[IDOf(pub)] = pub }

// Len is the number of trusted keys.
func (k *Keyring) Len() int { return len(k.keys) }

// IDs lists the trusted key ids, sorted.
func (k *Keyring) IDs() []string {
	out := make([]string, 0, len(k.keys))
	for id := range k.keys {
		out = append(out, id.String())
	}
	sort.Strings(out)
	return out
}

func (k *Keyring) lookup(id KeyID) (ed25519.PublicKey, bool) {
	if k == nil {
		return nil, false
	}
	p, ok := k.keys[id]
	return p, ok
}

// LoadKeyring reads public keys from each path: a key file, or a directory
// whose files with "pub" in their name are all loaded.
func LoadKeyring(paths ...string) (*Keyring, error) {
	k := NewKeyring()
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("release keys: %w", err)
		}
		if !fi.IsDir() {
			pub, err := LoadPublicKey(p)
			if err != nil {
				return nil, err
			}
			k.Add(pub)
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("release keys: %w", err)
		}
		for _, e := range ents {
			if e.IsDir() || !strings.Contains(e.Name(), "pub") {
				continue
			}
			pub, err := LoadPublicKey(filepath.Join(p, e.Name()))
			if err != nil {
				return nil, err
			}
			k.Add(pub)
		}
	}
	if k.Len() == 0 {
		return nil, errors.New("release keys: no public key found (give a .pub file from edgefw keygen or a directory of them)")
	}
	return k, nil
}
