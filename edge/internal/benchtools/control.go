package benchtools

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/campusedge/campusedge/edge/ctlwire"
)

// Conn is one terminal's control connection, held open by a reader
// goroutine that answers the edge's pings (as termagent does) and counts
// them.
type Conn struct {
	Welcome ctlwire.Welcome

	ws    *websocket.Conn
	pings atomic.Int64
	other atomic.Int64 // data messages after the welcome
	done  chan struct{}
	err   error // why the reader stopped; valid after done
	once  sync.Once
	stop  atomic.Bool // Close was called: the end is expected
}

// WSURL turns http://host:port into the control channel URL (ws://), and
// https://host:port into its TLS one (wss://).
func WSURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("base URL %q must be http or https", base)
	}
	u.Path = "/api/v1/ws"
	return u.String(), nil
}

// Dial opens a control connection, sends the hello with token, and waits for
// the welcome (all within ctx). tlsConf is the client TLS configuration for a
// wss:// URL (nil for ws://).
func Dial(ctx context.Context, wsURL string, tlsConf *tls.Config, token, version string) (*Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024, TLSClientConfig: tlsConf}
	ws, _, err := d.DialContext(ctx, wsURL, nil)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	ws.SetReadLimit(ctlwire.MaxMessageBytes)
	deadline := time.Now().Add(10 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = ws.SetWriteDeadline(deadline)
	if err := ws.WriteJSON(ctlwire.Hello{Header: ctlwire.New(ctlwire.TypeHello), Token: token, Version: version}); err != nil {
		ws.Close()
		return nil, fmt.Errorf("send hello: %w", err)
	}
	_ = ws.SetReadDeadline(deadline)
	_, data, err := ws.ReadMessage()
	if err != nil {
		ws.Close()
		return nil, fmt.Errorf("await welcome: %w", err)
	}
	c := &Conn{ws: ws, done: make(chan struct{})}
	hdr, err := ctlwire.Decode(data)
	if err == nil && hdr.Type != ctlwire.TypeWelcome {
		err = fmt.Errorf("expected welcome, got %s", data)
	}
	if err == nil {
		err = json.Unmarshal(data, &c.Welcome)
	}
	if err != nil {
		ws.Close()
		return nil, err
	}
	hb := time.Duration(max(c.Welcome.HeartbeatSeconds, 1)) * time.Second
	readFor := 3*hb + 5*time.Second
	_ = ws.SetReadDeadline(time.Now().Add(readFor))
	ws.SetPingHandler(func(p string) error {
		c.pings.Add(1)
		_ = ws.SetReadDeadline(time.Now().Add(readFor))
		err := ws.WriteControl(websocket.PongMessage, []byte(p), time.Now().Add(5*time.Second))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil // as gorilla's default handler
		}
		return err
	})
	go c.read()
	return c, nil
}

func (c *Conn) read() {
	defer close(c.done)
	for {
		_, _, err := c.ws.ReadMessage()
		if err != nil {
			c.err = err
			return
		}
		c.other.Add(1)
	}
}

// Pings is the number of pings answered so far.
func (c *Conn) Pings() int64 { return c.pings.Load() }

// Messages is the number of data messages received after the welcome.
func (c *Conn) Messages() int64 { return c.other.Load() }

// Dropped reports whether the connection ended without Close being called,
// and why.
func (c *Conn) Dropped() (bool, error) {
	select {
	case <-c.done:
		return !c.stop.Load(), c.err
	default:
		return false, nil
	}
}

// Close ends the connection (a TCP close, as a terminal losing power or
// being unplugged looks to the edge) and waits for the reader.
func (c *Conn) Close() {
	c.once.Do(func() {
		c.stop.Store(true)
		_ = c.ws.Close()
	})
	<-c.done
}

// ConnectResult is the outcome of ConnectAll.
type ConnectResult struct {
	Conns []*Conn // nil where a connection failed
	// PerConn is each successful connection's dial → welcome time.
	PerConn []time.Duration
	Elapsed time.Duration // first dial → last welcome
	// Welcomed is, per token, when its welcome arrived, counted from the
	// start (0 where the connection failed). Passed as another run's
	// schedule it opens connections at the same moments, so that both
	// servers see their heartbeats spread the same way over the ping period.
	Welcomed []time.Duration
	Failed   int
	Errors   []error // the first few failures
}

// ConnectAll opens one control connection per token, workers at a time
// (over TLS with tlsConf when wsURL is wss://).
// Each connection gets up to perConn; a failure is counted, not retried.
// With a schedule (ascending offsets from the start, one per token), dial i
// waits until its offset; without one, connections open as fast as workers
// allow.
func ConnectAll(ctx context.Context, wsURL string, tlsConf *tls.Config, tokens []string, workers int, perConn time.Duration, schedule []time.Duration) ConnectResult {
	res := ConnectResult{Conns: make([]*Conn, len(tokens)), Welcomed: make([]time.Duration, len(tokens))}
	if schedule != nil && len(schedule) != len(tokens) {
		res.Failed = len(tokens)
		res.Errors = []error{fmt.Errorf("schedule has %d offsets for %d tokens", len(schedule), len(tokens))}
		return res
	}
	per := make([]time.Duration, len(tokens))
	var (
		next atomic.Int64
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range max(1, min(workers, len(tokens))) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(tokens) {
					return
				}
				if schedule != nil {
					if d := time.Until(start.Add(schedule[i])); d > 0 {
						select {
						case <-time.After(d):
						case <-ctx.Done():
						}
					}
				}
				dctx, cancel := context.WithTimeout(ctx, perConn)
				t0 := time.Now()
				c, err := Dial(dctx, wsURL, tlsConf, tokens[i], "edgebench")
				cancel()
				if err != nil {
					mu.Lock()
					res.Failed++
					if len(res.Errors) < 5 {
						res.Errors = append(res.Errors, fmt.Errorf("connection %d: %w", i, err))
					}
					mu.Unlock()
					continue
				}
				per[i] = time.Since(t0)
				res.Welcomed[i] = time.Since(start)
				res.Conns[i] = c
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	for i, c := range res.Conns {
		if c != nil {
			res.PerConn = append(res.PerConn, per[i])
		}
	}
	return res
}

// CloseAll closes every open connection in cs, workers at a time.
func CloseAll(cs []*Conn, workers int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(1, workers) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(cs) {
					return
				}
				if cs[i] != nil {
					cs[i].Close()
				}
			}
		})
	}
	wg.Wait()
}
