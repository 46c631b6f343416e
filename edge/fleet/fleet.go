// Package fleet keeps the school's classrooms and the terminals paired to
// them: creating classrooms, issuing single-use pairing codes, pairing a
// terminal for a credential, and tracking which terminals are online so that
// the console and other watchers see changes as they happen.
package fleet

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/textnorm"
	"github.com/campusedge/campusedge/edge/token"
)

// Buckets this package owns; the appliance's migrations create them.
var (
	BucketClassrooms = []byte("classrooms")
	BucketTerminals  = []byte("terminals")
	BucketPairing    = []byte("pairing")
)

var keyFailures = []byte("\x00failures")

// Pairing policy. A device sending wrong codes is slowed down by its
// address first (edge/api's back-off), so one device cannot stop pairing
// for everyone. This edge-wide cap is the backstop against a device that
// changes its address for each guess: a wrong code names no code to count
// against, so after MaxPairingFailures wrong tries in all every open code
// is burned and the admin must issue a new one, which keeps guessing one of
// a million codes hopeless (30 guesses: 3 in 100,000).
const (
	PairingCodeTTL     = 10 * time.Minute
	MaxPairingFailures = 30
)

// Errors callers map to API responses.
var (
	ErrNotFound     = errors.New("not found")
	ErrInvalid      = errors.New("invalid input")
	ErrConflict     = errors.New("already exists")
	ErrBadCode      = errors.New("pairing code is wrong")
	ErrCodeExpired  = errors.New("pairing code has expired")
	ErrCodeUsed     = errors.New("pairing code was already used")
	ErrPairingLock  = errors.New("pairing is locked after too many wrong codes")
	ErrUnauthorized = errors.New("unknown terminal credential")
)

