package api_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/campusedge/campusedge/edge/api"
)

type fakeIdentity struct{}

func (fakeIdentity) EdgeID() string                  { return "e-test" }
func (fakeIdentity) CheckAdminToken(tok string) bool { return tok == "admin-secret" }

// TestDebugPprofAdminOnly: the runtime's profiles are served under
// /api/v1/debug/pprof/ to the admin token only.
func TestDebugPprofAdminOnly(t *testing.T) {
	srv := httptest.NewServer(api.New(api.Config{Identity: fakeIdentity{}}))
	defer srv.Close()
	get := func(path, tok string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, tok := range []string{"", "wrong"} {
		if code, b := get("/api/v1/debug/pprof/heap", tok); code != http.StatusUnauthorized || !bytes.Contains(b, []byte(`"unauthorized"`)) {
			t.Errorf("heap profile with token %q: %d %s", tok, code, b)
		}
	}
	if code, b := get("/api/v1/debug/pprof/heap?gc=1", "admin-secret"); code != http.StatusOK || !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		t.Errorf("heap profile: %d, %d bytes (want gzipped protobuf)", code, len(b))
	}
	if code, b := get("/api/v1/debug/pprof/heap?debug=1", "admin-secret"); code != http.StatusOK || !bytes.Contains(b, []byte("# HeapAlloc = ")) {
		t.Errorf("text heap profile: %d %.200s", code, b)
	}
	if code, b := get("/api/v1/debug/pprof/", "admin-secret"); code != http.StatusOK || !bytes.Contains(b, []byte("goroutine")) {
		t.Errorf("index: %d %.200s", code, b)
	}
	if code, b := get("/api/v1/debug/pprof/nope", "admin-secret"); code != http.StatusNotFound || !bytes.Contains(b, []byte(`"not_found"`)) {
		t.Errorf("unknown profile: %d %s", code, b)
	}
}
