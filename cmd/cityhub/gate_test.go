package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/identity"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/sync/wire"
)

// testEdge is an edge identity for driving the real hub.
type testEdge struct {
	id   string
	priv ed25519.PrivateKey
}

func (e *testEdge) EdgeID() string         { return e.id }
func (e *testEdge) Sign(msg []byte) []byte { return ed25519.Sign(e.priv, msg) }

func newTestEdge(t *testing.T) *testEdge {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &testEdge{id: identity.IDFromKey(pub), priv: priv}
}

// hubUnderTest is a real cityhub (run) with one school and enrol tokens.
type hubUnderTest struct {
	dir, base string
	tokens    []string
}

func startHub(t *testing.T, schools ...string) *hubUnderTest {
	t.Helper()
	h := &hubUnderTest{dir: filepath.Join(t.TempDir(), "hub")}
	for _, sc := range schools {
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{"-data", h.dir, "school", "add", sc, "School " + sc}, &out, &errb, nil); code != 0 {
			t.Fatalf("school add: %s", errb.String())
		}
		out.Reset()
		if code := run(context.Background(), []string{"-data", h.dir, "enrol-token", sc}, &out, &errb, nil); code != 0 {
			t.Fatalf("enrol-token: %s", errb.String())
		}
		h.tokens = append(h.tokens, strings.TrimSpace(out.String()))
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-data", h.dir, "-listen", "127.0.0.1:0", "-https-listen", "off"}, io.Discard, io.Discard, func(a, _ net.Addr) { addrc <- a })
	}()
	select {
	case a := <-addrc:
		h.base = "http://" + a.String()
	case <-time.After(10 * time.Second):
		t.Fatal("hub did not start")
	}
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// enrol enrols e with the i-th school's token.
func (h *hubUnderTest) enrol(t *testing.T, e *testEdge, i int) {
	t.Helper()
	pubB64 := base64.StdEncoding.EncodeToString(e.priv.Public().(ed25519.PublicKey))
	req := wire.EnrolRequest{Token: h.tokens[i], EdgeID: e.id, PublicKey: pubB64,
		Proof: base64.StdEncoding.EncodeToString(e.Sign(wire.EnrolProofString(h.tokens[i], e.id, pubB64)))}
	b, _ := json.Marshal(req)
	resp, err := http.Post(h.base+"/api/v1/sync/enrol", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("enrol: %s %s", resp.Status, body)
	}
}

