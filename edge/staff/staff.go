// Package staff keeps the people who work at the school — admins,
// teachers, assistant teachers — in the edge's store, with their roles and
// an argon2id hash of their password or 6-digit PIN, and signs them in to
// browsers with a session cookie (HttpOnly, Secure, SameSite=Strict) that
// the API's guard (edge/api) resolves on every request. Staff are created
// in the console or arrive from the city's staff list by the downlink
// (source "city"); the admin token stays only for the first sign-in and
// for recovery. Wrong sign-ins slow down per account and per address
// (throttle.go), never locking the whole edge.
package staff

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/api"
)

// Bucket holds one JSON record per person, keyed by id.
var Bucket = []byte("staff")

// Migrate creates the staff bucket and the sign-in bucket.
func Migrate(tx *bolt.Tx) error {
	_, err := tx.CreateBucketIfNotExists(Bucket)
	return errors.Join(err, MigrateSignIns(tx))
}

// Limits.
const (
	MaxStaff        = 5_000 // a school has ~100 teachers; a city list for one school stays far below
	MaxNameRunes    = 100
	MaxIDLen        = 64
	MinPasswordLen  = 8
	MaxPasswordLen  = 256
	PINLen          = 6
	MaxClassrooms   = 64
	SourceEdge      = "edge" // created in this edge's console
	SourceCity      = "city" // from the city's staff list (downlink)
	CredentialPass  = "password"
	CredentialPIN   = "pin"
	CredentialNone  = ""
	maxCredentialIn = 1024
)

// Errors the API maps to responses.
var (
	ErrInvalid  = errors.New("invalid")
	ErrNotFound = errors.New("no such staff member")
	ErrConflict = errors.New("conflict")
)

// Person is one member of staff as the API shows them (never the hash).
type Person struct {
	ID         string     `json:"id"` // the sign-in name: lower-case letters, digits, . _ -
	Name       string     `json:"name"`
	Roles      []api.Role `json:"roles"`
	Classrooms []string   `json:"classrooms,omitempty"` // an assistant's classrooms (empty: any)
	Source     string     `json:"source"`
	Credential string     `json:"credential"` // "password", "pin" or "" (cannot sign in yet)
	UpdatedAt  time.Time  `json:"updated_at"`
}

// record is what the store keeps.
type record struct {
	Person
	Hash string `json:"hash,omitempty"`
}

