package uplink_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/netnstest"
	"github.com/campusedge/campusedge/edge/token"
	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/hubtls"
	"github.com/campusedge/campusedge/sync/uplink"
)

// The WAN sync benchmark is opt-in (root; about a minute per run):
//
//	go test ./sync/uplink -run TestSyncWANBench -v -args -sync-wan-bench [-sync-wan-loss 0.01] [-sync-wan-inflight 0]
//
// A school day's backlog (fillBacklog) drained by the production uplink
// through an emulated WAN (netnstest.NewWAN: packets through this process,
// so TCP itself meets the delay and the random loss) of -sync-bench-rate
// bits/s and -sync-bench-rtt, to a hub in the other namespace. The floor,
// measured in the same run: the bytes the edge wrote into its TCP
// connections (HTTP requests with their gzip batches) at the link's rate.
var (
	wanBenchOn  = flag.Bool("sync-wan-bench", false, "run TestSyncWANBench (backlog drain through an emulated lossy WAN)")
	wanLoss     = flag.Float64("sync-wan-loss", 0.01, "TestSyncWANBench: random loss in each direction")
	wanInFlight = flag.Int("sync-wan-inflight", 0, "TestSyncWANBench: uplink.Config.InFlight (0: the default)")
	wanTLS      = flag.Bool("sync-wan-tls", true, "TestSyncWANBench: send over HTTPS (HTTP/2, as production's hub client does); false: plain HTTP/1.1")
	wanCC       = flag.String("sync-wan-cc", "", "TestSyncWANBench: congestion control forced on the edge's connections after the uplink's own options (e.g. cubic, to compare; empty: the uplink's choice)")
	wanTimeline = flag.Duration("sync-wan-timeline", 0, "TestSyncWANBench: log a timeline in steps of this length (bytes into TCP, link idle, the edge's sockets from ss -tin)")
)

// countingConn counts the bytes the edge writes into a connection.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

