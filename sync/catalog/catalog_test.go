package catalog

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/campusedge/campusedge/edge/media"
)

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestImportChangesAndContent(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	video := make([]byte, 300_000)
	rand.Read(video)
	writeFile(t, filepath.Join(in, "Fractions 1.mp4"), video)
	writeFile(t, filepath.Join(in, "sub", "slides.pdf"), []byte("%PDF-1.4 slides"))
	writeFile(t, filepath.Join(in, ".hidden"), []byte("x"))

	s, err := Open(filepath.Join(dir, "hub"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []Imported
	if err := s.Import(in, func(im Imported) { got = append(got, im) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("imported %d items, want 2 (dot files skipped): %+v", len(got), got)
	}
	sum := sha256.Sum256(video)
	v := got[0].Item
	if v.Title != "Fractions 1" || v.MIME != "video/mp4" || v.Size != int64(len(video)) || v.SHA256 != hex.EncodeToString(sum[:]) || !media.ValidID(v.ID) {
		t.Fatalf("video item = %+v", v)
	}
	if b, err := os.ReadFile(media.BlobPath(s.BlobRoot(), v.SHA256)); err != nil || !bytes.Equal(b, video) {
		t.Fatalf("blob not stored content-addressed: %v", err)
	}
	// Re-import is a no-op: no new changes.
	if err := s.Import(in, nil); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Changes(0, 1)
	if err != nil || len(ch.Items) != 1 || !ch.More || ch.Next != "1" {
		t.Fatalf("page 1 = %+v, %v", ch, err)
	}
	ch, err = s.Changes(1, 10)
	if err != nil || len(ch.Items) != 1 || ch.More || ch.Next != "2" || ch.Items[0].Title != "slides" {
		t.Fatalf("page 2 = %+v, %v", ch, err)
	}
	// A changed item moves to the end of the change log, once.
	upd := ch.Items[0]
	upd.Subject = "maths"
	if _, err := s.Put(upd); err != nil {
		t.Fatal(err)
	}
	ch, _ = s.Changes(0, 10)
	if len(ch.Items) != 2 || ch.Items[1].Subject != "maths" || ch.Items[1].Seq != 3 || ch.Next != "3" {
		t.Fatalf("after update = %+v", ch)
	}

	srv := httptest.NewServer(Handler(s, nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/catalog?since=0&limit=10")
	if err != nil {
		t.Fatal(err)
	}
	page, err := media.DecodeChanges(resp.Body, 0)
	resp.Body.Close()
	if err != nil || len(page.Items) != 2 {
		t.Fatalf("decode hub page: %+v %v", page, err)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/content/"+v.ID, nil)
	req.Header.Set("Range", "bytes=100-199")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(b, video[100:200]) || resp.Header.Get("ETag") != media.ETag(v.SHA256) || resp.Header.Get("Content-Type") != "video/mp4" {
		t.Fatalf("range: %s %q %q", resp.Status, resp.Header.Get("ETag"), resp.Header.Get("Content-Type"))
	}
	for _, bad := range []string{"/api/v1/content/..%2Fhub.db", "/api/v1/content/%00", "/api/v1/catalog?since=x", "/api/v1/catalog?limit=0"} {
		resp, err := http.Get(srv.URL + bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 && resp.StatusCode != 404 {
			t.Errorf("%s: %s, want 400/404", bad, resp.Status)
		}
	}
}

func TestValidID(t *testing.T) {
	for _, id := range []string{"r0123abc", "a", "lesson-1.mp4", "x_y"} {
		if !media.ValidID(id) {
			t.Errorf("ValidID(%q) = false", id)
		}
	}
	for _, id := range []string{"", "..", "../etc", "/abs", "a/b", "a\x00b", "A", ".x", "-x", "a..b", `a\b`, strings.Repeat("a", 65)} {
		if media.ValidID(id) {
			t.Errorf("ValidID(%q) = true", id)
		}
	}
}

func FuzzValidID(f *testing.F) {
	for _, s := range []string{"r0123", "../x", "/etc/passwd", "a\x00", "a..b", "a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if !media.ValidID(id) {
			return
		}
		if strings.ContainsAny(id, "/\\\x00") || strings.Contains(id, "..") || filepath.IsAbs(id) || filepath.Clean(id) != id || len(id) > media.MaxIDLen {
			t.Fatalf("unsafe id accepted: %q", id)
		}
	})
}

const goodPage = `{"items":[{"id":"r1","title":"T","mime":"video/mp4","size":3,"sha256":"` +
	"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" + `","seq":2}],"next":"2","more":false}`

func TestDecodeChanges(t *testing.T) {
	c, err := media.DecodeChanges(strings.NewReader(goodPage), 1)
	if err != nil || len(c.Items) != 1 || c.Next != "2" {
		t.Fatalf("good page: %+v %v", c, err)
	}
	for name, bad := range map[string]string{
		"backwards cursor": `{"items":[],"next":"0"}`,
		"unknown field":    `{"items":[],"next":"5","x":1}`,
		"trailing":         `{"items":[],"next":"5"} {}`,
		"bad id":           strings.Replace(goodPage, `"r1"`, `"../r1"`, 1),
		"bad hash":         strings.Replace(goodPage, `"ba78`, `"BA78`, 1),
		"negative size":    strings.Replace(goodPage, `"size":3`, `"size":-3`, 1),
		"seq beyond next":  strings.Replace(goodPage, `"seq":2`, `"seq":9`, 1),
		"not json":         `<html>`,
		"huge":             `{"items":[],"next":"` + strings.Repeat("9", media.MaxChangeBytes) + `"}`,
	} {
		if _, err := media.DecodeChanges(strings.NewReader(bad), 1); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDecodeChanges(f *testing.F) {
	f.Add([]byte(goodPage), uint64(1))
	f.Add([]byte(`{"items":[],"next":"0","more":false}`), uint64(0))
	f.Add([]byte(`{"items":null,"next":""}`), uint64(0))
	f.Add([]byte(`{"items":[{"id":"a","mime":"x","size":0,"sha256":"","seq":1}],"next":"1"}`), uint64(0))
	f.Add([]byte(`[]`), uint64(3))
	f.Fuzz(func(t *testing.T, data []byte, since uint64) {
		c, err := media.DecodeChanges(bytes.NewReader(data), since)
		if err != nil {
			return
		}
		next, err := media.ParseCursor(c.Next)
		if err != nil || next < since || len(c.Items) > media.MaxPageItems {
			t.Fatalf("accepted bad page: %+v", c)
		}
		for _, it := range c.Items {
			if it.Validate() != nil || it.Seq <= since || it.Seq > next {
				t.Fatalf("accepted bad item %+v", it)
			}
			_ = media.BlobPath("/root", it.SHA256) // must not panic
		}
	})
}
