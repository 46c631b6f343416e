package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/edge/metricstest"
)

// TestSlowBodiesCutOffByRealBinaries is issue 14's slowloris finding
// against the real edged and cityhub: a POST announcing 4000 bytes that
// sends 5 was held 46 s and more by both; now each cuts it at its body
// deadline (-body-deadline 2s here) and counts it in /metrics.
func TestSlowBodiesCutOffByRealBinaries(t *testing.T) {
	dir := t.TempDir()
	edged := bintest.Serve(t, built.edged, "-data", filepath.Join(dir, "edge"), "-listen", "127.0.0.1:0", "-mdns=false", "-https-listen", "off", "-body-deadline", "2s")
	hub := bintest.Serve(t, built.cityhub, "-data", filepath.Join(dir, "hub"), "-listen", "127.0.0.1:0", "-https-listen", "off", "-body-deadline", "2s")
	for _, c := range []struct{ name, addr, path, metric string }{
		{"edged", edged.Addr, "/api/v1/pair/start", "campusedge_http_body_timeouts_total"},
		{"cityhub", hub.Addr, "/api/v1/sync/enrol", "cityhub_http_body_timeouts_total"},
	} {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"a\":", c.path)
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, _ = io.Copy(io.Discard, conn) // until the server closes the connection
		held := time.Since(start)
		conn.Close()
		// 2 s deadline; the margin is for a loaded 2-core machine.
		if held > 8*time.Second {
			t.Errorf("%s held a 5-of-4000-byte body %v; want it cut at its 2s body deadline", c.name, held.Round(time.Millisecond))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := metricstest.Read(ctx, http.DefaultClient, "http://"+c.addr)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if m[c.metric] < 1 {
			t.Errorf("%s: %s = %v after a cut body", c.name, c.metric, m[c.metric])
		}
		t.Logf("%s cut a slow body after %v", c.name, held.Round(time.Millisecond))
	}
}
