package uplink

import (
	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/sync/schooldata"
)

// ValidateDoc checks a downlink document before it is applied, by the
// same rules as the hub's CSV import.
func ValidateDoc(kind string, data []byte) error { return schooldata.Validate(kind, data) }

// Doc returns the latest document of kind as the hub sent it, or nil.
func Doc(db *bolt.DB, kind string) ([]byte, error) {
	var out []byte
	err := db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(BucketDocs).Get([]byte(kind)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}
