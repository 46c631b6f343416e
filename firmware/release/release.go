// Package release is the city hub's firmware release channel: operators
// publish signed bundles per target with a channel (stable or beta) and a
// staged rollout percentage; edges ask, when connected, whether there is a
// release for them and download it with Range requests. Every bundle is
// verified against the hub's trusted release keys before it is published,
// so an edge never spends WAN bandwidth on a bundle it would refuse.
//
// Storage is a directory under the hub's data dir:
//
//	DATA/firmware/releases.json        index of releases
//	DATA/firmware/edges/<hash>.json    each edge's last report (written when it changes, or hourly)
//	DATA/firmware/blobs/sha256/ab/…    bundles, content-addressed
//	DATA/firmware/release-keys/*pub*   trusted release public keys
//	DATA/firmware/publish-token        bearer token for publishing (0600)
package release

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/firmware/bundle"
)

// Channels.
const (
	Stable = "stable"
	Beta   = "beta"
)

// ValidChannel reports whether c is a channel.
func ValidChannel(c string) bool { return c == Stable || c == Beta }

// Release is one published bundle.
type Release struct {
	Product    string    `json:"product"`
	Target     string    `json:"target"`
	Version    string    `json:"version"`
	MinVersion string    `json:"min_version,omitempty"`
	Channel    string    `json:"channel"`
	Rollout    int       `json:"rollout_percent"`
	SHA256     string    `json:"sha256"`
	Size       int64     `json:"size"`
	KeyID      string    `json:"key_id"`
	Published  time.Time `json:"published"`
	// URL is the bundle's path on the hub.
	URL string `json:"url"`
}

// EdgeReport is what an edge said about itself at its last check.
type EdgeReport struct {
	EdgeID    string           `json:"edge_id"`
	School    string           `json:"school,omitempty"`
	Target    string           `json:"target"`
	Channel   string           `json:"channel"`
	Version   string           `json:"version"`
	State     string           `json:"state"`
	Detail    string           `json:"detail,omitempty"`
	Terminals []TerminalReport `json:"terminals,omitempty"`
	Seen      time.Time        `json:"seen"`
}

// TerminalReport is one terminal's firmware as its edge reports it.
type TerminalReport struct {
	ID      string `json:"id"`
	Model   string `json:"model,omitempty"`
	Version string `json:"version"`
}

type index struct {
	Releases []Release `json:"releases"`
}

// reportRefresh is how old a stored report's Seen may get before an
// unchanged report is written again: a check that changes nothing costs
// no write, and "seen" stays right to this much.
const reportRefresh = time.Hour

// Limits on what edges may make the hub remember.
const (
	maxEdges     = 100000
	maxTerminals = 512
)

// Store holds releases and edge reports. It is safe for concurrent use.
// The release index and the reports are in a State: files under
// DATA/firmware for one hub (Open), or a database several replicas share
// (OpenWith); bundles, keys and the publish token are files either way.
type Store struct {
	dir   string
	keys  *bundle.Keyring // nil: no keys configured, publishing refused
	state State

	// BundleRequests counts bundle GETs (any range) served; tests and
	// metrics use it to prove downloads happen once.
	bundleRequests atomic.Int64
	bundleBytes    atomic.Int64
}

// State is where the release index and the edges' reports live.
type State interface {
	// Releases is the index.
	Releases() ([]Release, error)
	// UpdateReleases runs fn on the index with every other writer held
	// off, and saves what fn left if it returns nil.
	UpdateReleases(fn func(rels *[]Release) error) error
	// KeepReport stores rep unless the stored report says the same and is
	// younger than reportRefresh; a new edge beyond maxEdges is not kept.
	KeepReport(rep EdgeReport) error
	// Reports lists the stored reports.
	Reports() ([]EdgeReport, error)
}

// Open opens (creating) the release store under hubData/firmware, its
// state in files there.
func Open(hubData string) (*Store, error) {
	dir := filepath.Join(hubData, "firmware")
	if err := makeDirs(dir); err != nil {
		return nil, err
	}
	st, err := openFileState(dir)
	if err != nil {
		return nil, err
	}
	return OpenWith(hubData, st)
}

// OpenWith opens the release store under hubData/firmware with its state
// in st (PGState: shared by several replicas).
func OpenWith(hubData string, st State) (*Store, error) {
	dir := filepath.Join(hubData, "firmware")
	if err := makeDirs(dir); err != nil {
		return nil, err
	}
	s := &Store{dir: dir, state: st}
	if ring, err := bundle.LoadKeyring(filepath.Join(dir, "release-keys")); err == nil {
		s.keys = ring
	}
	return s, nil
}