// ValidID: sign-in names are what a teacher types on a phone, so keep
// them plain.
func ValidID(id string) bool {
	if id == "" || len(id) > MaxIDLen {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// ValidRole reports whether r is a staff role.
func ValidRole(r api.Role) bool {
	return r == api.RoleAdmin || r == api.RoleTeacher || r == api.RoleAssistant
}

// validate checks a person's fields (not the credential).
func (p *Person) validate() error {
	p.ID = strings.ToLower(strings.TrimSpace(p.ID))
	p.Name = strings.TrimSpace(p.Name)
	if !ValidID(p.ID) {
		return fmt.Errorf("%w: id %q: use 1-%d lower-case letters, digits, '.', '_' or '-'", ErrInvalid, trunc(p.ID), MaxIDLen)
	}
	if p.Name == "" || utf8.RuneCountInString(p.Name) > MaxNameRunes || !utf8.ValidString(p.Name) || strings.IndexFunc(p.Name, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: name must be 1-%d printable characters", ErrInvalid, MaxNameRunes)
	}
	if len(p.Roles) == 0 {
		return fmt.Errorf("%w: give at least one role (admin, teacher, assistant)", ErrInvalid)
	}
	seen := map[api.Role]bool{}
	var roles []api.Role
	for _, r := range p.Roles {
		if !ValidRole(r) {
			return fmt.Errorf("%w: role %q: roles are admin, teacher and assistant", ErrInvalid, trunc(string(r)))
		}
		if !seen[r] {
			seen[r] = true
			roles = append(roles, r)
		}
	}
	slices.Sort(roles)
	p.Roles = roles
	if len(p.Classrooms) > MaxClassrooms {
		return fmt.Errorf("%w: at most %d classrooms", ErrInvalid, MaxClassrooms)
	}
	for _, c := range p.Classrooms {
		if c == "" || len(c) > 64 {
			return fmt.Errorf("%w: classroom ids are 1-64 characters", ErrInvalid)
		}
	}
	return nil
}

// checkSecret validates a new password or PIN and returns its kind.
func checkSecret(password, pin string) (kind, secret string, err error) {
	switch {
	case password != "" && pin != "":
		return "", "", fmt.Errorf("%w: give a password or a PIN, not both", ErrInvalid)
	case pin != "":
		if len(pin) != PINLen || strings.Trim(pin, "0123456789") != "" {
			return "", "", fmt.Errorf("%w: a PIN is exactly %d digits", ErrInvalid, PINLen)
		}
		return CredentialPIN, pin, nil
	case password != "":
		n := utf8.RuneCountInString(password)
		if n < MinPasswordLen || len(password) > MaxPasswordLen {
			return "", "", fmt.Errorf("%w: a password is %d to %d characters", ErrInvalid, MinPasswordLen, MaxPasswordLen)
		}
		return CredentialPass, password, nil
	}
	return CredentialNone, "", nil
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Store is the staff list and the browser sign-ins of one edge.
type Store struct {
	db  *bolt.DB
	log *slog.Logger
	now func() time.Time

	// Sign-in state (signin.go).
	admin     func(tok string) bool
	byAddr    *throttle
	byAccount *throttle
	hashSem   chan struct{}
	idle      time.Duration
	maxAge    time.Duration
	audit     Auditor

	mu      sync.Mutex
	signIns map[[32]byte]*SignIn
	// persistMu orders the writes of sign-ins to the store (persist.go);
	// taken before mu, never inside it.
	persistMu sync.Mutex
	// beforeSave, when set (tests), runs between deciding to store a
	// sign-in and storing it: where a sign-out can come in between.
	beforeSave func()
}

// Auditor records who did what (edge/audit); nil records nothing.
type Auditor interface {
	Record(actor, action, target, detail string)
}

// Config wires a Store.
type Config struct {
	DB *bolt.DB
	// IsAdminToken checks the recovery admin token (edge/identity).
	IsAdminToken func(tok string) bool
	Logger       *slog.Logger
	// IdleTimeout ends a sign-in unused this long (default 30 min);
	// MaxAge ends any sign-in this long after it began (default 12 h).
	IdleTimeout, MaxAge time.Duration
	Audit               Auditor
	Now                 func() time.Time
}

// New returns the store of db (migrated with Migrate).
func New(cfg Config) *Store {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 12 * time.Hour
	}
	s := &Store{db: cfg.DB, log: cfg.Logger, now: cfg.Now, admin: cfg.IsAdminToken, audit: cfg.Audit,
		byAddr: newThrottle(10, 5*time.Minute), byAccount: newThrottle(5, time.Minute),
		hashSem: make(chan struct{}, hashSlots), idle: cfg.IdleTimeout, maxAge: cfg.MaxAge,
		signIns: map[[32]byte]*SignIn{}}
	s.loadSignIns()
	return s
}

func (s *Store) record(actor, action, target, detail string) {
	if s.audit != nil {
		s.audit.Record(actor, action, target, detail)
	}
}

func (s *Store) get(tx *bolt.Tx, id string) (record, error) {
	var rec record
	b := tx.Bucket(Bucket)
	if b == nil {
		return rec, errors.New("staff bucket missing (store not migrated)")
	}
	v := b.Get([]byte(id))
	if v == nil {
		return rec, fmt.Errorf("%w: %q", ErrNotFound, trunc(id))
	}
	return rec, json.Unmarshal(v, &rec)
}

func put(tx *bolt.Tx, rec record) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return tx.Bucket(Bucket).Put([]byte(rec.ID), v)
}

// List returns every member of staff, by id.
func (s *Store) List() ([]Person, error) {
	out := []Person{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(Bucket)
		if b == nil {
			return errors.New("staff bucket missing (store not migrated)")
		}
		return b.ForEach(func(_, v []byte) error {
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			out = append(out, rec.Person)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

// Get returns one member of staff.
func (s *Store) Get(id string) (Person, error) {
	var rec record
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		rec, err = s.get(tx, id)
		return err
	})
	return rec.Person, err
}

// Edit is a create or change: the fields of Person an admin sets, and a
// new password or PIN (empty: keep the one there is).
type Edit struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Roles      []api.Role `json:"roles"`
	Classrooms []string   `json:"classrooms,omitempty"`
	Password   string     `json:"password,omitempty"`
	PIN        string     `json:"pin,omitempty"`
}

// Put creates (create true: refused if the id exists) or changes a member
// of staff. actor names who did it for the audit log.
func (s *Store) Put(actor string, e Edit, create bool) (Person, error) {
	p := Person{ID: e.ID, Name: e.Name, Roles: e.Roles, Classrooms: e.Classrooms, Source: SourceEdge}
	if err := p.validate(); err != nil {
		return Person{}, err
	}
	kind, secret, err := checkSecret(e.Password, e.PIN)
	if err != nil {
		return Person{}, err
	}
	var hash string
	if secret != "" {
		hash = s.hash(secret)
	}
	var before record
	err = s.db.Update(func(tx *bolt.Tx) error {
		old, err := s.get(tx, p.ID)
		exists := err == nil
		switch {
		case err != nil && !errors.Is(err, ErrNotFound):
			return err
		case create && exists:
			return fmt.Errorf("%w: staff %q exists already", ErrConflict, p.ID)
		case !create && !exists:
			return err
		case create && tx.Bucket(Bucket).Stats().KeyN >= MaxStaff:
			return fmt.Errorf("%w: this edge keeps at most %d staff", ErrInvalid, MaxStaff)
		}
		before = old
		rec := record{Person: p, Hash: old.Hash}
		rec.Credential = old.Credential
		if exists {
			rec.Source = old.Source
		}
		if hash != "" {
			rec.Hash, rec.Credential = hash, kind
		}
		rec.UpdatedAt = s.now().UTC()
		p = rec.Person
		return put(tx, rec)
	})
	if err != nil {
		return Person{}, err
	}
	if create {
		s.record(actor, "staff.create", p.ID, "roles "+rolesText(p.Roles))
	} else {
		if !slices.Equal(before.Roles, p.Roles) {
			s.record(actor, "staff.roles", p.ID, rolesText(before.Roles)+" → "+rolesText(p.Roles))
			s.revokeStaff(p.ID) // new roles take effect at the next sign-in
		}
		if hash != "" {
			s.record(actor, "staff.credential", p.ID, "new "+kind)
		}
	}
	return p, nil
}

// Delete removes a member of staff and ends their sign-ins.
func (s *Store) Delete(actor, id string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if _, err := s.get(tx, id); err != nil {
			return err
		}
		return tx.Bucket(Bucket).Delete([]byte(id))
	})
	if err != nil {
		return err
	}
	s.revokeStaff(id)
	s.record(actor, "staff.delete", id, "")
	return nil
}

func rolesText(r []api.Role) string {
	s := make([]string, len(r))
	for i, x := range r {
		s[i] = string(x)
	}
	return strings.Join(s, ",")
}

// hash runs argon2id in one of hashSlots.
func (s *Store) hash(secret string) string {
	s.hashSem <- struct{}{}
	defer func() { <-s.hashSem }()
	return HashSecret(secret)
}

// check runs verify in one of hashSlots.
func (s *Store) check(hash, secret string) bool {
	s.hashSem <- struct{}{}
	defer func() { <-s.hashSem }()
	return verify(hash, secret)
}
