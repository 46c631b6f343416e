package rangefetch

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestAppendResumesAndRefusesBadAnswers: a partial file is continued with
// a Range request; a server that answers a range it was not asked for
// makes the file start over; one that sends too much is a mismatch.
func TestAppendResumesAndRefusesBadAnswers(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 10000)
	var lie, extra bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case lie && r.Header.Get("Range") != "":
			w.Header().Set("Content-Range", "bytes 0-9/100000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(body[:10])
		case extra:
			w.Write(append(body, 'x')) // chunked: no Content-Length to check
		default:
			w.Header().Set("ETag", `"v1"`)
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
		}
	}))
	defer srv.Close()
	f, err := os.Create(filepath.Join(t.TempDir(), "part"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write(body[:40000])
	restarts := 0
	req := Request{Client: srv.Client(), URL: srv.URL, ETag: `"v1"`, Size: int64(len(body)), Restarted: func() { restarts++ }}
	off, err := ResumeOffset(f, req.Size)
	if err != nil || off != 40000 {
		t.Fatalf("resume offset %d %v", off, err)
	}
	if retry, err := req.Append(context.Background(), f, off); err != nil || retry {
		t.Fatalf("resume: retry %v err %v", retry, err)
	}
	if n, sum, err := Sum(f); err != nil || n != req.Size || sum == "" || restarts != 0 {
		t.Fatalf("after resume: %d bytes, sum %q, err %v, restarts %d", n, sum, err, restarts)
	}

	lie = true
	f.Truncate(50000)
	if retry, err := req.Append(context.Background(), f, 50000); err == nil || !retry || restarts != 1 {
		t.Fatalf("wrong Content-Range: retry %v err %v restarts %d", retry, err, restarts)
	}
	if fi, _ := f.Stat(); fi.Size() != 0 {
		t.Fatalf("file kept %d bytes after a wrong range", fi.Size())
	}

	lie, extra = false, true
	if _, err := req.Append(context.Background(), f, 0); !errors.Is(err, ErrMismatch) {
		t.Fatalf("overlong body: %v, want ErrMismatch", err)
	}
}
