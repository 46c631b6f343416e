// Package identity creates and loads the edge's own identity: the ed25519
// key pair the city cloud will enrol, the short edge id derived from it, and
// the admin token whose plain text lives only in DATA/admin-token.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/token"
)

// Bucket holds the identity records.
var Bucket = []byte("identity")

var (
	keyPrivate    = []byte("ed25519_private")
	keyAdminHash  = []byte("admin_token_sha256")
	adminFileName = "admin-token"
)

// Identity is the edge's key pair and id.
type Identity struct {
	ID         string
	PublicKey  ed25519.PublicKey
	privateKey ed25519.PrivateKey
	adminHash  []byte
}

// Sign signs msg with the edge key (used by sync to authenticate to the hub).
func (i *Identity) Sign(msg []byte) []byte { return ed25519.Sign(i.privateKey, msg) }

// CheckAdminToken reports whether token is the admin token, in constant time.
func (i *Identity) CheckAdminToken(tok string) bool {
	return token.Matches(tok, i.adminHash)
}

// Result says what LoadOrCreate did, so the caller can tell the operator.
type Result struct {
	Created        bool   // a new identity was made
	AdminTokenFile string // set when a new admin token was written
}

// IDFromKey derives the short, stable edge id: 10 base32 chars of the key's
// SHA-256 (50 bits), enough to be unique across a province and short enough
// for an admin to read out on the phone.
func IDFromKey(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:])[:10])
}

// LoadOrCreate loads the identity from the store, creating the key pair and
// the admin token on first start. The admin token file is written (0600)
// before the hash is committed, so a crash in between leaves a token file
// whose hash is not yet in the store and the next start simply makes a new one.
func LoadOrCreate(db *bolt.DB, dataDir string) (*Identity, Result, error) {
	var id Identity
	var res Result
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(Bucket)
		if b == nil {
			return errors.New("identity bucket missing (store not migrated)")
		}
		if priv := b.Get(keyPrivate); priv != nil {
			if len(priv) != ed25519.PrivateKeySize {
				return fmt.Errorf("stored edge key has %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
			}
			id.privateKey = append(ed25519.PrivateKey(nil), priv...)
		}
		id.adminHash = append([]byte(nil), b.Get(keyAdminHash)...)
		return nil
	})
	if err != nil {
		return nil, res, fmt.Errorf("load identity: %w", err)
	}
	if id.privateKey == nil {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, res, fmt.Errorf("generate edge key: %w", err)
		}
		id.privateKey = priv
		res.Created = true
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(Bucket).Put(keyPrivate, priv) }); err != nil {
			return nil, res, fmt.Errorf("save edge key: %w", err)
		}
	}
	id.PublicKey = id.privateKey.Public().(ed25519.PublicKey)
	id.ID = IDFromKey(id.PublicKey)
	if len(id.adminHash) == 0 {
		path, hash, err := writeAdminToken(dataDir)
		if err != nil {
			return nil, res, err
		}
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(Bucket).Put(keyAdminHash, hash) }); err != nil {
			return nil, res, fmt.Errorf("save admin token hash: %w", err)
		}
		id.adminHash = hash
		res.AdminTokenFile = path
	}
	return &id, res, nil
}

// ResetAdminToken writes a new admin token file and replaces the stored
// hash: the way back in for an operator who lost the token.
func ResetAdminToken(db *bolt.DB, dataDir string) (string, error) {
	path, hash, err := writeAdminToken(dataDir)
	if err != nil {
		return "", err
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(Bucket).Put(keyAdminHash, hash) }); err != nil {
		return "", fmt.Errorf("save admin token hash: %w", err)
	}
	return path, nil
}

func writeAdminToken(dataDir string) (string, []byte, error) {
	tok := token.New()
	path := filepath.Join(dataDir, adminFileName)
	// Durable before its hash is stored: the file named in the log must
	// survive a power cut, directory entry included.
	if err := fsutil.WriteFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", nil, fmt.Errorf("write admin token: %w", err)
	}
	return path, token.Digest(tok), nil
}

// EdgeID returns the short edge id.
func (i *Identity) EdgeID() string { return i.ID }
