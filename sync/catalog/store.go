package catalog

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
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

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/edge/store"
)

// HubDBName is the hub's bbolt file inside its data directory.
const HubDBName = "hub.db"

var (
	bucketItems   = []byte("catalog_items")   // id -> media.Item JSON
	bucketChanges = []byte("catalog_changes") // seq (8 bytes BE) -> id
)

// ErrNotFound means no item has that id.
var ErrNotFound = errors.New("not found")

// Store is the hub's catalogue: records in bbolt, blobs on disk.
type Store struct {
	db  *bolt.DB
	dir string
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
	return &Store{db: db, dir: dir}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// BlobRoot is the directory that holds content-addressed blobs.
func (s *Store) BlobRoot() string { return filepath.Join(s.dir, "blobs") }

// Put records it (validated) under a new change sequence, unless an
// identical record is already there. It returns the stored item.
func (s *Store) Put(it media.Item) (media.Item, error) {
	var saved media.Item
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		saved, err = putTx(tx, it)
		return err
	})
	return saved, err
}

// putTx is Put inside tx.
func putTx(tx *bolt.Tx, it media.Item) (media.Item, error) {
	it.Seq = 0
	if err := it.Validate(); err != nil {
		return media.Item{}, err
	}
	err := func() error {
		items, changes := tx.Bucket(bucketItems), tx.Bucket(bucketChanges)
		if old := items.Get([]byte(it.ID)); old != nil {
			var prev media.Item
			if err := json.Unmarshal(old, &prev); err == nil {
				seq := prev.Seq
				prev.Seq = 0
				if prev == it {
					it.Seq = seq
					return nil
				}
				// One change entry per item: the newest.
				if err := changes.Delete(u64(seq)); err != nil {
					return err
				}
			}
		}
		seq, err := changes.NextSequence()
		if err != nil {
			return err
		}
		it.Seq = seq
		b, err := json.Marshal(it)
		if err != nil {
			return err
		}
		if err := items.Put([]byte(it.ID), b); err != nil {
			return err
		}
		return changes.Put(u64(seq), []byte(it.ID))
	}()
	if err != nil {
		return media.Item{}, fmt.Errorf("record item %s: %w", it.ID, err)
	}
	return it, nil
}

// Get returns the item with id.
func (s *Store) Get(id string) (media.Item, error) {
	var it media.Item
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketItems).Get([]byte(id))
		if b == nil {
			return fmt.Errorf("%w: no catalogue item %q", ErrNotFound, id)
		}
		return json.Unmarshal(b, &it)
	})
	return it, err
}

// Changes returns up to limit items changed after since, oldest first.
func (s *Store) Changes(since uint64, limit int) (media.Changes, error) {
	if limit <= 0 || limit > media.MaxPageItems {
		limit = media.MaxPageItems
	}
	out := media.Changes{Items: []media.Item{}, Next: fmt.Sprint(since)}
	err := s.db.View(func(tx *bolt.Tx) error {
		items := tx.Bucket(bucketItems)
		c := tx.Bucket(bucketChanges).Cursor()
		k, v := c.Seek(u64(since + 1))
		for ; k != nil; k, v = c.Next() {
			if len(out.Items) == limit {
				out.More = true
				break
			}
			var it media.Item
			if err := json.Unmarshal(items.Get(v), &it); err != nil {
				return fmt.Errorf("item %s: %w", v, err)
			}
			out.Items = append(out.Items, it)
			out.Next = fmt.Sprint(binary.BigEndian.Uint64(k))
		}
		return nil
	})
	return out, err
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
		return fmt.Errorf("read import folder: %w", err)
	}
	sort.Strings(paths)
	for _, p := range paths {
		sum, size, err := s.AddBlob(p)
		if err != nil {
			return err
		}
		name := filepath.Base(p)
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
		it, err := s.Put(media.Item{ID: media.IDForSum(sum), Title: title, MIME: mt, Size: size, SHA256: sum})
		if err != nil {
			return err
		}
		if each != nil {
			each(Imported{Item: it, Path: p})
		}
	}
	return nil
}

// AddBlob copies the file at path into the blob store (temp file, fsync,
// hash verified while copying, rename) and returns its SHA-256 and size.
func (s *Store) AddBlob(path string) (sum string, size int64, err error) {
	src, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("import %s: %w", path, err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Join(s.BlobRoot(), "tmp"), "import-*")
	if err != nil {
		return "", 0, fmt.Errorf("import %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(tmp, h), src)
	if err != nil {
		return "", 0, fmt.Errorf("import %s: copy: %w", path, err)
	}
	if size > media.MaxItemSize {
		return "", 0, fmt.Errorf("import %s: %w: larger than %d bytes", path, media.ErrInvalid, int64(media.MaxItemSize))
	}
	if err = tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("import %s: fsync: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("import %s: %w", path, err)
	}
	sum = hex.EncodeToString(h.Sum(nil))
	if err = media.PlaceBlob(tmp.Name(), s.BlobRoot(), sum); err != nil {
		return "", 0, fmt.Errorf("import %s: %w", path, err)
	}
	return sum, size, nil
}

func u64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}