// Classroom is a room with a screen that terminals belong to.
type Classroom struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	RoomCode string `json:"room_code"`
	// Homeroom names the class that has this room as its home (a roster
	// homeroom's code or display name, e.g. 初一(3)班): who is expected
	// here when the timetable has nothing for the room. Empty when the
	// room is no class's home; classrooms stored before it existed have
	// none.
	Homeroom  string    `json:"homeroom,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// MaxHomeroom bounds a classroom's homeroom in characters.
const MaxHomeroom = 64

// validHomeroom: empty, or one line of printable text.
func validHomeroom(h string) error {
	if h == "" {
		return nil
	}
	if !utf8.ValidString(h) || utf8.RuneCountInString(h) > MaxHomeroom || strings.TrimSpace(h) != h || strings.IndexFunc(h, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("%w: homeroom must be 1-%d printable characters on one line (the class's name as in the roster, e.g. 初一(3)班)", ErrInvalid, MaxHomeroom)
	}
	return nil
}

// Terminal is a paired classroom device. Online, Addr and LastSeen come from
// its control connection; LastSeen is also persisted when it disconnects.
type Terminal struct {
	ID          string    `json:"id"`
	ClassroomID string    `json:"classroom_id"`
	Name        string    `json:"name"`
	Version     string    `json:"version"`
	Addr        string    `json:"addr"`
	PairedAt    time.Time `json:"paired_at"`
	LastSeen    time.Time `json:"last_seen"`
	Online      bool      `json:"online"`
	// Kind is what the admin labelled it: big_screen or agent ("" unset).
	Kind      string `json:"kind,omitempty"`
	TokenHash []byte `json:"token_hash,omitempty"`
}

// Public returns the terminal without its credential hash.
func (t Terminal) Public() Terminal { t.TokenHash = nil; return t }

type pairingCode struct {
	Code        string    `json:"code"`
	ClassroomID string    `json:"classroom_id"`
	ExpiresAt   time.Time `json:"expires_at"`
	UsedAt      time.Time `json:"used_at,omitzero"`
}

// Event is pushed to watchers when a classroom or terminal changes.
type Event struct {
	Kind      string     `json:"kind"` // "terminal" or "classroom"
	Terminal  *Terminal  `json:"terminal,omitempty"`
	Classroom *Classroom `json:"classroom,omitempty"`
	// Removed: the terminal was unpaired or the classroom deleted.
	Removed bool `json:"removed,omitempty"`
}

// Fleet is the registry. It is safe for concurrent use.
type Fleet struct {
	db  *bolt.DB
	now func() time.Time

	mu       sync.Mutex
	live     map[string]*liveState // terminal id -> connection state
	watchers map[chan Event]struct{}
}

type liveState struct {
	conns    int
	addr     string
	version  string
	lastSeen time.Time
}

// New returns a registry over db, whose buckets must exist.
func New(db *bolt.DB, now func() time.Time) *Fleet {
	if now == nil {
		now = time.Now
	}
	return &Fleet{db: db, now: now, live: map[string]*liveState{}, watchers: map[chan Event]struct{}{}}
}

var roomCodeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)

// ValidateClassroom checks an admin's input for a new classroom.
func ValidateClassroom(name, roomCode string) error {
	name = strings.TrimSpace(name)
	switch {
	case name == "" || utf8.RuneCountInString(name) > 80 || !utf8.ValidString(name):
		return fmt.Errorf("%w: name must be 1-80 characters", ErrInvalid)
	case strings.ContainsAny(name, "\x00\r\n"):
		return fmt.Errorf("%w: name must be one line", ErrInvalid)
	case !roomCodeRE.MatchString(roomCode):
		return fmt.Errorf("%w: room_code must be 1-32 of letters, digits, '.', '_' or '-'", ErrInvalid)
	}
	return nil
}

// CreateClassroom adds a classroom; room codes are unique. A room code
// typed with full-width characters (`ＲＯＯＭ１０１`, as a Chinese input
// method gives) is folded to ASCII first. homeroom, optional, names the
// class whose home this room is.
func (f *Fleet) CreateClassroom(name, roomCode string, homeroom ...string) (Classroom, error) {
	roomCode = textnorm.Fold(roomCode)
	if err := ValidateClassroom(name, roomCode); err != nil {
		return Classroom{}, err
	}
	hr := ""
	if len(homeroom) > 0 {
		hr = strings.TrimSpace(homeroom[0])
	}
	if err := validHomeroom(hr); err != nil {
		return Classroom{}, err
	}
	c := Classroom{ID: "c-" + randomID(8), Name: strings.TrimSpace(name), RoomCode: roomCode, Homeroom: hr, CreatedAt: f.now().UTC()}
	err := f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketClassrooms)
		dup := b.ForEach(func(_, v []byte) error {
			var o Classroom
			if json.Unmarshal(v, &o) == nil && strings.EqualFold(o.RoomCode, roomCode) {
				return fmt.Errorf("%w: a classroom with room code %q exists", ErrConflict, roomCode)
			}
			return nil
		})
		if dup != nil {
			return dup
		}
		return putJSON(b, c.ID, c)
	})
	if err != nil {
		return Classroom{}, err
	}
	f.publish(Event{Kind: "classroom", Classroom: &c})
	return c, nil
}

// SetHomeroom names the class whose home classroom id is ("" for none).
func (f *Fleet) SetHomeroom(id, homeroom string) (Classroom, error) {
	homeroom = strings.TrimSpace(homeroom)
	if err := validHomeroom(homeroom); err != nil {
		return Classroom{}, err
	}
	var c Classroom
	err := f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketClassrooms)
		if err := getJSON(b, "classroom", id, &c); err != nil {
			return err
		}
		c.Homeroom = homeroom
		return putJSON(b, c.ID, c)
	})
	if err != nil {
		return Classroom{}, err
	}
	f.publish(Event{Kind: "classroom", Classroom: &c})
	return c, nil
}

// Classrooms lists classrooms sorted by room code.
func (f *Fleet) Classrooms() ([]Classroom, error) {
	out := []Classroom{}
	err := f.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(BucketClassrooms).ForEach(func(_, v []byte) error {
			var c Classroom
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("decode classroom: %w", err)
			}
			out = append(out, c)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].RoomCode < out[j].RoomCode })
	return out, err
}

// Classroom returns one classroom.
func (f *Fleet) Classroom(id string) (Classroom, error) {
	var c Classroom
	err := f.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(BucketClassrooms), "classroom", id, &c)
	})
	return c, err
}

// NewPairingCode issues a 6-digit, single-use code for a classroom. Issuing
// a code also lifts a lock-out: the admin is present and chose to.
func (f *Fleet) NewPairingCode(classroomID string) (code string, expires time.Time, err error) {
	now := f.now().UTC()
	err = f.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(BucketClassrooms).Get([]byte(classroomID)) == nil {
			return fmt.Errorf("%w: classroom %q", ErrNotFound, classroomID)
		}
		b := tx.Bucket(BucketPairing)
		// Drop expired and used codes so the bucket stays small.
		var stale [][]byte
		_ = b.ForEach(func(k, v []byte) error {
			var p pairingCode
			if k[0] != 0 && (json.Unmarshal(v, &p) != nil || !p.UsedAt.IsZero() || now.After(p.ExpiresAt)) {
				stale = append(stale, append([]byte(nil), k...))
			}
			return nil
		})
		for _, k := range stale {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		for range 20 {
			n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
			if err != nil {
				return fmt.Errorf("random code: %w", err)
			}
			code = fmt.Sprintf("%06d", n.Int64())
			if b.Get([]byte(code)) == nil {
				break
			}
		}
		expires = now.Add(PairingCodeTTL)
		if err := b.Delete(keyFailures); err != nil {
			return err
		}
		return putJSON(b, code, pairingCode{Code: code, ClassroomID: classroomID, ExpiresAt: expires})
	})
	return code, expires, err
}

var codeRE = regexp.MustCompile(`^[0-9]{6}$`)

// PairRequest is what a terminal sends to pair.
type PairRequest struct {
	Code    string `json:"code"`
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Validate checks a pairing request's shape (not the code's validity).
func (r PairRequest) Validate() error {
	switch {
	case !codeRE.MatchString(r.Code):
		return fmt.Errorf("%w: code must be 6 digits", ErrInvalid)
	case utf8.RuneCountInString(r.Name) > 80 || !utf8.ValidString(r.Name) || strings.ContainsAny(r.Name, "\x00\r\n"):
		return fmt.Errorf("%w: name must be one line of at most 80 characters", ErrInvalid)
	case len(r.Version) > 64 || !utf8.ValidString(r.Version):
		return fmt.Errorf("%w: version must be at most 64 characters", ErrInvalid)
	}
	return nil
}

// Pair consumes a pairing code and returns the new terminal and its
// credential (shown once; only its hash is kept).
func (f *Fleet) Pair(req PairRequest, addr string) (Terminal, string, error) {
	if err := req.Validate(); err != nil {
		return Terminal{}, "", err
	}
	terminalID := "t-" + randomID(8)
	cred := terminalID + "." + token.New()
	credHash := token.Digest(cred)
	now := f.now().UTC()
	var t Terminal
	var failed error
	err := f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketPairing)
		failures := wrongTries(b)
		if failures >= MaxPairingFailures {
			return ErrPairingLock
		}
		var p pairingCode
		v := b.Get([]byte(req.Code))
		if v == nil || json.Unmarshal(v, &p) != nil || subtle.ConstantTimeCompare([]byte(p.Code), []byte(req.Code)) != 1 {
			// Commit the failure count: the returned error is reported after the commit.
			var err error
			failed, err = countWrongTry(b, failures)
			return err
		}
		switch {
		case !p.UsedAt.IsZero():
			failed = ErrCodeUsed
			return nil
		case now.After(p.ExpiresAt):
			failed = ErrCodeExpired
			return nil
		}
		p.UsedAt = now
		if err := putJSON(b, p.Code, p); err != nil {
			return err
		}
		name := strings.TrimSpace(req.Name)
		if name == "" {
			name = "terminal"
		}
		t = Terminal{ID: terminalID, ClassroomID: p.ClassroomID, Name: name, Version: req.Version,
			Addr: addr, PairedAt: now, LastSeen: now, TokenHash: credHash}
		return putJSON(tx.Bucket(BucketTerminals), t.ID, t)
	})
	if err != nil {
		return Terminal{}, "", err
	}
	if failed != nil {
		return Terminal{}, "", failed
	}
	pub := t.Public()
	f.publish(Event{Kind: "terminal", Terminal: &pub})
	return pub, cred, nil
}

// countWrongTry records one more wrong try in the pairing bucket and
// returns the error to report: ErrBadCode, or the lock once it is reached.
func countWrongTry(b *bolt.Bucket, failures int) (failed, err error) {
	failures++
	failed = ErrBadCode
	if failures >= MaxPairingFailures {
		failed = fmt.Errorf("%w (%d wrong tries): ask the admin for a new code", ErrPairingLock, failures)
	}
	return failed, b.Put(keyFailures, []byte(fmt.Sprint(failures)))
}

func wrongTries(b *bolt.Bucket) int {
	failures := 0
	if v := b.Get(keyFailures); v != nil {
		_, _ = fmt.Sscan(string(v), &failures)
	}
	return failures
}

// PairingCandidates returns up to limit pairing codes the edge holds,
// newest first, for a code-proving exchange (edge/pairing) in which the
// terminal does not name its code. Used and expired codes are included so
// that proving one gives the same answer as Pair does (used, expired)
// rather than a wrong try. It fails with ErrPairingLock while locked.
func (f *Fleet) PairingCandidates(limit int) ([]string, error) {
	var codes []pairingCode
	err := f.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketPairing)
		if wrongTries(b) >= MaxPairingFailures {
			return ErrPairingLock
		}
		return b.ForEach(func(k, v []byte) error {
			var p pairingCode
			if k[0] != 0 && json.Unmarshal(v, &p) == nil && codeRE.MatchString(p.Code) {
				codes = append(codes, p)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(codes, func(i, j int) bool { return codes[i].ExpiresAt.After(codes[j].ExpiresAt) })
	out := make([]string, 0, min(limit, len(codes)))
	for i := 0; i < len(codes) && i < limit; i++ {
		out = append(out, codes[i].Code)
	}
	return out, nil
}

// WrongPairingTry counts a code-proving exchange whose proof matched no
// code as a wrong try toward the same lock-out Pair uses. It returns
// ErrBadCode, or an error wrapping ErrPairingLock once the lock is reached
// (or was already).
func (f *Fleet) WrongPairingTry() error {
	var failed error
	err := f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketPairing)
		n := wrongTries(b)
		if n >= MaxPairingFailures {
			failed = ErrPairingLock
			return nil
		}
		var err error
		failed, err = countWrongTry(b, n)
		return err
	})
	if err != nil {
		return fmt.Errorf("count wrong pairing try: %w", err)
	}
	return failed
}

// WrongPairingTries is the number of wrong tries since the admin last
// issued a code (the lock-out is at MaxPairingFailures).
func (f *Fleet) WrongPairingTries() (int, error) {
	n := 0
	err := f.db.View(func(tx *bolt.Tx) error { n = wrongTries(tx.Bucket(BucketPairing)); return nil })
	return n, err
}

// Authenticate maps a terminal credential ("<terminal id>.<secret>") to its
// terminal. The id prefix makes it one lookup, not a scan, which matters
// when 2,000 terminals reconnect after an edge restart.
func (f *Fleet) Authenticate(cred string) (Terminal, error) {
	id, _, ok := strings.Cut(cred, ".")
	if !ok || id == "" || len(cred) > 256 {
		return Terminal{}, ErrUnauthorized
	}
	var t Terminal
	err := f.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(BucketTerminals).Get([]byte(id))
		if v == nil {
			return ErrUnauthorized
		}
		return json.Unmarshal(v, &t)
	})
	if err != nil {
		if errors.Is(err, ErrUnauthorized) {
			return Terminal{}, err
		}
		return Terminal{}, fmt.Errorf("authenticate terminal: %w", err)
	}
	if !token.Matches(cred, t.TokenHash) {
		return Terminal{}, ErrUnauthorized
	}
	return t.Public(), nil
}

// Terminals lists terminals with their live state merged in.
func (f *Fleet) Terminals() ([]Terminal, error) {
	out := []Terminal{}
	err := f.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(BucketTerminals).ForEach(func(_, v []byte) error {
			var t Terminal
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("decode terminal: %w", err)
			}
			out = append(out, t.Public())
			return nil
		})
	})
	f.mu.Lock()
	for i := range out {
		f.mergeLive(&out[i])
	}
	f.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

func (f *Fleet) mergeLive(t *Terminal) {
	if l, ok := f.live[t.ID]; ok {
		t.Online = l.conns > 0
		t.Addr, t.Version, t.LastSeen = l.addr, l.version, l.lastSeen
	}
}

// Connected records that a terminal opened a control connection. The
// returned function marks it gone again and persists its last-seen time.
func (f *Fleet) Connected(t Terminal, addr, version string) (disconnect func()) {
	f.mu.Lock()
	l := f.live[t.ID]
	if l == nil {
		l = &liveState{}
		f.live[t.ID] = l
	}
	l.conns++
	l.addr, l.lastSeen = addr, f.now().UTC()
	l.version = version
	if version == "" {
		l.version = t.Version
	}
	t.Online, t.Addr, t.Version, t.LastSeen = true, l.addr, l.version, l.lastSeen
	f.mu.Unlock()
	f.persist(t)
	online := t // each event gets its own copy: watchers encode it later
	f.publish(Event{Kind: "terminal", Terminal: &online})
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			gone := t
			l.conns--
			gone.Online = l.conns > 0
			gone.LastSeen = l.lastSeen
			f.mu.Unlock()
			f.persist(gone)
			f.publish(Event{Kind: "terminal", Terminal: &gone})
		})
	}
}

// Seen notes a heartbeat. It is memory-only: persisting 2,000 heartbeats a
// few times a minute would cost fsyncs for no benefit.
func (f *Fleet) Seen(terminalID string) {
	f.mu.Lock()
	if l, ok := f.live[terminalID]; ok {
		l.lastSeen = f.now().UTC()
	}
	f.mu.Unlock()
}

// OnlineCount is the number of terminals with a live connection.
func (f *Fleet) OnlineCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, l := range f.live {
		if l.conns > 0 {
			n++
		}
	}
	return n
}

func (f *Fleet) persist(t Terminal) {
	_ = f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketTerminals)
		v := b.Get([]byte(t.ID))
		if v == nil {
			return nil
		}
		var stored Terminal
		if err := json.Unmarshal(v, &stored); err != nil {
			return err
		}
		stored.Addr, stored.Version, stored.LastSeen = t.Addr, t.Version, t.LastSeen
		return putJSON(b, t.ID, stored)
	})
}

// Watch subscribes to events. The channel is closed when the watcher falls
// too far behind (it should reconnect and re-read the lists) or when cancel
// is called.
func (f *Fleet) Watch() (events <-chan Event, cancel func()) {
	ch := make(chan Event, 256)
	f.mu.Lock()
	f.watchers[ch] = struct{}{}
	f.mu.Unlock()
	return ch, func() {
		f.mu.Lock()
		if _, ok := f.watchers[ch]; ok {
			delete(f.watchers, ch)
			close(ch)
		}
		f.mu.Unlock()
	}
}

func (f *Fleet) publish(ev Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.watchers {
		select {
		case ch <- ev:
		default:
			// A slow watcher must not stall terminals; drop it.
			delete(f.watchers, ch)
			close(ch)
		}
	}
}

// getJSON decodes the record stored under id into v; what names the kind
// of record in the ErrNotFound message ("classroom", "terminal").
func getJSON(b *bolt.Bucket, what, id string, v any) error {
	raw := b.Get([]byte(id))
	if raw == nil {
		return fmt.Errorf("%w: %s %q", ErrNotFound, what, id)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode %s %q: %w", what, id, err)
	}
	return nil
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return b.Put([]byte(key), data)
}

func randomID(n int) string {
	const alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
