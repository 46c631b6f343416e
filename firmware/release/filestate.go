package release

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/campusedge/campusedge/edge/fsutil"
)

// fileState keeps the index in DATA/firmware/releases.json and each edge's
// report in DATA/firmware/edges/: one hub process owns them.
type fileState struct {
	dir     string
	mu      sync.Mutex
	idx     index
	reports int // files under edges/, bounded by maxEdges
}

func openFileState(dir string) (*fileState, error) {
	s := &fileState{dir: dir}
	if ents, err := os.ReadDir(filepath.Join(dir, "edges")); err == nil {
		s.reports = len(ents)
	}
	b, err := os.ReadFile(filepath.Join(dir, "releases.json"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("release store: %w", err)
	default:
		if err := json.Unmarshal(b, &s.idx); err != nil {
			return nil, fmt.Errorf("release index %s is damaged: %w", filepath.Join(dir, "releases.json"), err)
		}
	}
	return s, nil
}

func (s *fileState) Releases() ([]Release, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Release(nil), s.idx.Releases...), nil
}

func (s *fileState) UpdateReleases(fn func(rels *[]Release) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rels := append([]Release(nil), s.idx.Releases...)
	if err := fn(&rels); err != nil {
		return err
	}
	b, err := json.MarshalIndent(index{Releases: rels}, "", " ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(s.dir, "releases.json"), b, 0o644); err != nil {
		return err
	}
	s.idx.Releases = rels
	return nil
}

// reportPath is where edge's report is kept: named by a hash of the id,
// so no id can name another path.
func (s *fileState) reportPath(edge string) string {
	h := sha256.Sum256([]byte(edge))
	return filepath.Join(s.dir, "edges", hex.EncodeToString(h[:16])+".json")
}

func (s *fileState) KeepReport(rep EdgeReport) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.reportPath(rep.EdgeID)
	b, err := os.ReadFile(p)
	exists := err == nil
	if exists {
		var old EdgeReport
		if json.Unmarshal(b, &old) == nil && sameReport(old, rep) {
			return nil
		}
	}
	if !exists && s.reports >= maxEdges {
		return nil
	}
	nb, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(p, nb, 0o600); err != nil {
		return fmt.Errorf("keep the report of edge %s: %w", rep.EdgeID, err)
	}
	if !exists {
		s.reports++
	}
	return nil
}

// sameReport reports whether rep says what old says and old is recent
// enough that rewriting it only to move "seen" is not worth a write.
func sameReport(old, rep EdgeReport) bool {
	seen := old.Seen
	old.Seen = rep.Seen
	a, _ := json.Marshal(old)
	b, _ := json.Marshal(rep)
	return string(a) == string(b) && rep.Seen.Sub(seen) < reportRefresh
}

func (s *fileState) Reports() ([]EdgeReport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ents, _ := os.ReadDir(filepath.Join(s.dir, "edges"))
	out := make([]EdgeReport, 0, len(ents))
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(s.dir, "edges", e.Name()))
		var rep EdgeReport
		if err == nil && json.Unmarshal(b, &rep) == nil {
			out = append(out, rep)
		}
	}
	return out, nil
}
