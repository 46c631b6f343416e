package catalog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/media"
)

// TestUploadsResumableAndVerified checks the hub's upload API: offsets are
// enforced, a body past the size is refused, a wrong hash is discarded,
// and a verified upload enters the catalogue.
func TestUploadsResumableAndVerified(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "hub"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewServer(Handler(st, nil))
	defer srv.Close()
	content := bytes.Repeat([]byte("lesson "), 10_000)
	h := sha256.Sum256(content)
	sum := hex.EncodeToString(h[:])
	item := media.Item{ID: "l" + sum[:20], Title: "t", MIME: "video/mp4", Size: int64(len(content)), SHA256: sum}
	post := func(it media.Item) (int, media.UploadState) {
		b, _ := json.Marshal(it)
		r, err := http.Post(srv.URL+"/api/v1/uploads", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var s media.UploadState
		json.NewDecoder(r.Body).Decode(&s)
		return r.StatusCode, s
	}
	patch := func(sum string, off int, body []byte) (int, string) {
		req, _ := http.NewRequest("PATCH", srv.URL+"/api/v1/uploads/"+sum, bytes.NewReader(body))
		req.Header.Set("Upload-Offset", fmt.Sprint(off))
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(r.Body)
		return r.StatusCode, b.String()
	}
	if code, s := post(item); code != 200 || s.Offset != 0 || s.Done {
		t.Fatalf("start: %d %+v", code, s)
	}
	if code, body := patch(sum, 0, content[:1000]); code != 200 || !strings.Contains(body, `"offset":1000`) {
		t.Fatalf("first part: %d %s", code, body)
	}
	if code, body := patch(sum, 500, content[500:]); code != 409 || !strings.Contains(body, `"offset":1000`) {
		t.Fatalf("wrong offset: %d %s", code, body)
	}
	if code, s := post(item); code != 200 || s.Offset != 1000 {
		t.Fatalf("restart reports %d %+v, want offset 1000", code, s)
	}
	if code, _ := patch(sum, 1000, append(append([]byte{}, content[1000:]...), 'x')); code != 413 {
		t.Fatalf("body past the size: %d", code)
	}
	if code, body := patch(sum, 1000, content[1000:]); code != 200 || !strings.Contains(body, `"done":true`) {
		t.Fatalf("rest: %d %s", code, body)
	}
	if got, err := st.Get(item.ID); err != nil || got.SHA256 != sum {
		t.Fatalf("catalogue after upload: %+v %v", got, err)
	}
	// Same size, wrong bytes: discarded, never catalogued.
	bad := item
	bad.SHA256 = strings.Repeat("ab", 32)
	bad.ID = media.UploadID(bad.SHA256)
	if code, _ := post(bad); code != 200 {
		t.Fatalf("start bad: %d", code)
	}
	if code, body := patch(bad.SHA256, 0, content); code != 422 || !strings.Contains(body, "hash_mismatch") {
		t.Fatalf("wrong hash: %d %s", code, body)
	}
	if _, err := st.Get(bad.ID); err == nil {
		t.Fatal("a mismatched upload was catalogued")
	}
	for _, c := range []struct{ sum, off string }{{"nothex", "0"}, {sum, "-1"}, {sum, "x"}, {strings.Repeat("cd", 32), "0"}} {
		req, _ := http.NewRequest("PATCH", srv.URL+"/api/v1/uploads/"+c.sum, strings.NewReader("x"))
		req.Header.Set("Upload-Offset", c.off)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 400 && r.StatusCode != 404 {
			t.Errorf("PATCH %s offset %s: %d", c.sum, c.off, r.StatusCode)
		}
	}
	if code, _ := post(media.Item{ID: "../x", Title: "t", MIME: "a/b", Size: 1, SHA256: sum}); code != 400 {
		t.Errorf("bad id accepted: %d", code)
	}
	// An upload cannot take over an existing (imported) id.
	imported, _ := st.Put(media.Item{ID: media.IDForSum(sum), Title: "city lesson", MIME: "video/mp4", Size: item.Size, SHA256: sum})
	evil := media.Item{ID: imported.ID, Title: "replaced", MIME: "video/mp4", Size: 5, SHA256: strings.Repeat("ef", 32)}
	if code, _ := post(evil); code != 400 {
		t.Errorf("upload over an imported id: %d, want 400", code)
	}
	if got, _ := st.Get(imported.ID); got.Title != "city lesson" {
		t.Errorf("imported item changed: %+v", got)
	}
}

// TestUploadReview: with review on, a verified upload waits for city staff
// instead of entering the catalogue; re-announcing it is done; publishing
// puts it in the catalogue with the reviewer's title, subject and grade,
// once; a rejection needs a reason and publishes nothing.
func TestUploadReview(t *testing.T) {
	backends(t, func(t *testing.T, st *Store) { testUploadReview(t, st) })
}

func testUploadReview(t *testing.T, st *Store) {
	srv := httptest.NewServer(HandlerWith(st, nil, HandlerOptions{Review: true}))
	defer srv.Close()
	send := func(content []byte, title string) media.Item {
		t.Helper()
		h := sha256.Sum256(content)
		sum := hex.EncodeToString(h[:])
		it := media.Item{ID: media.UploadID(sum), Title: title, MIME: "application/pdf", Size: int64(len(content)), SHA256: sum}
		b, _ := json.Marshal(it)
		if r, err := http.Post(srv.URL+"/api/v1/uploads", "application/json", bytes.NewReader(b)); err != nil || r.StatusCode != 200 {
			t.Fatalf("announce: %v %v", r, err)
		}
		req, _ := http.NewRequest("PATCH", srv.URL+"/api/v1/uploads/"+sum, bytes.NewReader(content))
		req.Header.Set("Upload-Offset", "0")
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var s media.UploadState
		json.NewDecoder(r.Body).Decode(&s)
		r.Body.Close()
		if r.StatusCode != 200 || !s.Done {
			t.Fatalf("upload: %d %+v", r.StatusCode, s)
		}
		// Announcing it again: done, the hub holds it.
		r, _ = http.Post(srv.URL+"/api/v1/uploads", "application/json", bytes.NewReader(b))
		json.NewDecoder(r.Body).Decode(&s)
		r.Body.Close()
		if !s.Done {
			t.Fatalf("re-announcement of a submitted upload: %+v", s)
		}
		return it
	}
	a := send([]byte("worksheet one"), "分数练习")
	b := send([]byte("worksheet two"), "bad")
	if _, err := st.Get(a.ID); err == nil {
		t.Fatal("an upload under review is in the catalogue")
	}
	if ch, _ := st.Changes(0, 10); len(ch.Items) != 0 {
		t.Fatalf("edges would list %d unreviewed items", len(ch.Items))
	}
	subs, err := st.Submissions(SubmissionPending, "", 0)
	if err != nil || len(subs) != 2 {
		t.Fatalf("pending: %+v %v", subs, err)
	}
	if _, err := st.Decide(b.ID, Decision{Reviewer: "ada", At: time.Now()}); !errors.Is(err, media.ErrInvalid) {
		t.Fatalf("rejection without a reason: %v", err)
	}
	if s, err := st.Decide(b.ID, Decision{Reason: "blurry scan", Reviewer: "ada", At: time.Now()}); err != nil || s.State != SubmissionRejected {
		t.Fatalf("reject: %+v %v", s, err)
	}
	s, err := st.Decide(a.ID, Decision{Publish: true, Subject: "数学", Grade: "5", Reviewer: "ada", At: time.Now()})
	if err != nil || s.State != SubmissionPublished {
		t.Fatalf("publish: %+v %v", s, err)
	}
	it, err := st.Get(a.ID)
	if err != nil || it.Title != "分数练习" || it.Subject != "数学" || it.Grade != "5" || it.Seq == 0 {
		t.Fatalf("published item %+v %v", it, err)
	}
	if _, err := st.Get(b.ID); err == nil {
		t.Fatal("a rejected upload is in the catalogue")
	}
	if _, err := st.Decide(a.ID, Decision{Publish: true, Reviewer: "bo", At: time.Now()}); !errors.Is(err, ErrDecided) {
		t.Fatalf("second decision: %v", err)
	}
	if subs, _ := st.Submissions(SubmissionPending, "", 0); len(subs) != 0 {
		t.Fatalf("still pending: %+v", subs)
	}
}
