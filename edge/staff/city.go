package staff

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/api"
)

// CityPerson is one member of staff from the city's list (the downlink's
// staff document, validated by sync/schooldata).
type CityPerson struct {
	ID    string
	Name  string
	Roles []api.Role
	// Rooms are room codes (an assistant's classrooms; empty: any).
	Rooms []string
	// Hash is the argon2id hash of the initial secret ("": keep the one
	// set on this edge, if any).
	Hash string
}

// ApplyCityTx makes the city's people on this edge match list, inside the
// downlink's transaction: new ones are added, changed ones updated, and
// city people missing from the list removed (their sign-ins end when the
// transaction commits). People created in this edge's console are left
// alone unless the city lists the same id, which then becomes the
// city's. It returns the ids removed.
func (s *Store) ApplyCityTx(tx *bolt.Tx, list []CityPerson) ([]string, error) {
	b := tx.Bucket(Bucket)
	if b == nil {
		return nil, fmt.Errorf("staff bucket missing (store not migrated)")
	}
	now := s.now().UTC()
	want := map[string]bool{}
	var added, changed int
	for _, cp := range list {
		p := Person{ID: cp.ID, Name: cp.Name, Roles: cp.Roles, Classrooms: cp.Rooms, Source: SourceCity}
		if err := p.validate(); err != nil {
			return nil, fmt.Errorf("city staff %q: %w", cp.ID, err)
		}
		if cp.Hash != "" {
			if err := ValidHash(cp.Hash); err != nil {
				return nil, fmt.Errorf("city staff %q: %w", cp.ID, err)
			}
		}
		want[p.ID] = true
		old, err := s.get(tx, p.ID)
		rec := record{Person: p, Hash: old.Hash}
		rec.Credential = old.Credential
		if cp.Hash != "" {
			rec.Hash, rec.Credential = cp.Hash, credentialOf(cp.Hash, old)
		}
		rec.UpdatedAt = now
		if err == nil {
			changed++
		} else {
			added++
		}
		if err := put(tx, rec); err != nil {
			return nil, err
		}
	}
	var removed []string
	err := b.ForEach(func(k, v []byte) error {
		var rec record
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		if rec.Source == SourceCity && !want[rec.ID] {
			removed = append(removed, rec.ID)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, id := range removed {
		if err := b.Delete([]byte(id)); err != nil {
			return nil, err
		}
	}
	tx.OnCommit(func() {
		for _, id := range removed {
			s.revokeStaff(id)
			s.record("city", "staff.delete", id, "removed from the city's staff list")
		}
		s.log.Info("staff list from the city applied", "people", len(list), "added", added, "updated", changed, "removed", len(removed))
	})
	return removed, nil
}

// credentialOf names a city hash's kind: the city does not say whether it
// was a PIN, so it is shown as a password unless the edge knew better.
func credentialOf(hash string, old record) string {
	if old.Hash == hash && old.Credential != "" {
		return old.Credential
	}
	return CredentialPass
}
