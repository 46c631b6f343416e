package cache

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/campusedge/campusedge/edge/media"
)

// FuzzServeRange checks that an in-flight download served through
// growingFile answers any Range (and If-Range) header exactly as a
// complete file does: same status, same Content-Range, same bytes.
func FuzzServeRange(f *testing.F) {
	for _, s := range []string{"", "bytes=0-0", "bytes=-1", "bytes=5-", "bytes=-0", "bytes=0-", "bytes=99999-", "bytes=3-2", "bytes=1-2,4-5", "bytes=--1", "bytes= 1 - 2 ", "items=0-1", "bytes=0-18446744073709551615", "bytes=,", "bytes=-99999"} {
		f.Add(s, uint16(1000), false)
	}
	f.Add("bytes=10-19", uint16(1), true)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, rng string, size uint16, staleIfRange bool) {
		n := int(size)%5000 + 1
		content := bytes.Repeat([]byte("0123456789abcdefghij"), n/20+1)[:n]
		it := media.Item{ID: "fuzz", Size: int64(n), SHA256: strings.Repeat("a", 64), MIME: "video/mp4"}
		path := filepath.Join(dir, "part")
		if err := os.WriteFile(path, content[:n/2], 0o600); err != nil {
			t.Fatal(err)
		}
		d := newDownload(it)
		d.update(func() { d.written, d.live = int64(n/2), true })
		w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		go func() { // the rest arrives while the reader waits
			defer w.Close()
			time.Sleep(time.Millisecond)
			_, _ = w.Write(content[n/2:])
			d.update(func() { d.written = int64(n) })
			d.update(func() { d.verified = true })
			close(d.done)
		}()
		rf, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer rf.Close()
		req := httptest.NewRequest("GET", "/media/fuzz", nil)
		req.Header.Set("Range", rng)
		if staleIfRange {
			req.Header.Set("If-Range", `"other"`)
		} else {
			req.Header.Set("If-Range", media.ETag(it.SHA256))
		}
		got := httptest.NewRecorder()
		got.Header().Set("ETag", media.ETag(it.SHA256))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		http.ServeContent(got, req, "", time.Time{}, &growingFile{ctx: ctx, d: d, f: rf})
		<-d.done
		want := httptest.NewRecorder()
		want.Header().Set("ETag", media.ETag(it.SHA256))
		http.ServeContent(want, req, "", time.Time{}, bytes.NewReader(content))
		if got.Code != want.Code || got.Header().Get("Content-Range") != want.Header().Get("Content-Range") || got.Header().Get("Content-Length") != want.Header().Get("Content-Length") {
			t.Fatalf("Range %q on %d bytes: streaming %d %q, complete %d %q", rng, n, got.Code, got.Header().Get("Content-Range"), want.Code, want.Header().Get("Content-Range"))
		}
		if !strings.HasPrefix(want.Header().Get("Content-Type"), "multipart/") && !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
			t.Fatalf("Range %q on %d bytes: bodies differ (%d vs %d bytes)", rng, n, got.Body.Len(), want.Body.Len())
		}
	})
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"", "07:30-17:00=2M,default=unlimited", "22:00-06:00=unlimited,default=512k", "00:00-24:00=8k", "default=1G", "7:00-8:00=1.5M", "25:00-01:00=1M", "08:00-08:00=1M", "a=b", "default=0,default=1M"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseSchedule(s)
		if err != nil {
			return
		}
		for _, w := range sc.Windows {
			if w.From < 0 || w.From > 24*60 || w.To < 0 || w.To > 24*60 || w.BPS < 0 {
				t.Fatalf("%q parsed to bad window %+v", s, w)
			}
		}
		_ = sc.At(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
		again, err := ParseSchedule(sc.String())
		if err != nil || again.String() != sc.String() {
			t.Fatalf("%q → %q does not round-trip: %v", s, sc.String(), err)
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"", "0", "500G", "1T", "12", "-1", "1X", "9999999999T", "1k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && (n < 0 || n > 1<<50) {
			t.Fatalf("%q → %d", s, n)
		}
	})
}

