package pages_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/classroom/pages"
	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/console"
)

// TestHTTPSPortInMessageInChromium: the secure-context message takes the
// HTTPS port from GET /api/v1/edge (https_port) and falls back to 8443 when
// the edge does not say or the call fails. The pages and the console's
// /common.js are served as edged serves them; /api/v1/edge is a stub so
// both answers can be had.
// (classroom's TestInsecureContextMessageInChromium drives the pages
// against a real edge.)
func TestHTTPSPortInMessageInChromium(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	var edgeInfo atomic.Value // the body of /api/v1/edge; "" answers 500
	mux := http.NewServeMux()
	mux.Handle("/", console.Handler())
	pages.Register(mux)
	mux.HandleFunc("GET /api/v1/edge", func(w http.ResponseWriter, r *http.Request) {
		body := edgeInfo.Load().(string)
		if body == "" {
			http.Error(w, `{"error":{"code":"internal","message":"stub"}}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	// A name, not 127.0.0.1: Chromium treats loopback addresses as secure.
	const host = "edge.school.test"
	pageBase := "http://" + host + ":" + u.Port()
	b := browsertest.Start(ctx, t, browsertest.Flag("host-resolver-rules", "MAP "+host+" 127.0.0.1"))

	for _, c := range []struct{ info, page, want string }{
		{`{"id":"e1","https_port":9443}`, "/teacher.html", "https://" + host + ":9443/teacher.html"},
		{`{"id":"e1","https_port":9443}`, "/classroom.html", "https://" + host + ":9443/classroom.html"},
		{`{"id":"e1"}`, "/teacher.html", "https://" + host + ":8443/teacher.html"},
		{`{"id":"e1","https_port":"x"}`, "/teacher.html", "https://" + host + ":8443/teacher.html"},
		{"", "/classroom.html", "https://" + host + ":8443/classroom.html"},
	} {
		edgeInfo.Store(c.info)
		b.Do("open "+c.page, chromedp.Navigate(pageBase+c.page))
		secure, err := chromedp.Run(b.Context(), chromedp.Evaluate[bool](`window.isSecureContext`))
		if err != nil {
			t.Fatalf("evaluate window.isSecureContext: %v", err)
		}
		if secure {
			t.Fatalf("%s%s is a secure context; the test proves nothing", pageBase, c.page)
		}
		got := b.Poll(c.page+" message", `(() => {
		  const box = document.getElementById("media-help"), a = document.getElementById("https-link");
		  return box && !box.hidden && a ? a.textContent : "";
		})()`)
		if got != c.want {
			t.Errorf("/api/v1/edge %q: %s names %q, want %q", c.info, c.page, got, c.want)
		}
	}
	if ex := b.Exceptions(); len(ex) > 0 {
		t.Errorf("uncaught exceptions: %v", ex)
	}
}
