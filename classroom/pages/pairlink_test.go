package pages_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/classroom/pages"
	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/console"
)

// TestPairLinkInChromium: the console's QR code for a classroom opens
// classroom.html#pair=<code> (digits, full-width ones included): the page
// fills the code in, removes it from the address bar, and Pair sends it.
func TestPairLinkInChromium(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	var sent atomic.Value
	sent.Store("")
	mux := http.NewServeMux()
	mux.Handle("/", console.Handler())
	pages.Register(mux)
	mux.HandleFunc("POST /api/v1/pair", func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Code string }
		_ = json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body)
		sent.Store(body.Code)
		http.Error(w, `{"error":{"code":"pairing_code_wrong","message":"stub"}}`, http.StatusForbidden)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b := browsertest.Start(ctx, t)
	b.Do("open the classroom link", chromedp.Navigate(srv.URL+"/classroom.html#pair=１２３４５６"))
	if got := b.Poll("code filled in", `document.getElementById("pair-code").value || false`); got != "１２３４５６" {
		t.Fatalf("code field %q", got)
	}
	if h := b.Poll("fragment gone", `location.hash === "" ? "gone" : false`); h != "gone" {
		t.Fatal(h)
	}
	b.Do("press Pair", chromedp.Click(chromedp.CSS("#pair-go")))
	deadline := time.Now().Add(10 * time.Second)
	for sent.Load().(string) == "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// The page sends the code as typed; the edge reads full-width digits
	// as the same code (edge/api TestPairFullWidthCode).
	if got := sent.Load().(string); got != "１２３４５６" {
		t.Errorf("the page sent %q", got)
	}
	// A fragment that is not a code is left alone.
	b.Do("open with a bad fragment", chromedp.Navigate(srv.URL+"/classroom.html?again=1#pair=12<b>"))
	if got := b.Poll("page up", `document.getElementById("pair-code") ? "v:" + document.getElementById("pair-code").value : false`); got != "v:" {
		t.Errorf("code field %q from a bad fragment", got)
	}
}
