package catalog

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/media"
)

var (
	bucketItems   = []byte("catalog_items")   // id -> media.Item JSON
	bucketChanges = []byte("catalog_changes") // seq (8 bytes BE) -> id
	bucketReview  = []byte("catalog_review")  // id -> Submission JSON
)

// boltMeta keeps the catalogue in DIR/hub.db: one cityhub holds it.
type boltMeta struct{ db *bolt.DB }

func (m boltMeta) close() error { return m.db.Close() }

func (m boltMeta) put(it media.Item) (media.Item, error) {
	var saved media.Item
	err := m.db.Update(func(tx *bolt.Tx) error {
		var err error
		saved, err = putTx(tx, it)
		return err
	})
	return saved, err
}

// putTx records it inside tx: a new change sequence unless an identical
// record is there already.
func putTx(tx *bolt.Tx, it media.Item) (media.Item, error) {
	items, changes := tx.Bucket(bucketItems), tx.Bucket(bucketChanges)
	if old := items.Get([]byte(it.ID)); old != nil {
		var prev media.Item
		if err := json.Unmarshal(old, &prev); err == nil {
			seq := prev.Seq
			prev.Seq = 0
			if prev == it {
				it.Seq = seq
				return it, nil
			}
			// One change entry per item: the newest.
			if err := changes.Delete(u64(seq)); err != nil {
				return media.Item{}, err
			}
		}
	}
	seq, err := changes.NextSequence()
	if err != nil {
		return media.Item{}, err
	}
	it.Seq = seq
	b, err := json.Marshal(it)
	if err != nil {
		return media.Item{}, err
	}
	if err := items.Put([]byte(it.ID), b); err != nil {
		return media.Item{}, err
	}
	return it, changes.Put(u64(seq), []byte(it.ID))
}

func (m boltMeta) get(id string) (media.Item, error) {
	var it media.Item
	err := m.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketItems).Get([]byte(id))
		if b == nil {
			return fmt.Errorf("%w: no catalogue item %q", ErrNotFound, id)
		}
		return json.Unmarshal(b, &it)
	})
	return it, err
}

func (m boltMeta) changes(since uint64, limit int) (media.Changes, error) {
	out := media.Changes{Items: []media.Item{}, Next: fmt.Sprint(since)}
	err := m.db.View(func(tx *bolt.Tx) error {
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

func (m boltMeta) submit(sub Submission) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		id := []byte(sub.Item.ID)
		if tx.Bucket(bucketReview).Get(id) != nil || tx.Bucket(bucketItems).Get(id) != nil {
			return nil
		}
		b, err := json.Marshal(sub)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketReview).Put(id, b)
	})
}

func (m boltMeta) submitted(id string) bool {
	found := false
	_ = m.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketReview).Get([]byte(id)) != nil
		return nil
	})
	return found
}

func (m boltMeta) submission(id string) (Submission, error) {
	var sub Submission
	err := m.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketReview).Get([]byte(id))
		if b == nil {
			return fmt.Errorf("%w: no upload %q awaiting review", ErrNotFound, id)
		}
		return json.Unmarshal(b, &sub)
	})
	return sub, err
}

func (m boltMeta) submissions(state, school string, limit int) ([]Submission, error) {
	var all []Submission
	err := m.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketReview).ForEach(func(k, v []byte) error {
			var sub Submission
			if err := json.Unmarshal(v, &sub); err != nil {
				return fmt.Errorf("submission %s: %w", k, err)
			}
			all = append(all, sub)
			return nil
		})
	})
	return filterSubmissions(all, state, school, limit), err
}

func (m boltMeta) decide(id string, fn func(*Submission) (*media.Item, error)) (Submission, error) {
	var sub Submission
	err := m.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketReview).Get([]byte(id))
		if b == nil {
			return fmt.Errorf("%w: no upload %q awaiting review", ErrNotFound, id)
		}
		if err := json.Unmarshal(b, &sub); err != nil {
			return err
		}
		it, err := fn(&sub)
		if err != nil {
			return err
		}
		if it != nil {
			saved, err := putTx(tx, *it)
			if err != nil {
				return err
			}
			sub.Item = saved
		}
		v, err := json.Marshal(sub)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketReview).Put([]byte(id), v)
	})
	return sub, err
}

func u64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}
