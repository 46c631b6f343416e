package cache_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/internal/benchtools"
)

// The HTTPS half of TestBenchServeVsNginx: the cost of TLS on /media, for
// edged and for nginx serving the same certificate and key.

// loadavg is /proc/loadavg without its trailing newline: every figure here
// is only as quiet as the shared machine was.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// edgeChainPEM completes one handshake with the edge at addr, checks that
// the leaf carries pin, and returns the chain it served as PEM: what nginx
// is given, so both servers present the very same certificates.
func edgeChainPEM(t *testing.T, addr, pin string) []byte {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, certs.PinnedTLS(pin))
	if err != nil {
		t.Fatalf("TLS handshake with edged at %s: %v", addr, err)
	}
	defer c.Close()
	var out bytes.Buffer
	for _, cert := range c.ConnectionState().PeerCertificates {
		_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	}
	return out.Bytes()
}

// pinnedClient is an HTTP client that trusts only the server holding pin.
func pinnedClient(pin string) *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: certs.PinnedTLS(pin), ForceAttemptHTTP2: false}}
}

// getBody fetches url with c and returns status and body.
func getBody(t *testing.T, c *http.Client, url string) (int, []byte) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, b
}

// negotiated asks openssl s_client (the same libssl and defaults as wrk)
// which protocol and cipher suite addr agrees to, e.g.
// "TLSv1.3 TLS_AES_128_GCM_SHA256 X25519".
func negotiated(addr string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", "s_client", "-connect", addr, "-brief")
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.CombinedOutput()
	var proto, suite, group string
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "Protocol version":
			proto = strings.TrimSpace(v)
		case "Ciphersuite":
			suite = strings.TrimSpace(v)
		case "Server Temp Key", "Negotiated TLS1.3 group":
			group = strings.TrimSpace(v)
		}
	}
	if proto == "" {
		return "unknown (openssl s_client: " + strings.TrimSpace(string(out)) + ")"
	}
	return strings.TrimSpace(proto + " " + suite + " " + group)
}

// procTree is a server's process and its direct children (nginx's workers).
func procTree(pid int) []int {
	pids := []int{pid}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			pids = append(pids, child)
		}
	}
	return pids
}

// treeCPU is the CPU time used so far by pids together.
func treeCPU(pids []int) time.Duration {
	var sum time.Duration
	for _, p := range pids {
		if s, err := benchtools.ReadProc(p); err == nil {
			sum += s.CPU
		}
	}
	return sum
}

// selfCPU is this process's user+system CPU so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// handshakeResult is one handshake load run.
type handshakeResult struct {
	n, failed int64
	wall      time.Duration
	serverCPU time.Duration // the server's processes
	clientCPU time.Duration // this process (the load generator)
	firstErr  string
}

func (h handshakeResult) perSec() float64 { return float64(h.n) / h.wall.Seconds() }

// handshakeLoad runs workers goroutines that each, until d has passed, open
// a new TCP connection to addr, complete a full TLS 1.3 handshake (ECDHE
// P-256; no session cache, so never a resumption), check the server's key
// against pin, and close. server lists the processes whose CPU is counted.
func handshakeLoad(addr, pin string, workers int, d time.Duration, server []int) handshakeResult {
	cfg := certs.PinnedTLS(pin)
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	cfg.CurvePreferences = []tls.CurveID{tls.CurveP256}
	cfg.ClientSessionCache = nil
	var n, failed atomic.Int64
	var errOnce sync.Once
	var firstErr string
	cpu0, self0 := treeCPU(server), selfCPU()
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := 0; i < 10_000_000 && time.Now().Before(end); i++ {
				err := oneHandshake(addr, cfg)
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err.Error() })
					time.Sleep(time.Millisecond)
					continue
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return handshakeResult{n: n.Load(), failed: failed.Load(), wall: time.Since(start),
		serverCPU: treeCPU(server) - cpu0, clientCPU: selfCPU() - self0, firstErr: firstErr}
}

func oneHandshake(addr string, cfg *tls.Config) error {
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		return err
	}
	if st := c.ConnectionState(); st.DidResume || st.Version != tls.VersionTLS13 || st.CurveID != tls.CurveP256 {
		return fmt.Errorf("not a full TLS 1.3 P-256 handshake (resumed %v, version %x, group %v)", st.DidResume, st.Version, st.CurveID)
	}
	return nil
}
