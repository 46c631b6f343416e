package uplink

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ValidateDoc checks a downlink document before it is applied.
// Until the roster and timetable schemas land (sync/schooldata) a document
// is any JSON object of a known kind.
func ValidateDoc(kind string, data []byte) error {
	switch kind {
	case "roster", "timetable":
	default:
		return fmt.Errorf("unknown kind %q", kind)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	return nil
}

// Doc returns the latest document of kind, or nil.
func Doc(db *bolt.DB, kind string) ([]byte, error) {
	var out []byte
	err := db.View(func(tx *bolt.Tx) error {
		out = append([]byte(nil), tx.Bucket(BucketDocs).Get([]byte(kind))...)
		return nil
	})
	if len(out) == 0 {
		return nil, err
	}
	return out, err
}
