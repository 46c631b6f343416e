package classroom_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/browsertest"
)

// cutLAN drops every packet to or from the edge's LAN address (control
// connection, pages and media alike) in the test's namespace for d, as a
// pulled cable or a rebooting switch would; the edge keeps running.
func cutLAN(t *testing.T, d time.Duration) {
	t.Helper()
	nft := func(script string) error {
		out, err := exec.Command("nft", script).CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft %s: %v: %s", script, err, out)
		}
		return nil
	}
	a := browsertest.LANAddr
	if err := nft("add table inet blip; add chain inet blip out { type filter hook output priority 0; }; " +
		"add rule inet blip out ip daddr " + a + " drop; add rule inet blip out ip saddr " + a + " drop"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	if err := nft("delete table inet blip"); err != nil {
		t.Fatal(err)
	}
}

// metric reads one counter from the edge's /metrics.
func (e *edge) metric(t *testing.T, ctx context.Context, name string) float64 {
	t.Helper()
	resp, b := e.Do(t, ctx, "GET", "/metrics", e.admin, "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: %d %s", resp.StatusCode, b)
	}
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestICERestartAfterBlipInChromium: the teacher page and a classroom's
// big screen, both at the LAN address over HTTPS, lose the network to the
// edge — a 3 s blip, then one of 10 s, past the edge's and Chromium's ICE
// failure timeouts — while edged goes on and the control connections (TCP)
// ride it out. Each time both pages decode video again on the same
// connections (no rejoin, no new session): a long blip only through ICE
// restarts on the existing peer connections. Attendance shows the room
// joined once, no leave and no reconnect.
func TestICERestartAfterBlipInChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft (Debian nftables) is not installed: it makes the blip")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	e := startLANEdge(t, ctx)
	resp, b := e.Do(t, ctx, "POST", "/api/v1/classrooms", e.admin, "application/json", []byte(`{"name":"初二（3）班","room_code":"B3"}`))
	var room struct{ ID string }
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &room) != nil {
		t.Fatalf("classroom: %d %s", resp.StatusCode, b)
	}
	s := e.createClassIn(t, ctx, "物理：光的折射", []string{room.ID})

	browser := browsertest.Start(ctx, t, browsertest.TrustPin(e.tls.Pin))
	teacher := browser.Context()
	screen := browser.Tab(true)
	pairPage(t, ctx, e, screen, room.ID)
	browserPoll(screen, t, "paired", `window.room.paired === true`)
	navigate(t, teacher, e.url+"/teacher.html#session="+s.ID+"&master="+s.Tokens.Master)
	browsertest.RequireSecureLAN(teacher, t)
	browserPoll(teacher, t, "teacher publishing", `window.teacher.published === true`)

	// frames: the video frames the page's current connection decoded from
	// the other side (0 until the stats arrive; kept on the Conn).
	teacherFrames := `((c) => { c.videoStats().then(f => { c.vf = f; }); return (c.vf && c.vf["classroom:` + room.ID + `"]) || 0; })(window.teacher.conn)`
	screenFrames := `((c) => { if (!c) return 0; c.videoStats().then(f => { c.vf = f; }); return (c.vf && c.vf.master) || 0; })(window.room.conn)`
	framesAbove := func(tab context.Context, what, expr string, above int, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for deadline := start.Add(within); ; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no more than %d frames decoded within %v", what, above, within)
			}
			ectx, ec := context.WithTimeout(tab, 2*time.Second)
			n, err := chromedp.Run(ectx, chromedp.Evaluate[int](expr))
			ec()
			if err == nil && n > above {
				return time.Since(start)
			}
		}
	}
	// freshFrames is expr's value from stats read now (the expressions
	// return what the previous call's stats said).
	freshFrames := func(tab context.Context, expr string) int {
		t.Helper()
		browserEval[int](tab, t, expr)
		time.Sleep(300 * time.Millisecond)
		return browserEval[int](tab, t, expr)
	}
	framesAbove(teacher, "the teacher decoding the room", teacherFrames, 10, 20*time.Second)
	framesAbove(screen, "the big screen decoding the lesson", screenFrames, 10, 20*time.Second)
	joins := browserEval[int](screen, t, `window.room.joins`)

	for _, blip := range []time.Duration{3 * time.Second, 10 * time.Second} {
		cutLAN(t, blip)
		// The frames decoded when the link came back; video is back when
		// they grow by a second's worth (15 fps from the fake camera).
		tf, sf := freshFrames(teacher, teacherFrames), freshFrames(screen, screenFrames)
		tb := framesAbove(teacher, fmt.Sprintf("after a %v blip: the teacher decoding the room", blip), teacherFrames, tf+15, 30*time.Second)
		sb := framesAbove(screen, fmt.Sprintf("after a %v blip: the big screen decoding the lesson", blip), screenFrames, sf+15, 30*time.Second)
		restarts := browserEval[int](teacher, t, `window.teacher.conn.iceRestarts || 0`)
		t.Logf("%v blip: video again on the teacher page %v and the big screen %v after the link came back; teacher's ICE restarts so far %d",
			blip, tb.Round(time.Millisecond), sb.Round(time.Millisecond), restarts)
		if got := browserEval[int](screen, t, `window.room.joins`); got != joins {
			t.Errorf("after a %v blip the big screen joined again (%d joins, was %d): want the same connection", blip, got, joins)
		}
		if got := browserEval[int](teacher, t, `window.teacher.reconnects || 0`); got != 0 {
			t.Errorf("after a %v blip the teacher page reconnected %d times: want the same connection", blip, got)
		}
	}
	// The 10 s blip outlasts ICE's failure timeouts on both sides: only a
	// restart brings the media back on the same connections.
	if n := browserEval[int](teacher, t, `window.teacher.conn.iceRestarts || 0`); n < 1 {
		t.Errorf("the teacher page restarted ICE %d times, want ≥ 1", n)
	}
	if n := e.metric(t, ctx, "campusedge_live_ice_restarts_total"); n < 1 {
		t.Errorf("the edge offered %v ICE restarts, want ≥ 1", n)
	}
	if n := e.metric(t, ctx, "campusedge_live_ice_recovered_total"); n < 2 {
		t.Errorf("%v media connections recovered at the edge, want ≥ 2 (the teacher's and the room's)", n)
	}
	var att struct {
		Classrooms map[string]struct {
			Joins, Leaves, Reconnects int
			Present                   bool
		} `json:"classrooms"`
	}
	resp, b = e.Do(t, ctx, "GET", "/api/v1/sessions/"+s.ID+"/attendance", e.admin, "", nil)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &att) != nil {
		t.Fatalf("attendance: %d %s", resp.StatusCode, b)
	}
	if ca := att.Classrooms[room.ID]; ca.Joins != 1 || ca.Leaves != 0 || ca.Reconnects != 0 || !ca.Present {
		t.Errorf("attendance after two blips: %+v, want 1 join, 0 leaves, 0 reconnects, present", ca)
	}
}
