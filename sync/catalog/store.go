package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/edge/store"
)

// HubDBName is the hub's bbolt file inside its data directory.
const HubDBName = "hub.db"

// ErrNotFound means no item has that id.
var ErrNotFound = errors.New("not found")

// Store is the hub's catalogue: item records and the review queue in a
// metadata backend (bbolt DIR/hub.db, or PostgreSQL shared by several
// replicas: OpenPG), blobs on disk under DIR/blobs.
type Store struct {
	meta meta
	dir  string
}

// meta is where a Store keeps its records. Implementations give every
// change a sequence number that edges page through in order: a change
// committed later never gets a lower number than one already visible.
type meta interface {
	put(it media.Item) (media.Item, error) // it is valid, Seq 0
	get(id string) (media.Item, error)
	changes(since uint64, limit int) (media.Changes, error)
	submit(sub Submission) error // sub is valid and pending
	submitted(id string) bool
	submission(id string) (Submission, error)
	submissions(state, school string, limit int) ([]Submission, error)
	// decide applies fn to the pending submission id and, if fn returns
	// an item, records it in the catalogue in the same transaction.
	decide(id string, fn func(*Submission) (*media.Item, error)) (Submission, error)
	close() error
}

// Open opens (creating) DIR/hub.db and DIR/blobs.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, HubDBName)
	db, err := store.OpenBolt(path, 1500*time.Millisecond, "is another cityhub using this -data dir?")
	if err != nil {
		return nil, err
	}
	if err := store.CreateBuckets(db, bucketItems, bucketChanges, bucketReview); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	// Holding the lock, no import is running: temp files are leftovers of
	// one that was killed.
	tmp := filepath.Join(dir, "blobs", "tmp")
	if ents, err := os.ReadDir(tmp); err == nil {
		for _, e := range ents {
			_ = os.RemoveAll(filepath.Join(tmp, e.Name()))
		}
	}
	return &Store{meta: boltMeta{db}, dir: dir}, nil
}

// Close closes the metadata backend.
func (s *Store) Close() error { return s.meta.close() }

// BlobRoot is the directory that holds content-addressed blobs.
func (s *Store) BlobRoot() string { return filepath.Join(s.dir, "blobs") }

// Put records it (validated) under a new change sequence, unless an
// identical record is already there. It returns the stored item.
func (s *Store) Put(it media.Item) (media.Item, error) {
	it.Seq = 0
	if err := it.Validate(); err != nil {
		return media.Item{}, err
	}
	saved, err := s.meta.put(it)
	if err != nil {
		return media.Item{}, fmt.Errorf("record item %s: %w", it.ID, err)
	}
	return saved, nil
}

// Get returns the item with id.
func (s *Store) Get(id string) (media.Item, error) { return s.meta.get(id) }

// Changes returns up to limit items changed after since, oldest first.
func (s *Store) Changes(since uint64, limit int) (media.Changes, error) {
	if limit <= 0 || limit > media.MaxPageItems {
		limit = media.MaxPageItems
	}
	return s.meta.changes(since, limit)
}

// Imported is one file registered by Import.
type Imported struct {
	media.Item
	Path string
}

// Import registers every regular file under folder (recursively, in name
// order, skipping dot files): it stores the content as a blob and records
// an item whose id derives from the content hash, so importing the same
// file twice is a no-op.
func (s *Store) Import(folder string, each func(Imported)) error {
	paths, err := ImportPaths(folder)
	if err != nil {
		return err
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("import %s: %w", p, err)
		}
		it, err := s.ImportFile(filepath.Base(p), f)
		f.Close()
		if err != nil {
			return fmt.Errorf("import %s: %w", p, err)
		}
		if each != nil {
			each(Imported{Item: it, Path: p})
		}
	}
	return nil
}

// Room reports an error when the blob store's disk cannot take n more
// bytes and still keep the reserve the hub needs for its stores.
func (s *Store) Room(n int64) error {
	free, err := fsutil.FreeBytes(s.BlobRoot())
	if err != nil {
		return nil // unknown: let the write itself fail if it must
	}
	if free-uploadReserve < n {
		return fmt.Errorf("%w: the hub has %d bytes free and keeps %d in reserve; %d more do not fit", ErrNoRoom, free, int64(uploadReserve), n)
	}
	return nil
}

// ErrNoRoom means the hub's disk cannot take a file.
var ErrNoRoom = errors.New("not enough disk space")

// ImportPaths lists the files Import registers from folder: every regular
// file under it, recursively, in name order, dot files and directories
// skipped.
func ImportPaths(folder string) ([]string, error) {
	var paths []string
	err := filepath.WalkDir(folder, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != folder {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read import folder: %w", err)
	}
	sort.Strings(paths)
	return paths, nil
}

// ImportFile registers the content read from r as an item titled after
// name (its extension gives the type): what Import does for each file,
// and what the admin API does for a file the CLI sends to a running hub.
func (s *Store) ImportFile(name string, r io.Reader) (media.Item, error) {
	sum, size, err := s.addBlob(r)
	if err != nil {
		return media.Item{}, err
	}
	name = filepath.Base(name)
	ext := filepath.Ext(name)
	title := strings.TrimSuffix(name, ext)
	if len(title) > media.MaxTitleLen {
		// Cut at a character boundary: Chinese titles are 3 bytes a character.
		title = strings.ToValidUTF8(title[:media.MaxTitleLen], "")
	}
	// A type outside the allowlist (an HTML page, an SVG) becomes opaque
	// bytes, served as a download: see media.SetServeHeaders.
	mt := mime.TypeByExtension(strings.ToLower(ext))
	if mt == "" || !media.Uploadable(mt) {
		mt = "application/octet-stream"
	}
	return s.Put(media.Item{ID: media.IDForSum(sum), Title: title, MIME: mt, Size: size, SHA256: sum})
}

// AddBlob copies the file at path into the blob store (temp file, fsync,
// hash verified while copying, rename) and returns its SHA-256 and size.
func (s *Store) AddBlob(path string) (sum string, size int64, err error) {
	src, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("import %s: %w", path, err)
	}
	defer src.Close()
	sum, size, err = s.addBlob(src)
	if err != nil {
		return "", 0, fmt.Errorf("import %s: %w", path, err)
	}
	return sum, size, nil
}

// addBlob copies src into the blob store, at most media.MaxItemSize bytes.
func (s *Store) addBlob(src io.Reader) (sum string, size int64, err error) {
	tmp, err := os.CreateTemp(filepath.Join(s.BlobRoot(), "tmp"), "import-*")
	if err != nil {
		return "", 0, err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(tmp, h), io.LimitReader(src, media.MaxItemSize+1))
	if err != nil {
		return "", 0, fmt.Errorf("copy: %w", err)
	}
	if size > media.MaxItemSize {
		return "", 0, fmt.Errorf("%w: larger than %d bytes", media.ErrInvalid, int64(media.MaxItemSize))
	}
	if err = tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("fsync: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return "", 0, err
	}
	sum = hex.EncodeToString(h.Sum(nil))
	if err = media.PlaceBlob(tmp.Name(), s.BlobRoot(), sum); err != nil {
		return "", 0, err
	}
	return sum, size, nil
}