// do sends a request: signed by e when e is set, with a bearer token when tok is set.
func (h *hubUnderTest) do(t *testing.T, e *testEdge, tok, method, path string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, h.base+path, bytes.NewReader(body))
	if e != nil {
		signed := body
		if wire.StreamedBody(method) {
			signed = nil
		}
		if err := wire.Sign(req, e, time.Now(), signed); err != nil {
			t.Fatal(err)
		}
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHubServesOnlyEnrolledEdgesAndStaff is the regression test of issue
// 14's findings 1-3 at the hub: before, every route below answered a
// stranger (an unauthenticated upload was the first step of the XSS
// chain); now only a signed enrolled edge or the staff token gets in, an
// upload never rewrites another school's item, and a firmware report is
// only about the edge that signs it.
func TestHubServesOnlyEnrolledEdgesAndStaff(t *testing.T) {
	h := startHub(t, "s1", "s2")
	a, b, stranger := newTestEdge(t), newTestEdge(t), newTestEdge(t)
	h.enrol(t, a, 0)
	h.enrol(t, b, 1)
	staffB, err := os.ReadFile(filepath.Join(h.dir, "staff-token"))
	if err != nil {
		t.Fatal(err)
	}
	staff := strings.TrimSpace(string(staffB))

	content := []byte("<html><script>alert(1)</script></html>")
	sum := sha256.Sum256(content)
	hexsum := hex.EncodeToString(sum[:])
	item := media.Item{ID: media.UploadID(hexsum), Title: "Homework", MIME: "application/pdf", Size: int64(len(content)), SHA256: hexsum}
	meta, _ := json.Marshal(item)
	check := func(edge string) []byte {
		b, _ := json.Marshal(map[string]any{"edge_id": edge, "product": "campusedge", "target": "linux-amd64", "channel": "stable", "version": "1.0.0"})
		return b
	}

	for _, c := range []struct {
		method, path string
		body         []byte
	}{
		{"GET", "/api/v1/catalog", nil},
		{"GET", "/api/v1/content/" + item.ID, nil},
		{"POST", "/api/v1/uploads", meta},
		{"PATCH", "/api/v1/uploads/" + hexsum, content},
		{"POST", "/api/v1/firmware/check", check(a.id)},
		{"GET", "/api/v1/firmware/releases", nil},
		{"GET", "/api/v1/firmware/bundles/" + hexsum, nil},
	} {
		if code, body := h.do(t, nil, "", c.method, c.path, c.body); code != 401 || !strings.Contains(body, `"unauthenticated"`) {
			t.Errorf("%s %s without a credential: %d %s, want 401 unauthenticated", c.method, c.path, code, body)
		}
		if code, body := h.do(t, stranger, "", c.method, c.path, c.body); code != 401 || !strings.Contains(body, "unknown_edge") {
			t.Errorf("%s %s signed by an edge never enrolled: %d %s, want 401 unknown_edge", c.method, c.path, code, body)
		}
		if code, body := h.do(t, nil, "not-the-staff-token-but-long-enough-to-look-real", c.method, c.path, c.body); code != 401 {
			t.Errorf("%s %s with a wrong bearer token: %d %s, want 401", c.method, c.path, code, body)
		}
	}
	// Tampering: a signature over other bytes does not pass.
	req, _ := http.NewRequest("POST", h.base+"/api/v1/firmware/check", bytes.NewReader(check(a.id)))
	wire.Sign(req, a, time.Now(), check(b.id))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("body other than signed: %v %v", err, resp.Status)
	}

	// School 1's edge uploads; the item enters the catalogue.
	if code, body := h.do(t, a, "", "POST", "/api/v1/uploads", meta); code != 200 {
		t.Fatalf("upload announcement from an enrolled edge: %d %s", code, body)
	}
	// Another school's edge may neither take over the upload nor continue it.
	if code, body := h.do(t, b, "", "POST", "/api/v1/uploads", meta); code != 409 || !strings.Contains(body, "upload_in_progress") {
		t.Fatalf("second announcer: %d %s", code, body)
	}
	req, _ = http.NewRequest("PATCH", h.base+"/api/v1/uploads/"+hexsum, bytes.NewReader(content))
	req.Header.Set("Upload-Offset", "0")
	wire.Sign(req, b, time.Now(), nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 403 {
		t.Fatalf("PATCH by another edge: %v %v", err, resp.Status)
	}
	req, _ = http.NewRequest("PATCH", h.base+"/api/v1/uploads/"+hexsum, bytes.NewReader(content))
	req.Header.Set("Upload-Offset", "0")
	wire.Sign(req, a, time.Now(), nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("PATCH by the announcer: %v %v", err, resp.Status)
	}
	// Re-announcing the same bytes with another title and type rewrites nothing.
	evil := item
	evil.Title, evil.MIME = "Pwned", "video/mp4"
	evilMeta, _ := json.Marshal(evil)
	if code, body := h.do(t, b, "", "POST", "/api/v1/uploads", evilMeta); code != 200 || !strings.Contains(body, `"done":true`) {
		t.Fatalf("re-announcement: %d %s", code, body)
	}
	// The upload waits for review (cityhub -upload-review, on by default):
	// not in the catalogue yet, listed for city staff under school 1.
	if code, body := h.do(t, b, "", "GET", "/api/v1/catalog", nil); code != 200 || strings.Contains(body, item.ID) {
		t.Fatalf("catalogue before review: %d %s", code, body)
	}
	if code, body := h.do(t, nil, staff, "GET", "/api/v1/admin/uploads?state=pending", nil); code != 200 ||
		!strings.Contains(body, `"title":"Homework"`) || !strings.Contains(body, `"school":"s1"`) || !strings.Contains(body, `"edge":"`+a.id+`"`) {
		t.Fatalf("uploads awaiting review: %d %s", code, body)
	}
	if code, body := h.do(t, nil, staff, "POST", "/api/v1/admin/uploads/"+item.ID+"/publish", []byte(`{"subject":"math","grade":"5"}`)); code != 200 || !strings.Contains(body, `"published"`) {
		t.Fatalf("publish: %d %s", code, body)
	}
	code, body := h.do(t, b, "", "GET", "/api/v1/catalog", nil)
	if code != 200 || !strings.Contains(body, `"title":"Homework"`) || !strings.Contains(body, `"subject":"math"`) || strings.Contains(body, "Pwned") {
		t.Fatalf("catalogue after another school's re-announcement and review: %d %s", code, body)
	}
	if code, body := h.do(t, nil, staff, "GET", "/api/v1/content/"+item.ID, nil); code != 200 || body != string(content) {
		t.Fatalf("content with the staff token: %d %q", code, body)
	}

	// Firmware: an edge reports about itself only; its school is its enrolment's.
	if code, body := h.do(t, a, "", "POST", "/api/v1/firmware/check", check(b.id)); code != 403 || !strings.Contains(body, "wrong_edge") {
		t.Fatalf("report for another edge: %d %s", code, body)
	}
	if code, body := h.do(t, a, "", "POST", "/api/v1/firmware/check", check(a.id)); code != 200 {
		t.Fatalf("own report: %d %s", code, body)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "firmware", "edges")); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(h.dir, "firmware", "edges"))
	if len(ents) != 1 {
		t.Fatalf("stored reports: %d, want 1 (kept in the store, not memory)", len(ents))
	}
}
