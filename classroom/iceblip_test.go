package classroom_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
)

// blipConn is a UDP socket whose traffic the test can cut both ways for a
// while: a pulled cable that is put back, not a peer that vanished.
type blipConn struct {
	net.PacketConn
	down atomic.Bool
}

func (b *blipConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, a, err := b.PacketConn.ReadFrom(p)
		if err != nil || !b.down.Load() {
			return n, a, err
		}
	}
}

func (b *blipConn) WriteTo(p []byte, a net.Addr) (int, error) {
	if b.down.Load() {
		return len(p), nil // lost on the wire
	}
	return b.PacketConn.WriteTo(p, a)
}

// TestICERestartOnControlChannel: a classroom terminal (pion) publishes
// and watches through the control channel; its media socket goes dead for
// 9 s — longer than the edge's ICE failure timeout — while its control
// WebSocket stays up. The terminal restarts ICE on its publish connection
// (OfferOptions{ICERestart: true}, sent as publish on the same peer), the
// edge restarts ICE on the connection it sends to the terminal; both
// directions carry media again on the same peer connections, the class
// state shows the room publishing again, and the room never left.
func TestICERestartOnControlChannel(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createClass(t, ctx, "Chemistry 9", 1)
	cid := s.Classrooms[0]
	master := joinAs(t, ctx, e, s.Tokens.Master, 'M')
	master.publish(ctx)
	master.subscribe(ctx)

	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	link := &blipConn{PacketConn: udp}
	api := mediatest.VanishingAPI(t, link) // both connections on the one socket
	room := joinAs(t, ctx, e, s.Tokens.Classrooms[cid].Terminal, 'R')
	room.api = api
	pub, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	room.pub = pub
	sendCtx, stop := context.WithCancel(ctx)
	defer stop()
	room.addTrack(sendCtx, "camera")
	room.negotiatePublish(ctx)
	room.subscribe(ctx)
	waitFor(t, 10*time.Second, "the master receiving the room", func() bool { return master.count("classroom:"+cid+"/video") > 50 })
	waitFor(t, 10*time.Second, "the room receiving the lesson", func() bool { return room.count("master/video") > 50 })
	subPC := room.sub

	// The terminal's side of an ICE restart, as class.js does it: while
	// its publish connection is not connected (1.5 s after it went
	// disconnected, then every 4 s), offer again with new ICE credentials.
	var restarts atomic.Int32
	rctx, stopRestarts := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	stopped := false
	defer func() { // it uses t: it must end before the test does
		if !stopped {
			stopRestarts()
			<-loopDone
		}
	}()
	go func() {
		defer close(loopDone)
		var since time.Time
		next := time.Time{}
		for rctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
			if pub.ConnectionState() == webrtc.PeerConnectionStateConnected {
				since = time.Time{}
				continue
			}
			if since.IsZero() {
				since, next = time.Now(), time.Now().Add(1500*time.Millisecond)
			}
			if time.Now().Before(next) || pub.SignalingState() != webrtc.SignalingStateStable {
				continue
			}
			next = time.Now().Add(4 * time.Second)
			offer, err := pub.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
			if err != nil {
				continue
			}
			done := webrtc.GatheringCompletePromise(pub)
			if pub.SetLocalDescription(offer) != nil {
				continue
			}
			<-done
			r := room.c.request(t, map[string]any{"type": "publish", "sdp": pub.LocalDescription().SDP})
			if r.str("type") == "answer" && pub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: r.str("sdp")}) == nil {
				restarts.Add(1)
			}
		}
	}()

	link.down.Store(true)
	time.Sleep(9 * time.Second)
	link.down.Store(false)
	back := time.Now()
	mr, rr := master.count("classroom:"+cid+"/video"), room.count("master/video")
	waitFor(t, 15*time.Second, "the master receiving the room again", func() bool { return master.count("classroom:"+cid+"/video") > mr+50 })
	waitFor(t, 15*time.Second, "the room receiving the lesson again", func() bool { return room.count("master/video") > rr+50 })
	stopRestarts()
	<-loopDone
	stopped = true
	t.Logf("media both ways again %v after the link came back (terminal's ICE restarts: %d)", time.Since(back).Round(10*time.Millisecond), restarts.Load())
	waitFor(t, 5*time.Second, "the state to show the room publishing again", func() bool { return publishing(master.c.lastState(), cid) })
	if room.sub != subPC {
		t.Error("the room subscribed again: want the same connection")
	}
	if restarts.Load() < 1 {
		t.Error("the terminal never restarted ICE on its publish connection")
	}
	if n := e.metric(t, ctx, "campusedge_live_ice_restarts_total"); n < 1 {
		t.Errorf("the edge offered %v ICE restarts, want ≥ 1", n)
	}
	// The edge's connection to the room recovered; its publisher did not
	// wait as failed when the terminal's restart came before the failure.
	if n := e.metric(t, ctx, "campusedge_live_ice_recovered_total"); n < 1 {
		t.Errorf("%v media connections recovered at the edge, want ≥ 1", n)
	}
	att := e.attendanceOf(t, ctx, s.ID, cid)
	if att.Joins != 1 || att.Leaves != 0 || att.Reconnects != 0 || !att.Present {
		t.Errorf("attendance of the room after the blip: %+v, want 1 join, 0 leaves, 0 reconnects", att)
	}
}

// roomAttendance is one classroom's line of GET …/attendance.
type roomAttendance struct {
	Joins, Leaves, Reconnects int
	Present                   bool
}

func (e *edge) attendanceOf(t *testing.T, ctx context.Context, sessionID, cid string) roomAttendance {
	t.Helper()
	var att struct {
		Classrooms map[string]roomAttendance `json:"classrooms"`
	}
	resp, b := e.Do(t, ctx, "GET", "/api/v1/sessions/"+sessionID+"/attendance", e.admin, "", nil)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &att) != nil {
		t.Fatalf("attendance: %d %s", resp.StatusCode, b)
	}
	return att.Classrooms[cid]
}
