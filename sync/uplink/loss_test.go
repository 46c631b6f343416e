package uplink_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/netnstest"
	"github.com/campusedge/campusedge/edge/token"
	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/uplink"
)

// TestLossyWANLosesAndDuplicatesNothing: a backlog crosses an emulated WAN
// that drops 3 % of packets each way (TCP retransmits under the uplink's
// window of many small batches, each body written only after the one
// before it), while the edge keeps appending. Every record the edge wrote
// reaches the hub exactly once under its own seq and id, the outbox is
// empty, and the hub's acknowledgement is the last seq.
func TestLossyWANLosesAndDuplicatesNothing(t *testing.T) {
	t.Parallel()
	w := netnstest.NewWAN(t, netnstest.WANConfig{Rate: 20_000_000, Delay: 10 * time.Millisecond, Loss: 0.03})
	ln, err := w.B.Listen("tcp", netip.AddrPortFrom(w.B.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	st := openBoltHub(t, t.TempDir())
	srv := &http.Server{Handler: hub.NewServer(hub.Config{Store: st, Logger: quiet()}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	url := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := w.A.DialContext(ctx, network, addr)
			if err == nil {
				err = uplink.SetHubConnOptions(c)
			}
			return c, err
		},
	}}
	e := newEdge(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const first, later = 2000, 400
	fillBacklog(t, e, first)
	if _, err := uplink.Enrol(ctx, e.DB, client, url, enrolTok(t, st, "s1"), e.Key, nil); err != nil {
		t.Fatalf("enrol over the lossy WAN: %v", err)
	}
	u := uplink.New(uplink.Config{Hub: url, DB: e.DB, Outbox: e.Ob, Identity: e.Key, Client: client, Logger: quiet(),
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, MaxRecords: 100})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go u.Run(runCtx)
	want := map[uint64]string{}
	recs, err := e.Ob.Pending(0, first, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		want[r.Seq] = r.ID
	}
	for i := range later { // appends while the window is busy
		r, err := e.Ob.Append(ctx, "quiz.answer", fmt.Appendf(nil, `{"student":"s%04d","answer":"B","late":%d}`, i%1100, i))
		if err != nil {
			t.Fatal(err)
		}
		want[r.Seq] = r.ID
	}
	waitDrained(t, e, first+later, 45*time.Second)
	stop()
	got := hubRecords(t, st, "s1")
	if len(got) != len(want) {
		t.Fatalf("hub holds %d records, the edge wrote %d", len(got), len(want))
	}
	for _, r := range got {
		if want[r.Seq] != r.ID {
			t.Fatalf("hub holds seq %d as id %s, the edge wrote %q", r.Seq, r.ID, want[r.Seq])
		}
	}
	if a, b := w.Stats(0), w.Stats(1); a.Lost == 0 || b.Lost == 0 {
		t.Fatalf("the link lost nothing (A→B %+v, B→A %+v): the test did not test loss", a, b)
	} else {
		t.Logf("%d records through 3 %% loss each way: edge→hub %d packets lost of %d, hub→edge %d of %d", len(got), a.Lost, a.Carried+a.Lost, b.Lost, b.Carried+b.Lost)
	}
}

// enrolTok makes the school (if needed) and a one-time enrolment token.
func enrolTok(t *testing.T, st hub.Store, school string) string {
	t.Helper()
	ctx := context.Background()
	if err := st.CreateSchool(ctx, hub.School{Code: school, Name: "School " + school, Created: time.Now()}); err != nil && !errors.Is(err, hub.ErrExists) {
		t.Fatal(err)
	}
	tok := token.New()
	if err := st.CreateEnrolToken(ctx, school, token.Digest(tok), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	return tok
}
