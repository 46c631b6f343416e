// Command floorserver is the bench's reference point for edged: the least a
// Go HTTP server can do on the same endpoints. It answers GET /healthz with
// 200, and holds WebSocket connections at /api/v1/ws the way edged's control
// channel does at its core (a hello within 5 s, a welcome, a ping every 10 s,
// a read deadline refreshed by pongs) with nothing behind them: no store, no
// authentication, no metrics, no per-message rate limit.
//
// Its start-up time is a floor for starting any Go server binary on this
// machine, and its CPU and memory while holding N connections are a floor
// for holding N gorilla/websocket connections with 10 s heartbeats.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

const (
	pingEvery    = 10 * time.Second
	readDeadline = 3*pingEvery + 5*time.Second
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "HTTP listen `addr`")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("listen", "err", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok","checks":{}}` + "\n"))
	})
	up := &websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096}
	mux.HandleFunc("GET /api/v1/ws", func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		serveWS(ws)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	log.Info("listening", "addr", ln.Addr().String())
	if err := hs.Serve(ln); err != http.ErrServerClosed {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}

func serveWS(ws *websocket.Conn) {
	defer ws.Close()
	ws.SetReadLimit(64 << 10)
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := ws.ReadMessage(); err != nil {
		return
	}
	welcome, _ := json.Marshal(map[string]any{"type": "welcome", "v": 1, "role": "terminal", "edge_id": "floor", "heartbeat_s": int(pingEvery / time.Second)})
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, welcome); err != nil {
		return
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(pingEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)) != nil {
					_ = ws.Close()
					return
				}
			}
		}
	}()
	_ = ws.SetReadDeadline(time.Now().Add(readDeadline))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(readDeadline)) })
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return
		}
	}
}
