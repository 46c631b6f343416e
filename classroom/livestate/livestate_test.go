package livestate_test

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/classroom/livestate"
)

func open(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// TestPutLoadAcrossReopen: documents written (and deleted) are what a
// reopened database loads, by session, kind and name; a session's
// documents go with DeleteSession and no other's do.
func TestPutLoadAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.db")
	db := open(t, path)
	st, err := livestate.New(db)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.Put("s1", "session", "", map[string]string{"title": "Maths"}))
	must(st.Put("s1", "quiz", "q1", map[string]bool{"open": true}))
	must(st.Put("s1", "quiz", "q2", map[string]bool{"open": false}))
	must(st.Put("s1", "answer", "q1\x1froom\x1f", []int{1}))
	must(st.Delete("s1", "quiz", "q2"))
	must(st.Put("s2", "session", "", map[string]string{"title": "History"}))
	must(st.Put("s3", "session", "", 1))
	must(st.DeleteSession("s3"))
	must(db.Close())

	db = open(t, path)
	defer db.Close()
	st, err = livestate.New(db)
	if err != nil {
		t.Fatal(err)
	}
	all, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all["s3"] != nil {
		t.Fatalf("sessions loaded: %v", all)
	}
	var title map[string]string
	if err := json.Unmarshal(all["s1"]["session"][""], &title); err != nil || title["title"] != "Maths" {
		t.Errorf("s1 session: %s %v", all["s1"]["session"][""], err)
	}
	if q := all["s1"]["quiz"]; len(q) != 1 || string(q["q1"]) != `{"open":true}` {
		t.Errorf("s1 quizzes: %v", q)
	}
	if a := all["s1"]["answer"]["q1\x1froom\x1f"]; string(a) != "[1]" {
		t.Errorf("s1 answer: %s", a)
	}
	if string(all["s2"]["session"][""]) != `{"title":"History"}` {
		t.Errorf("s2: %v", all["s2"])
	}
}

// TestRefusesBadKeysAndHugeDocs: keys the layout cannot hold and
// documents over MaxDocBytes are refused with ErrInvalid, storing nothing.
func TestRefusesBadKeysAndHugeDocs(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "edge.db"))
	defer db.Close()
	st, err := livestate.New(db)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ s, k, n string }{{"", "quiz", "x"}, {"s", "", "x"}, {"s\x00", "quiz", "x"}, {"s", "quiz", "a\x00b"}, {"s", "quiz", strings.Repeat("x", 600)}} {
		if err := st.Put(c.s, c.k, c.n, 1); !errors.Is(err, livestate.ErrInvalid) {
			t.Errorf("Put(%q, %q, %q): %v, want ErrInvalid", c.s, c.k, c.n, err)
		}
	}
	if err := st.Put("s", "quiz", "big", strings.Repeat("x", livestate.MaxDocBytes)); !errors.Is(err, livestate.ErrInvalid) {
		t.Errorf("a document over MaxDocBytes: %v", err)
	}
	if err := st.DeleteSession("a\x00"); !errors.Is(err, livestate.ErrInvalid) {
		t.Errorf("DeleteSession with NUL: %v", err)
	}
	all, err := st.Load()
	if err != nil || len(all) != 0 {
		t.Errorf("after refusals the store holds %v (%v)", all, err)
	}
}