func makeDirs(dir string) error {
	for _, d := range []string{dir, filepath.Join(dir, "blobs", "sha256"), filepath.Join(dir, "release-keys"), filepath.Join(dir, "tmp"), filepath.Join(dir, "edges")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("release store: %w", err)
		}
	}
	return nil
}

// Dir is DATA/firmware.
func (s *Store) Dir() string { return s.dir }

// KeysDir is where trusted release public keys go.
func (s *Store) KeysDir() string { return filepath.Join(s.dir, "release-keys") }

// PublishToken returns the publish token, creating it on first use. The
// file is the secret; whoever can read it may publish.
func (s *Store) PublishToken() (string, string, error) {
	p := filepath.Join(s.dir, "publish-token")
	b, err := os.ReadFile(p)
	if err == nil && len(strings.TrimSpace(string(b))) >= 32 {
		return strings.TrimSpace(string(b)), p, nil
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", err
	}
	tok := hex.EncodeToString(raw[:])
	if err := fsutil.WriteFileAtomic(p, []byte(tok+"\n"), 0o600); err != nil {
		return "", "", err
	}
	return tok, p, nil
}

func (s *Store) blobPath(sum string) string {
	return filepath.Join(s.dir, "blobs", "sha256", sum[:2], sum)
}

// Stats are the bundle download counters.
func (s *Store) Stats() (requests, bytes int64) {
	return s.bundleRequests.Load(), s.bundleBytes.Load()
}

// ErrConflict means a version was published before with other bytes.
var ErrConflict = errors.New("this target and version were already published with a different bundle; versions are immutable, publish a new version")

// ErrNotFound means no such release.
var ErrNotFound = errors.New("no such release")

// Publish reads a bundle from r, verifies it completely against the hub's
// release keys, stores it, and adds (or, for the same bytes, updates the
// channel and rollout of) its release.
func (s *Store) Publish(r io.Reader, channel string, rollout int) (Release, error) {
	if !ValidChannel(channel) {
		return Release{}, fmt.Errorf("channel %q must be stable or beta", channel)
	}
	if rollout < 0 || rollout > 100 {
		return Release{}, fmt.Errorf("rollout %d must be 0-100 (percent of edges)", rollout)
	}
	if s.keys == nil {
		return Release{}, fmt.Errorf("the hub trusts no release key yet: copy release-*.pub from edgefw keygen into %s and restart cityhub", s.KeysDir())
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "upload-*")
	if err != nil {
		return Release{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	limit := int64(bundle.MaxTotalBytes) + bundle.MaxManifestBytes + 1024
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, limit+1))
	if err != nil {
		return Release{}, fmt.Errorf("upload: %w", err)
	}
	if n > limit {
		return Release{}, fmt.Errorf("upload is larger than any valid bundle (%d bytes)", limit)
	}
	if err := tmp.Sync(); err != nil {
		return Release{}, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return Release{}, err
	}
	br, err := bundle.Open(tmp, s.keys, bundle.Policy{})
	if err != nil {
		return Release{}, err
	}
	if err := br.Verify(); err != nil {
		return Release{}, err
	}
	m := br.Manifest()
	sum := hex.EncodeToString(h.Sum(nil))
	rel := Release{Product: m.Product, Target: m.Target, Version: m.Version, MinVersion: m.MinVersion, Channel: channel, Rollout: rollout,
		SHA256: sum, Size: n, KeyID: br.KeyID().String(), Published: time.Now().UTC().Truncate(time.Second),
		URL: "/api/v1/firmware/bundles/" + sum}
	dst := s.blobPath(sum)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return Release{}, err
	}
	if err := tmp.Close(); err != nil {
		return Release{}, err
	}
	if err := fsutil.RenameDurable(tmp.Name(), dst); err != nil {
		return Release{}, err
	}
	out := rel
	err = s.state.UpdateReleases(func(rels *[]Release) error {
		for i, old := range *rels {
			if old.Target == rel.Target && old.Version == rel.Version && old.Product == rel.Product {
				if old.SHA256 != rel.SHA256 {
					return ErrConflict
				}
				old.Channel, old.Rollout = channel, rollout
				(*rels)[i], out = old, old
				return nil
			}
		}
		*rels = append(*rels, rel)
		return nil
	})
	return out, err
}