func TestScheduleAt(t *testing.T) {
	sc, err := ParseSchedule("07:30-17:00=2M,22:00-06:00=unlimited,default=500k")
	if err != nil {
		t.Fatal(err)
	}
	at := func(h, m int) int64 { return sc.At(time.Date(2026, 3, 2, h, m, 0, 0, time.Local)) }
	for _, c := range []struct {
		h, m int
		want int64
	}{{7, 29, 500_000}, {7, 30, 2_000_000}, {16, 59, 2_000_000}, {17, 0, 500_000}, {23, 0, 0}, {5, 59, 0}, {6, 0, 500_000}} {
		if got := at(c.h, c.m); got != c.want {
			t.Errorf("%02d:%02d: %d, want %d", c.h, c.m, got, c.want)
		}
	}
	for _, bad := range []string{"07:30-17:00", "07:30-17:00=fast", "7:3-8:00=1M", "07:00-07:00=1M", "default=1M,default=2M", "10:00-11:00=100"} {
		if _, err := ParseSchedule(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzMediaFastPathParse checks the fast path's request parser against
// net/http's: whatever it answers itself must be a request net/http reads
// the same way (method, path, version, keep-alive, no body, no Range or
// condition), and it must never take a complete request for an incomplete
// one.
func FuzzMediaFastPathParse(f *testing.F) {
	for _, s := range []string{
		"GET /media/lesson-1 HTTP/1.1\r\nHost: edge\r\n\r\n",
		"HEAD /media/lesson-1 HTTP/1.1\r\nHost: 10.0.0.2:8080\r\nUser-Agent: wrk\r\n\r\n",
		"GET /media/a.b_c-d?v=1&t=2 HTTP/1.1\r\nHost: edge\r\nConnection: keep-alive\r\n\r\n",
		"GET /media/x HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
		"GET /media/x HTTP/1.0\r\n\r\n",
		"GET /media/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET /media/x HTTP/1.1\r\n\r\n",
		"GET /media/x HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n",
		"GET /media/x HTTP/1.1\r\nHost: edge\r\nRange: bytes=0-1\r\n\r\n",
		"GET /media/x HTTP/1.1\r\nHost: edge\r\nIf-None-Match: \"a\"\r\n\r\n",
		"GET /media/x HTTP/1.1\r\nHost: edge\r\nContent-Length: 5\r\n\r\nhello",
		"GET /media/x HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET /media/x HTTP/1.1\r\nHost: edge\r\n folded\r\n\r\n",
		"GET /media/x HTTP/1.1\nHost: edge\n\n",
		"GET /media/x HTTP/1.1\r\nHost : edge\r\n\r\n",
		"GET /media/../api/v1/edge HTTP/1.1\r\nHost: edge\r\n\r\n",
		"GET /media/%2e%2e HTTP/1.1\r\nHost: edge\r\n\r\n",
		"GET /media/x#f HTTP/1.1\r\nHost: edge\r\n\r\n",
		"GET /media/x HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"GET /media/x HTTP/1.1\r\nHost: edge\r\nExpect: 100-continue\r\n\r\n",
		"GET /media/x HTTP/1.1\r\nHost: edge\r\nCookie: a=b\r\n\r\n",
		"GET http://edge/media/x HTTP/1.1\r\nHost: edge\r\n\r\n",
		"POST /media/x HTTP/1.1\r\nHost: edge\r\n\r\n",
		"GET /media/x HTTP/1.1\r\nHost: edge\r\nX: \x01\r\n\r\n",
		"GET /media/x HTTP/1.1\r\nHo",
		"GET /med",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET /media/x HTTP/1.1\r\nHost: edge\r\n\r\nGET /media/y HTTP/1.1\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, res := parseMediaRequest(b)
		switch res {
		case parseMore:
			if bytes.Contains(b, []byte("\r\n\r\n")) {
				t.Fatalf("%q: complete header taken for incomplete", b)
			}
		case parseMedia:
			if r.size > len(b) || !bytes.HasSuffix(b[:r.size], []byte("\r\n\r\n")) {
				t.Fatalf("%q: size %d", b, r.size)
			}
			req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b[:r.size])))
			if err != nil {
				t.Fatalf("%q: the fast path answers what net/http refuses: %v", b, err)
			}
			method := "GET"
			if r.head {
				method = "HEAD"
			}
			if req.Method != method || req.URL.Path != "/media/"+r.id || !media.ValidID(r.id) {
				t.Fatalf("%q: fast path %s %q, net/http %s %q", b, method, r.id, req.Method, req.URL.Path)
			}
			if req.ProtoMajor != 1 || (req.ProtoMinor == 0) != r.http10 {
				t.Fatalf("%q: version %s, fast path http10=%v", b, req.Proto, r.http10)
			}
			if req.Close {
				t.Fatalf("%q: net/http closes after it, the fast path keeps it open", b)
			}
			if req.ContentLength != 0 || len(req.TransferEncoding) > 0 {
				t.Fatalf("%q: has a body", b)
			}
			// What net/http's server checks beyond ReadRequest.
			if req.ProtoMinor == 1 && req.Host == "" || !httpguts.ValidHostHeader(req.Host) {
				t.Fatalf("%q: Host %q", b, req.Host)
			}
			for k, vv := range req.Header {
				if !httpguts.ValidHeaderFieldName(k) {
					t.Fatalf("%q: header name %q", b, k)
				}
				for _, v := range vv {
					if !httpguts.ValidHeaderFieldValue(v) {
						t.Fatalf("%q: header value %q", b, v)
					}
				}
				if k == "Range" || strings.HasPrefix(k, "If-") || k == "Expect" || k == "Upgrade" || k == "Cookie" || k == "Authorization" {
					t.Fatalf("%q: the fast path ignores %s", b, k)
				}
			}
			// The same request cut short is not yet complete.
			if r2, res2 := parseMediaRequest(b[:r.size-1]); res2 != parseMore {
				t.Fatalf("%q cut by one byte: %v %+v", b, res2, r2)
			}
		}
	})
}