// SyscallConn reaches the socket, as the uplink does on its own
// connections (see uplink's socketCC).
func (c countingConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

func (c countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func TestSyncWANBench(t *testing.T) {
	if !*wanBenchOn {
		t.Skip("opt-in: -sync-wan-bench")
	}
	w := netnstest.NewWAN(t, netnstest.WANConfig{Rate: *benchRate, Delay: *benchRTT / 2, Loss: *wanLoss})
	ln, err := w.B.Listen("tcp", netip.AddrPortFrom(w.B.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	st := openBoltHub(t, t.TempDir())
	var hubHandler http.Handler = hub.NewServer(hub.Config{Store: st, Logger: quiet()})
	var hubEvents bytes.Buffer
	hubLog := &lockedWriter{w: &hubEvents}
	hubStart := time.Now()
	if *wanTimeline > 0 {
		// When each batch's body was all read and when it was answered.
		inner := hubHandler
		hubHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/v1/sync/batch" {
				inner.ServeHTTP(w, r)
				return
			}
			eb := &eofBody{ReadCloser: r.Body}
			r.Body = eb
			inner.ServeHTTP(w, r)
			fmt.Fprintf(hubLog, "hub: body read t=%.3f answered t=%.3f (%d bytes)\n", eb.at.Sub(hubStart).Seconds(), time.Since(hubStart).Seconds(), eb.n)
		})
	}
	srv := &http.Server{Handler: hubHandler, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	url := "http://" + ln.Addr().String()
	// The same hub over HTTPS (its own certificate, as cityhub makes one),
	// offering HTTP/2 as cityhub does.
	self, err := hubtls.NewSelf(t.TempDir(), []string{w.B.Addr.String()}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	tln, err := w.B.Listen("tcp", netip.AddrPortFrom(w.B.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	tsrv := &http.Server{Handler: srv.Handler, TLSConfig: hubtls.ServerConfig(self.GetCertificate), ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(quiet().Handler(), slog.LevelDebug)}
	go func() { _ = tsrv.ServeTLS(tln, "", "") }()
	defer tsrv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(self.Current().Leaf)

	e := newEdge(t, nil)
	var wrote, conns atomic.Int64
	// Production's hub transport (uplink's hubTransport: HTTP/2 when the
	// hub offers it over TLS) dialling from the edge's namespace.
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := w.A.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if err := uplink.SetHubConnOptions(c); err != nil {
				t.Error(err)
			}
			if *wanCC != "" {
				if err := setCongestion(c, *wanCC); err != nil {
					t.Error(err)
				}
			}
			conns.Add(1)
			return countingConn{c, &wrote}, nil
		},
		MaxIdleConnsPerHost: 8,
		ForceAttemptHTTP2:   true,
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// Enrol over the same WAN, as an edge would.
	_ = st.CreateSchool(ctx, hub.School{Code: "s1", Name: "School s1", Created: time.Now()})
	tok := token.New()
	if err := st.CreateEnrolToken(ctx, "s1", token.Digest(tok), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	total := 10_000 + *benchQuiz
	fillBacklog(t, e, total)
	if _, err := uplink.Enrol(ctx, e.DB, client, url, tok, e.Key, nil); err != nil {
		t.Fatalf("enrol over the WAN: %v", err)
	}
	wrote.Store(0)
	conns.Store(0)
	a0, b0 := w.Stats(0), w.Stats(1)
	proto := "HTTP/1.1"
	if *wanTLS {
		url, proto = "https://"+tln.Addr().String(), "HTTPS"
	}

	logger := quiet()
	var events bytes.Buffer
	start := time.Now()
	if *wanTimeline > 0 {
		// The uplink's debug log (batches launched and answered), stamped
		// with the time since the drain began.
		logger = slog.New(slog.NewTextHandler(&lockedWriter{w: &events}, &slog.HandlerOptions{Level: slog.LevelDebug,
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.String("t", fmt.Sprintf("%.3f", time.Since(start).Seconds()))
				}
				return a
			}}))
	}
	u := uplink.New(uplink.Config{Hub: url, DB: e.DB, Outbox: e.Ob, Identity: e.Key, Logger: logger, Client: client, InFlight: *wanInFlight})
	start = time.Now()
	hubStart = start
	runCtx, stop := context.WithCancel(ctx)
	var tl *timeline
	if *wanTimeline > 0 {
		tl = startTimeline(runCtx, w, &wrote, *wanTimeline)
	}
	go u.Run(runCtx)
	waitDrained(t, e, uint64(total), 10*time.Minute)
	wall := time.Since(start)
	stop()
	if tl != nil {
		tl.log(t, start, *benchRate)
		t.Logf("uplink events:\n%s", events.String())
		hubLog.mu.Lock()
		t.Logf("hub events:\n%s", hubEvents.String())
		hubLog.mu.Unlock()
	}
	a1, b1 := w.Stats(0), w.Stats(1)
	app := wrote.Load()
	floor := time.Duration(float64(app*8) / float64(*benchRate) * float64(time.Second))
	t.Logf("drain through %d bit/s, %v RTT, %.1f %% loss each way, %s, InFlight %d: %d records in %v, %d TCP connection(s)",
		*benchRate, *benchRTT, 100**wanLoss, proto, *wanInFlight, total, wall.Round(time.Millisecond), conns.Load())
	t.Logf("  edge wrote %d bytes into TCP (floor at the link rate %v); wall ÷ floor = %.2f", app, floor.Round(time.Millisecond), wall.Seconds()/floor.Seconds())
	t.Logf("  link A→B: %d packets carried (%d bytes incl. headers and retransmissions; TCP payload %d), %d lost at random, %d dropped by the queue; B→A: %d carried, %d lost",
		a1.Carried-a0.Carried, a1.CarriedBytes-a0.CarriedBytes, a1.PayloadBytes-a0.PayloadBytes, a1.Lost-a0.Lost, a1.QueueDrops-a0.QueueDrops, b1.Carried-b0.Carried, b1.Lost-b0.Lost)
	ust, _ := u.Status()
	bodies := time.Duration(float64(ust.SentBytes*8) / float64(*benchRate) * float64(time.Second))
	t.Logf("  of which batch bodies (gzip JSON) %d bytes (%v at the link rate; wall ÷ that = %.2f), the rest HTTP%s framing and headers",
		ust.SentBytes, bodies.Round(time.Millisecond), wall.Seconds()/bodies.Seconds(), map[bool]string{true: "/2, TLS", false: "/1.1"}[*wanTLS])
	busy := time.Duration(float64((a1.CarriedBytes-a0.CarriedBytes)*8) / float64(*benchRate) * float64(time.Second))
	t.Logf("  the link was busy %v (IP packets at the rate: the floor + %.1f %% of headers and retransmissions) and idle %v",
		busy.Round(time.Millisecond), 100*(busy.Seconds()/floor.Seconds()-1), (wall - busy).Round(time.Millisecond))
	if n := len(hubRecords(t, st, "s1")); n != total {
		t.Fatalf("hub holds %d of %d", n, total)
	}
}

// timeline samples, while a drain runs, the bytes the edge has written
// into TCP and the bytes the link has taken (A→B), so the log shows where
// the wall time above the floor goes: the link idle at the start (cold
// start), between batches, or at the end (the last answer); with ss -tin
// of the edge's namespace now and then (cwnd, rto, retransmissions).
type timeline struct {
	mu      sync.Mutex
	samples []tlSample
	ss      []tlSS
	done    chan struct{}
}

type tlSample struct {
	at          time.Time
	wrote, link int64
}

type tlSS struct {
	at  time.Time
	out string
}

func startTimeline(ctx context.Context, w *netnstest.WAN, wrote *atomic.Int64, step time.Duration) *timeline {
	tl := &timeline{done: make(chan struct{})}
	go func() {
		defer close(tl.done)
		tk := time.NewTicker(2 * time.Millisecond)
		defer tk.Stop()
		var lastSS time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tk.C:
				tl.mu.Lock()
				tl.samples = append(tl.samples, tlSample{now, wrote.Load(), w.Stats(0).CarriedBytes})
				tl.mu.Unlock()
				if now.Sub(lastSS) >= step {
					lastSS = now
					out, _ := w.A.Command(ctx, "ss", "-tinH", "state", "established").Output()
					tl.mu.Lock()
					tl.ss = append(tl.ss, tlSS{now, string(out)})
					tl.mu.Unlock()
				}
			}
		}
	}()
	return tl
}

// ssField picks "name:value" fields out of ss -ti's info line.
var ssField = regexp.MustCompile(`\b(cwnd|rto|retrans|unacked|lost|notsent|rtt):(\S+)|\b(pacing_rate|delivery_rate) \S+|\bbbr:\(\S+\)|\b(busy|rwnd_limited|sndbuf_limited):\S+|\b(app_limited|cubic|reno)\b`)

func (tl *timeline) log(t *testing.T, start time.Time, rate int) {
	<-tl.done
	tl.mu.Lock()
	defer tl.mu.Unlock()
	// The link is idle when its queue (bytes taken minus bytes sent at
	// the rate) is empty.
	bps := float64(rate) / 8
	var q float64
	var idle, idleAll time.Duration
	var wroteAt, linkAt int64
	prev := start
	var lastLink int64
	step := *wanTimeline
	next := start.Add(step)
	si := 0
	if len(tl.samples) > 0 {
		lastLink = tl.samples[0].link
		wroteAt, linkAt = tl.samples[0].wrote, tl.samples[0].link
	}
	for _, s := range tl.samples {
		dt := s.at.Sub(prev).Seconds()
		q += float64(s.link - lastLink)
		lastLink = s.link
		q -= bps * dt
		if q < 0 {
			gap := time.Duration(-q / bps * float64(time.Second))
			idle += gap
			idleAll += gap
			q = 0
		}
		prev = s.at
		if !s.at.Before(next) {
			line := fmt.Sprintf("t=%6.2fs wrote %7d B link %7d B idle %4d ms",
				s.at.Sub(start).Seconds(), s.wrote-wroteAt, s.link-linkAt, idle.Milliseconds())
			for ; si < len(tl.ss) && tl.ss[si].at.Before(s.at); si++ {
				for _, l := range strings.Split(tl.ss[si].out, "\n") {
					if m := ssField.FindAllString(l, -1); len(m) > 0 {
						line += " | " + strings.Join(m, " ")
					}
				}
			}
			t.Log(line)
			wroteAt, linkAt, idle = s.wrote, s.link, 0
			next = next.Add(step)
		}
	}
	t.Logf("timeline: link idle %v in all (from 2 ms samples)", idleAll.Round(time.Millisecond))
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// eofBody notes when a request body was read to its end.
type eofBody struct {
	io.ReadCloser
	n  int
	at time.Time
}

func (b *eofBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += n
	if err == io.EOF && b.at.IsZero() {
		b.at = time.Now()
	}
	return n, err
}