// SetRollout changes a release's channel and rollout percentage.
func (s *Store) SetRollout(target, version, channel string, rollout int) (Release, error) {
	if !ValidChannel(channel) || rollout < 0 || rollout > 100 {
		return Release{}, fmt.Errorf("channel must be stable or beta and rollout 0-100")
	}
	var out Release
	err := s.state.UpdateReleases(func(rels *[]Release) error {
		for i, r := range *rels {
			if r.Target == target && r.Version == version {
				r.Channel, r.Rollout = channel, rollout
				(*rels)[i], out = r, r
				return nil
			}
		}
		return ErrNotFound
	})
	return out, err
}

// Releases lists all releases, newest version first per target.
func (s *Store) Releases() ([]Release, error) {
	out, err := s.state.Releases()
	if err != nil {
		return nil, fmt.Errorf("release index: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Target != out[j].Target {
			return out[i].Target < out[j].Target
		}
		c, _ := bundle.CompareStrings(out[i].Version, out[j].Version)
		return c > 0
	})
	return out, nil
}

// Check is an edge's question.
type Check struct {
	EdgeID    string           `json:"edge_id"`
	School    string           `json:"school,omitempty"`
	Product   string           `json:"product"`
	Target    string           `json:"target"`
	Channel   string           `json:"channel"`
	Version   string           `json:"version"`
	State     string           `json:"state,omitempty"`
	Detail    string           `json:"detail,omitempty"`
	Bad       []string         `json:"bad,omitempty"`
	Terminals []TerminalReport `json:"terminals,omitempty"`
}

// Validate checks an edge's question.
func (c Check) Validate() error {
	if c.EdgeID == "" || len(c.EdgeID) > 128 {
		return errors.New("edge_id must be 1-128 characters")
	}
	if c.Target == "" || len(c.Target) > 64 || c.Product == "" || len(c.Product) > 64 {
		return errors.New("product and target must be 1-64 characters")
	}
	if !ValidChannel(c.Channel) {
		return fmt.Errorf("channel %q must be stable or beta", c.Channel)
	}
	if c.Version != "" {
		if _, err := bundle.ParseVersion(c.Version); err != nil {
			return err
		}
	}
	if len(c.Bad) > 16 || len(c.Terminals) > maxTerminals || len(c.State) > 64 || len(c.Detail) > 1024 || len(c.School) > 64 {
		return errors.New("report too large")
	}
	return nil
}

// InRollout says whether edge is among the first percent of edges for this
// release. The bucket is a hash of edge and version, so each release picks
// a different first wave, and raising the percentage only adds edges.
func InRollout(edgeID, target, version string, percent int) bool {
	sum := sha256.Sum256([]byte(edgeID + "\x00" + target + "\x00" + version))
	return int(binary.BigEndian.Uint32(sum[:4])%100) < percent
}

// ErrInvalidCheck wraps what is wrong with an edge's check.
var ErrInvalidCheck = errors.New("invalid firmware check")

// Answer records the edge's report and returns the release it should
// install, or nil.
func (s *Store) Answer(c Check) (*Release, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCheck, err)
	}
	if err := s.state.KeepReport(EdgeReport{EdgeID: c.EdgeID, School: c.School, Target: c.Target, Channel: c.Channel,
		Version: c.Version, State: c.State, Detail: c.Detail, Terminals: c.Terminals, Seen: time.Now().UTC().Truncate(time.Second)}); err != nil {
		return nil, err
	}
	rels, err := s.state.Releases()
	if err != nil {
		return nil, fmt.Errorf("release index: %w", err)
	}
	var best *Release
	for i := range rels {
		r := &rels[i]
		if r.Target != c.Target || r.Product != c.Product {
			continue
		}
		if c.Channel == Stable && r.Channel != Stable {
			continue
		}
		if c.Version != "" {
			if cmp, _ := bundle.CompareStrings(r.Version, c.Version); cmp <= 0 {
				continue
			}
			if r.MinVersion != "" {
				if cmp, _ := bundle.CompareStrings(c.Version, r.MinVersion); cmp < 0 {
					continue
				}
			}
		}
		if contains(c.Bad, r.Version) || !InRollout(c.EdgeID, r.Target, r.Version, r.Rollout) {
			continue
		}
		if best == nil {
			best = r
		} else if cmp, _ := bundle.CompareStrings(r.Version, best.Version); cmp > 0 {
			best = r
		}
	}
	if best == nil {
		return nil, nil
	}
	out := *best
	return &out, nil
}

// Edges lists the stored edge reports, by edge id.
func (s *Store) Edges() ([]EdgeReport, error) {
	out, err := s.state.Reports()
	if err != nil {
		return nil, fmt.Errorf("edge reports: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].EdgeID < out[j].EdgeID })
	return out, nil
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
