package classroom_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/pion/webrtc/v4"
)

// corsDo sends method path as a script on origin would (an Origin header,
// and for OPTIONS the preflight's Access-Control-Request-* headers).
func corsDo(t *testing.T, ctx context.Context, e *edge, method, path, origin string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestWHIPWHEPCORSHeaders: the preflight on every WHIP/WHEP endpoint and
// resource is answered as RFC 9725 asks, and actual responses — answers,
// errors, DELETE — carry Access-Control-Allow-Origin and expose Location,
// never Allow-Credentials (auth is by bearer token, not cookies).
func TestWHIPWHEPCORSHeaders(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createUnrecorded(t, ctx, "CORS")
	const origin = "http://player.city.example:9000"

	checkActual := func(what string, resp *http.Response) {
		t.Helper()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want *", what, got)
		}
		if got := resp.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "Location") {
			t.Errorf("%s: Access-Control-Expose-Headers %q does not expose Location", what, got)
		}
		if got := resp.Header.Get("Access-Control-Allow-Credentials"); got != "" {
			t.Errorf("%s: Access-Control-Allow-Credentials %q: must not be sent", what, got)
		}
	}

	pub := mediatest.Publish(t, ctx, e, s.ID, s.Tokens.Master)
	sub := mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Observer)
	// A successful answer (201 with Location) is marked too.
	{
		pc, err := mediatest.LoopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
		resp, b := e.Do(t, ctx, "POST", "/whep/"+s.ID, s.Tokens.Observer, "application/sdp", mediatest.Offer(t, ctx, pc))
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") == "" {
			t.Fatalf("WHEP: %d %s", resp.StatusCode, b)
		}
		checkActual("POST /whep (201)", resp)
	}

	preflights := []struct {
		path, method string
		methods      []string
		acceptPost   bool
	}{
		{"/whip/" + s.ID, "POST", []string{"POST", "OPTIONS"}, true},
		{"/whep/" + s.ID, "POST", []string{"POST", "OPTIONS"}, true},
		{pub.Location, "DELETE", []string{"PATCH", "DELETE", "OPTIONS"}, false},
		{sub.Location, "DELETE", []string{"PATCH", "DELETE", "OPTIONS"}, false},
		{sub.Location, "PATCH", []string{"PATCH", "DELETE", "OPTIONS"}, false},
		// An unknown session or resource still gets its preflight: the
		// real request then says what is wrong, readably.
		{"/whip/000000000000000000000000", "POST", []string{"POST"}, true},
		{"/whep/" + s.ID + "/gone", "DELETE", []string{"DELETE"}, false},
	}
	for _, p := range preflights {
		resp := corsDo(t, ctx, e, "OPTIONS", p.path, origin, map[string]string{
			"Access-Control-Request-Method":  p.method,
			"Access-Control-Request-Headers": "authorization,content-type",
		})
		what := "OPTIONS " + p.path
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("%s: %d, want 204", what, resp.StatusCode)
		}
		checkActual(what, resp)
		methods := resp.Header.Get("Access-Control-Allow-Methods")
		for _, m := range p.methods {
			if !strings.Contains(methods, m) {
				t.Errorf("%s: Access-Control-Allow-Methods %q lacks %s", what, methods, m)
			}
		}
		allowed := strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers"))
		for _, h := range []string{"authorization", "content-type", "if-match"} {
			if !strings.Contains(allowed, h) {
				t.Errorf("%s: Access-Control-Allow-Headers %q lacks %s", what, allowed, h)
			}
		}
		if resp.Header.Get("Access-Control-Max-Age") == "" {
			t.Errorf("%s: no Access-Control-Max-Age", what)
		}
		if got := resp.Header.Get("Accept-Post"); p.acceptPost && got != "application/sdp" {
			t.Errorf("%s: Accept-Post %q, want application/sdp", what, got)
		} else if !p.acceptPost && got != "" {
			t.Errorf("%s: Accept-Post %q on a resource (it takes no POST)", what, got)
		}
	}

	// Actual responses: errors first (a client must be able to read them).
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	for _, c := range []struct {
		method, path string
		hdr          map[string]string
		code         int
	}{
		{"POST", "/whip/" + s.ID, nil, http.StatusUnauthorized},
		{"POST", "/whip/" + s.ID, bearer(s.Tokens.Observer), http.StatusForbidden},
		{"POST", "/whep/" + s.ID, bearer(s.Tokens.Observer), http.StatusUnsupportedMediaType},
		{"PATCH", sub.Location, bearer(s.Tokens.Observer), http.StatusMethodNotAllowed},
		{"GET", "/whep/" + s.ID, nil, http.StatusMethodNotAllowed},
		{"PUT", pub.Location, nil, http.StatusMethodNotAllowed},
		{"DELETE", "/whep/" + s.ID + "/gone", bearer(s.Tokens.Observer), http.StatusNotFound},
		{"DELETE", sub.Location, bearer(s.Tokens.Observer), http.StatusOK},
		{"DELETE", pub.Location, bearer(s.Tokens.Master), http.StatusOK},
	} {
		resp := corsDo(t, ctx, e, c.method, c.path, origin, c.hdr)
		what := c.method + " " + c.path
		if resp.StatusCode != c.code {
			t.Errorf("%s: %d, want %d", what, resp.StatusCode, c.code)
		}
		checkActual(what, resp)
	}
}
