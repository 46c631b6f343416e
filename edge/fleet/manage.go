package fleet

import (
	"encoding/json"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Terminal kinds: what an admin labels a paired device as.
const (
	KindBigScreen = "big_screen" // a classroom's projected screen (the classroom page)
	KindAgent     = "agent"      // a headless classterm agent
)

// RenameClassroom changes a classroom's name and room code (room codes
// stay unique). Empty fields keep what there is.
func (f *Fleet) RenameClassroom(id, name, roomCode string) (Classroom, error) {
	var c Classroom
	err := f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketClassrooms)
		if err := getJSON(b, "classroom", id, &c); err != nil {
			return err
		}
		if name == "" {
			name = c.Name
		}
		if roomCode == "" {
			roomCode = c.RoomCode
		}
		if err := ValidateClassroom(name, roomCode); err != nil {
			return err
		}
		dup := b.ForEach(func(k, v []byte) error {
			var o Classroom
			if string(k) != id && json.Unmarshal(v, &o) == nil && strings.EqualFold(o.RoomCode, roomCode) {
				return fmt.Errorf("%w: a classroom with room code %q exists", ErrConflict, roomCode)
			}
			return nil
		})
		if dup != nil {
			return dup
		}
		c.Name, c.RoomCode = strings.TrimSpace(name), roomCode
		return putJSON(b, id, c)
	})
	if err != nil {
		return Classroom{}, err
	}
	f.publish(Event{Kind: "classroom", Classroom: &c})
	return c, nil
}

// DeleteClassroom removes a classroom that has no paired terminal left
// (unpair them first: deleting a room must not silently cut a screen off).
func (f *Fleet) DeleteClassroom(id string) error {
	var c Classroom
	err := f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketClassrooms)
		if err := getJSON(b, "classroom", id, &c); err != nil {
			return err
		}
		n := 0
		_ = tx.Bucket(BucketTerminals).ForEach(func(_, v []byte) error {
			var t Terminal
			if json.Unmarshal(v, &t) == nil && t.ClassroomID == id {
				n++
			}
			return nil
		})
		if n > 0 {
			return fmt.Errorf("%w: classroom %q still has %d paired terminal(s); unpair them first", ErrConflict, c.RoomCode, n)
		}
		return b.Delete([]byte(id))
	})
	if err != nil {
		return err
	}
	f.publish(Event{Kind: "classroom", Classroom: &c, Removed: true})
	return nil
}

// Unpair forgets a terminal: its credential stops working at once (the
// next Authenticate fails); the caller closes its open connections.
func (f *Fleet) Unpair(id string) (Terminal, error) {
	var t Terminal
	err := f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketTerminals)
		if err := getJSON(b, "terminal", id, &t); err != nil {
			return err
		}
		return b.Delete([]byte(id))
	})
	if err != nil {
		return Terminal{}, err
	}
	t = t.Public()
	t.Online = false
	f.publish(Event{Kind: "terminal", Terminal: &t, Removed: true})
	return t, nil
}

// LabelTerminal sets a terminal's kind (KindBigScreen, KindAgent) and,
// when name is not empty, its name.
func (f *Fleet) LabelTerminal(id, kind, name string) (Terminal, error) {
	if kind != "" && kind != KindBigScreen && kind != KindAgent {
		return Terminal{}, fmt.Errorf("%w: kind must be %q or %q", ErrInvalid, KindBigScreen, KindAgent)
	}
	if len(name) > 64 || strings.ContainsAny(name, "\x00\r\n") {
		return Terminal{}, fmt.Errorf("%w: name must be one line of at most 64 bytes", ErrInvalid)
	}
	var t Terminal
	err := f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketTerminals)
		if err := getJSON(b, "terminal", id, &t); err != nil {
			return err
		}
		if kind != "" {
			t.Kind = kind
		}
		if name = strings.TrimSpace(name); name != "" {
			t.Name = name
		}
		return putJSON(b, id, t)
	})
	if err != nil {
		return Terminal{}, err
	}
	t = t.Public()
	f.mu.Lock()
	f.mergeLive(&t)
	f.mu.Unlock()
	f.publish(Event{Kind: "terminal", Terminal: &t})
	return t, nil
}
