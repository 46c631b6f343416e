package api

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/fleet"
	"github.com/campusedge/campusedge/edge/store"
)

type fakeIdentity struct{}

func (fakeIdentity) EdgeID() string                  { return "testedge01" }
func (fakeIdentity) CheckAdminToken(tok string) bool { return tok == "admin" }

func newTestServer(t testing.TB) *Server {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := store.CreateBuckets(db, fleet.BucketClassrooms, fleet.BucketTerminals, fleet.BucketPairing); err != nil {
		t.Fatal(err)
	}
	return New(Config{Identity: fakeIdentity{}, Fleet: fleet.New(db, nil), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// FuzzJSONBodies sends arbitrary bodies to every endpoint that decodes JSON
// from outside: whatever arrives, the answer is a well-formed JSON response
// with a sane status, never a panic or a 5xx.
func FuzzJSONBodies(f *testing.F) {
	for _, s := range []string{`{"name":"G7","room_code":"R1"}`, `{"code":"123456","name":"x","version":"1"}`, `{}`, `[]`, `null`, `{"name":1}`, `{"code":"123456"}{}`, "\xff\xfe", `{"room_code":"` + string(bytes.Repeat([]byte("a"), 100)) + `"}`} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(1))
	}
	s := newTestServer(f)
	f.Fuzz(func(t *testing.T, body []byte, which uint8) {
		path := []string{"/api/v1/classrooms", "/api/v1/pair"}[which%2]
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer admin")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q: status %d %s", path, body, rec.Code, rec.Body)
		}
		var v map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("%s %q: answer is not JSON: %q", path, body, rec.Body)
		}
		if rec.Code >= 400 {
			e, _ := v["error"].(map[string]any)
			if e == nil || e["code"] == "" || e["message"] == "" {
				t.Fatalf("%s: error not in the DESIGN.md shape: %s", path, rec.Body)
			}
		}
	})
}
