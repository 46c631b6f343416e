package classroom_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom"
	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/edge/metricstest"
)

// TestResourcesEndOnlyByTheirToken is issue 14 finding 10's WHIP/WHEP
// part: before, any token of the session ended any viewer, and the
// cascade token (shared by every receiving school) ended the master's
// publish. Now a resource ends only by the token that made it, the master
// teacher's or the admin's.
func TestResourcesEndOnlyByTheirToken(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createClass(t, ctx, "Owners", 1)
	term := s.Tokens.Classrooms[s.Classrooms[0]].Terminal
	pub := mediatest.Publish(t, ctx, e, s.ID, s.Tokens.Master)
	obs := mediatest.Subscribe(t, ctx, e, s.ID, s.Tokens.Observer)
	room := mediatest.Subscribe(t, ctx, e, s.ID, term)
	del := func(loc, tok string) (int, string) {
		resp, b := e.Do(t, ctx, "DELETE", loc, tok, "", nil)
		return resp.StatusCode, string(b)
	}
	if code, body := del(obs.Location, term); code != http.StatusForbidden || !strings.Contains(body, "not_your_resource") {
		t.Fatalf("a terminal ended the observer's viewer: %d %s", code, body)
	}
	if code, body := del(pub.Location, s.Tokens.Cascade); code != http.StatusForbidden {
		t.Fatalf("the cascade token ended the master's publish: %d %s", code, body)
	}
	if code, body := del(obs.Location, s.Tokens.Observer); code != http.StatusOK {
		t.Fatalf("the observer ending its own viewer: %d %s", code, body)
	}
	if code, body := del(room.Location, s.Tokens.Master); code != http.StatusOK {
		t.Fatalf("the master ending a viewer: %d %s", code, body)
	}
	if code, body := del(pub.Location, e.admin); code != http.StatusOK {
		t.Fatalf("the admin ending the publish: %d %s", code, body)
	}
}

// TestLiveBudgetsPerToken is issue 14 finding 5: one token opened any
// number of control connections and WHEP viewers, and a hand-toggle flood
// wrote a session-log record per toggle (1,000 in 6 s). Now each budget
// refuses with its own code, repeats that change nothing are not logged,
// and the refusals are counted in /metrics.
func TestLiveBudgetsPerToken(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createClass(t, ctx, "Budgets", 1)
	cid := s.Classrooms[0]
	term := s.Tokens.Classrooms[cid].Terminal

	// Control connections per token.
	var conns []*ctl
	for i := range classroom.MaxConnsPerToken {
		c := joined(t, ctx, e, term, fmt.Sprintf("conn %d", i))
		conns = append(conns, c)
	}
	if _, w := dialCtl(t, ctx, e, term); errCode(w) != "too_many_connections" {
		t.Fatalf("connection %d of one token: %v", classroom.MaxConnsPerToken+1, w)
	}

	// Hand toggles from every connection at once: the durable records stay
	// within the token's budget; the class itself still follows them.
	logged := func() float64 {
		_, m := e.Do(t, ctx, "GET", "/metrics", "", "", nil)
		return metricstest.Value(m, `campusedge_learning_records_total{kind="session.log"}`)
	}
	before := logged()
	const toggles = 300
	for i := range toggles {
		// Round robin over the token's connections, each under its own
		// rate limit; every toggle is a real change.
		if r := conns[i%len(conns)].request(t, map[string]any{"type": "hand", "raised": i%2 == 0}); r.str("type") != "ack" {
			t.Fatalf("toggle %d: %v", i, r)
		}
		time.Sleep(8 * time.Millisecond)
	}
	master := joined(t, ctx, e, s.Tokens.Master, "master")
	if r := master.request(t, map[string]any{"type": "mute", "classroom_id": cid, "muted": true}); r.str("type") != "ack" {
		t.Fatalf("mute: %v", r)
	}
	waitFor(t, 10*time.Second, "the master's mute logged", func() bool { return logged() > before })
	hands := logged() - before - 1
	if hands > classroom.MaxRecordsPerTokenMinute*2 { // the window may turn over once during the flood
		t.Fatalf("%v hand records from %d toggles of one token; budget %d a minute", hands, toggles, classroom.MaxRecordsPerTokenMinute)
	}
	t.Logf("%d hand toggles of one token: %v session-log records", toggles, hands)
	// Repeats that change nothing are not logged at all.
	mid := logged()
	for range 10 {
		if r := master.request(t, map[string]any{"type": "mute", "classroom_id": cid, "muted": true}); r.str("type") != "ack" {
			t.Fatalf("repeated mute: %v", r)
		}
	}
	if got := logged(); got != mid {
		t.Fatalf("10 repeated no-op mutes wrote %v records", got-mid)
	}

	// WHEP viewers per token.
	mediatest.Publish(t, ctx, e, s.ID, s.Tokens.Master)
	for range classroom.MaxWHEPPerToken {
		mediatest.Subscribe(t, ctx, e, s.ID, term)
	}
	pc, err := mediatest.LoopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
	}
	resp, body := e.Do(t, ctx, "POST", "/whep/"+s.ID, term, "application/sdp", mediatest.Offer(t, ctx, pc))
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "too_many_subscribers") {
		t.Fatalf("WHEP viewer %d of one token: %d %s", classroom.MaxWHEPPerToken+1, resp.StatusCode, body)
	}
	_, m := e.Do(t, ctx, "GET", "/metrics", "", "", nil)
	for _, l := range []string{"conns_per_token", "whep_per_token", "records_per_token_minute"} {
		if v := metricstest.Value(m, `campusedge_live_limit_refusals_total{limit="`+l+`"}`); v < 1 {
			t.Errorf("refusals of %s in /metrics: %v", l, v)
		}
	}
}
