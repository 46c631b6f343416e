//go:build linux

package classroom_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/netnstest"
)

// TestMasterToldOfWeakLink: the weak-link mark without a browser. The real
// edged runs on host A of a LAN of network namespaces; the master teacher
// (pion peers on host B) publishes the lesson by WHIP as three simulcast
// layers and is on the control channel, subscribed; one classroom terminal
// (pion peers on host C, control channel) watches through a link that tbf
// holds at 300 kbit/s, which carries only the lowest layer. The master
// receives a `links` message marking that room weak, below the top layer,
// with its budget; once the link widens the room climbs back to the top
// layer and the mark clears, told by another `links` message.
func TestMasterToldOfWeakLink(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edged")
	}
	netnstest.RequireRoot(t)
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	hosts := netnstest.NewLAN(t, netip.MustParsePrefix("10.77.42.0/24"), 3)
	a, b, c := hosts[0], hosts[1], hosts[2]
	if err := c.Shape("300kbit"); err != nil {
		t.Fatalf("shape the classroom's link: %v", err)
	}

	bin := buildEdged(t, ctx, t.TempDir())
	data := filepath.Join(t.TempDir(), "data")
	listen := a.Addr.String() + ":8080"
	p := a.Start(t, nil, bin, "-data", data, "-listen", listen, "-mdns=false", "-simulcast-layers")
	if err := p.WaitOutput(ctx, `msg="listening https"`); err != nil {
		t.Fatal(err)
	}
	// Credentials go over HTTPS at a LAN address (the edge refuses them
	// over plain HTTP there), trusting the edge's key.
	m := regexp.MustCompile(`msg="listening https" addr=(\S+) .*spki_pin="?([^" ]+)`).FindStringSubmatch(p.Output())
	if m == nil {
		t.Fatalf("no HTTPS address and key pin in the log:\n%s", p.Output())
	}
	httpsAddr, pin := m[1], m[2]
	tok, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	from := func(h *netnstest.Netns) *edge {
		return &edge{url: "https://" + httpsAddr, admin: strings.TrimSpace(string(tok)), dial: h.DialContext,
			client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: h.DialContext, TLSClientConfig: certs.PinnedTLS(pin)}}}
	}
	apiIn := func(h *netnstest.Netns) *webrtc.API {
		n, err := mediatest.NetIn(h)
		if err != nil {
			t.Fatal(err)
		}
		api, err := sfu.NewAPINet([]net.IP{net.IP(h.Addr.AsSlice())}, n, nil)
		if err != nil {
			t.Fatal(err)
		}
		return api
	}
	atB, atC := from(b), from(c)
	s := atB.createClass(t, ctx, "语文 · 薄弱链路", 1)
	room := s.Classrooms[0]

	// The master's camera, three layers by WHIP from host B.
	pc, err := apiIn(b).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	pub := mediatest.SimulcastTracks(t, pc, []mediatest.Layer{{RID: "l", Bitrate: 150_000}, {RID: "m", Bitrate: 500_000}, {RID: "h", Bitrate: 1_200_000}})
	resp, body := atB.Do(t, ctx, "POST", "/whip/"+s.ID, s.Tokens.Master, "application/sdp", mediatest.Offer(t, ctx, pc))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHIP: %d %s", resp.StatusCode, body)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	go pub.Run(ctx)

	master := joinAs(t, ctx, atB, s.Tokens.Master, 'M')
	master.api = apiIn(b)
	master.subscribe(ctx)
	classroom := joinAs(t, ctx, atC, s.Tokens.Classrooms[room].Terminal, 'A')
	classroom.api = apiIn(c)
	classroom.subscribe(ctx)

	// roomIn finds the room in a links message.
	roomIn := func(m msg) msg {
		rooms, _ := m["classrooms"].([]any)
		for _, r := range rooms {
			if rm, ok := r.(map[string]any); ok && msg(rm).str("classroom_id") == room {
				return rm
			}
		}
		return nil
	}
	var seen []string
	// awaitLinks waits (up to within) for a links message whose entry for
	// the room satisfies pred, noting each one seen.
	next := 0
	awaitLinks := func(what string, within time.Duration, pred func(r msg) bool) msg {
		t.Helper()
		for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			master.c.mu.Lock()
			got := master.c.got[next:]
			master.c.mu.Unlock()
			for _, m := range got {
				next++
				if m.str("type") != "links" {
					continue
				}
				r := roomIn(m)
				if r == nil {
					continue
				}
				seen = append(seen, fmt.Sprintf("layer %v/%v budget %v loss %.3v weak %v paused %v", r["layer"], r["layers"], r["budget_bps"], r["loss"], r["weak"], r["video_paused"]))
				if pred(r) {
					return r
				}
			}
		}
		t.Fatalf("no links message with the room %s within %v; the master was told: %q", what, within, seen)
		return nil
	}
	num := func(r msg, k string) float64 { f, _ := r[k].(float64); return f }

	start := time.Now()
	weak := awaitLinks("marked weak, below the top layer", 40*time.Second, func(r msg) bool {
		return r["weak"] == true && num(r, "layers") == 3 && num(r, "layer") < 2
	})
	t.Logf("marked weak %.1f s after joining: %v", time.Since(start).Seconds(), weak)

	// The link widens: the room climbs to the top layer and the mark goes.
	if err := c.Shape("50mbit"); err != nil {
		t.Fatal(err)
	}
	widened := time.Now()
	clear := awaitLinks("back on the top layer, the mark cleared", 40*time.Second, func(r msg) bool {
		return r["weak"] == false && num(r, "layer") == 2 && r["video_paused"] == false
	})
	t.Logf("mark cleared %.1f s after the link widened: %v; the master was told %q", time.Since(widened).Seconds(), clear, seen)
	if num(clear, "budget_bps") < 500_000 {
		t.Errorf("the room is back on the top layer with a budget of %v bit/s, below the middle layer's 500 kbit/s", clear["budget_bps"])
	}
	// The simulcast publisher's payloads are not the control tests' tagged
	// ones, so the classroom's peer files them under bad: counted together,
	// they are the lesson's video packets it received.
	if n := classroom.count("master/video") + classroom.bad.Load(); n < 100 {
		t.Errorf("the classroom received %d video packets of the lesson", n)
	}
}
