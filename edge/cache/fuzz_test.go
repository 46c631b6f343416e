package cache

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
