package cache_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/media"
)

var (
	benchServe   = flag.Bool("cache.bench", false, "run the resource cache benchmarks (edged vs nginx with wrk; shaped-link download)")
	benchLarge   = flag.Int("cache.bench.large", 20, "number of 50 MB files in the serving benchmark")
	benchSmall   = flag.Int("cache.bench.small", 2000, "number of 200 KB files in the serving benchmark")
	benchSeconds = flag.Int("cache.bench.seconds", 10, "wrk duration per run")
)

// buildBins builds the binaries names (cmd/NAME) into dir, keyed by name.
func buildBins(t *testing.T, dir string, names ...string) map[string]string {
	t.Helper()
	pkgs := make([]string, len(names))
	for i, n := range names {
		pkgs[i] = bintest.Cmd(n)
	}
	bins, err := bintest.Build(context.Background(), dir, bintest.BuildOptions{}, pkgs...)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for i, n := range names {
		out[n] = bins[i]
	}
	return out
}

// writeRandomFiles writes n files of size bytes (pseudo-random, distinct).
func writeRandomFiles(t *testing.T, dir, prefix string, n, size int) {
	t.Helper()
	os.MkdirAll(dir, 0o700)
	block := randBytes(1 << 20)
	for i := range n {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%05d.mp4", prefix, i)))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(f, "%s %d|", prefix, i) // distinct content per file
		for left := size - 16; left > 0; {
			k := min(left, len(block))
			f.Write(block[(i*7919)%len(block)%(len(block)-k+1):][:k])
			left -= k
		}
		f.Close()
	}
}

var wrkRE = struct{ rps, transfer *regexp.Regexp }{regexp.MustCompile(`Requests/sec:\s+([\d.]+)`), regexp.MustCompile(`Transfer/sec:\s+([\d.]+)([KMG]?B)`)}

type wrkResult struct {
	rps, bytesPerSec float64
	raw              string
}

func runWrk(t *testing.T, dir, base string, paths []string, seconds int) wrkResult {
	t.Helper()
	var lua strings.Builder
	lua.WriteString("local paths = {\n")
	for _, p := range paths {
		fmt.Fprintf(&lua, "%q,\n", p)
	}
	lua.WriteString("}\nmath.randomseed(42)\nrequest = function() return wrk.format(\"GET\", paths[math.random(#paths)]) end\n")
	script := filepath.Join(dir, fmt.Sprintf("paths-%d.lua", time.Now().UnixNano()))
	os.WriteFile(script, []byte(lua.String()), 0o600)
	out, err := exec.Command("wrk", "-t2", "-c32", fmt.Sprintf("-d%ds", seconds), "--timeout", "30s", "-s", script, base).CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	s := string(out)
	m1, m2 := wrkRE.rps.FindStringSubmatch(s), wrkRE.transfer.FindStringSubmatch(s)
	if m1 == nil || m2 == nil {
		t.Fatalf("cannot parse wrk output:\n%s", s)
	}
	if strings.Contains(s, "Non-2xx") {
		t.Fatalf("wrk saw errors:\n%s", s)
	}
	var r wrkResult
	r.raw = s
	r.rps, _ = strconv.ParseFloat(m1[1], 64)
	r.bytesPerSec, _ = strconv.ParseFloat(m2[1], 64)
	r.bytesPerSec *= map[string]float64{"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[m2[2]]
	return r
}

// TestBenchServeVsNginx (opt-in: -cache.bench) imports a file set into a
// real cityhub, lets a real edged prefetch it, then serves the very same
// blob files from edged (/media/{id}) and from nginx (started here on
// 127.0.0.1 with a generated config) to the same wrk load, and prints
// both throughputs and their ratio.
func TestBenchServeVsNginx(t *testing.T) {
	if !*benchServe {
		t.Skip("benchmark; run with -cache.bench")
	}
	dir := t.TempDir()
	fmt.Printf("LOAD at start: %s\n", loadavg())
	t.Cleanup(func() { fmt.Printf("LOAD at end: %s\n", loadavg()) })
	bins := buildBins(t, dir, "cityhub", "edged")
	in := filepath.Join(dir, "in")
	start := time.Now()
	writeRandomFiles(t, filepath.Join(in, "large"), "large", *benchLarge, 50_000_000)
	writeRandomFiles(t, filepath.Join(in, "small"), "small", *benchSmall, 200_000)
	out, err := exec.Command(bins["cityhub"], "-data", filepath.Join(dir, "hub"), "import", in).Output()
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	type entry struct{ id, path string }
	var large, small []entry
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		id, p, _ := strings.Cut(line, "\t")
		if strings.Contains(p, "/large/") {
			large = append(large, entry{id, p})
		} else {
			small = append(small, entry{id, p})
		}
	}
	enrolTok := hubEnrolToken(t, bins["cityhub"], filepath.Join(dir, "hub"))
	_, hubAddr := startBin(t, bins["cityhub"], "-data", filepath.Join(dir, "hub"), "-listen", "127.0.0.1:0")
	data := filepath.Join(dir, "edge")
	enrolEdge(t, bins["edged"], data, "http://"+hubAddr, enrolTok)
	edgeP, edgeAddr := startBin(t, bins["edged"], "-data", data, "-listen", "127.0.0.1:0", "-mdns=false", "-cloud", "http://"+hubAddr, "-school", testSchool)
	edgeTLSBase, pin, err := edgeP.HTTPS(15 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	edgeTLSAddr := strings.TrimPrefix(edgeTLSBase, "https://")
	tok, _ := os.ReadFile(filepath.Join(data, "admin-token"))
	e := &edge{url: "http://" + edgeAddr, token: strings.TrimSpace(string(tok)), data: data}
	e.waitSynced(t, len(large)+len(small))
	// Fill the cache by reading every item once through the edge.
	var wg sync.WaitGroup
	work := make(chan string)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				resp, err := http.Get(e.url + "/media/" + id)
				if err != nil {
					t.Error(err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("fill %s: %s", id, resp.Status)
				}
			}
		}()
	}
	for _, x := range append(append([]entry{}, large...), small...) {
		work <- x.id
	}
	close(work)
	wg.Wait()
	t.Logf("file set ready in %v (%d × 50 MB, %d × 200 KB)", time.Since(start).Round(time.Second), len(large), len(small))

	// nginx over the same blob directory, on plain HTTP and on TLS with the
	// chain edged serves (as a client receives it) and edged's own key.
	freeAddr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	nginxAddr, nginxTLSAddr := freeAddr(), freeAddr()
	chain := filepath.Join(dir, "edge-chain.pem")
	if err := os.WriteFile(chain, edgeChainPEM(t, edgeTLSAddr, pin), 0o600); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(data, "tls", "key.pem")
	blobs := filepath.Join(data, "blobs")
	conf := filepath.Join(dir, "nginx.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`user root;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path %[1]s/nginx-body;
  proxy_temp_path %[1]s/nginx-proxy;
  fastcgi_temp_path %[1]s/nginx-fastcgi;
  uwsgi_temp_path %[1]s/nginx-uwsgi;
  scgi_temp_path %[1]s/nginx-scgi;
  server {
    listen %[2]s;
    root %[3]s;
  }
  server {
    listen %[4]s ssl;
    root %[3]s;
    ssl_certificate %[5]s;
    ssl_certificate_key %[6]s;
    ssl_protocols TLSv1.2 TLSv1.3;
    # The order Go's server (edged) picks TLS 1.3 suites in on a CPU with
    # AES-GCM instructions, so that both encrypt with the same cipher.
    ssl_prefer_server_ciphers on;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384;
  }
}
`, dir, nginxAddr, blobs, nginxTLSAddr, chain, key)), 0o600)
	ng := exec.Command("nginx", "-c", conf, "-g", "daemon off;")
	ng.Stderr = os.Stderr
	if err := ng.Start(); err != nil {
		t.Fatalf("nginx: %v", err)
	}
	t.Cleanup(func() {
		// SIGTERM, not SIGKILL: nginx's master then stops its workers,
		// which a killed master would leave running.
		_ = ng.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = ng.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = ng.Process.Kill()
			<-done
		}
	})
	for _, a := range []string{nginxAddr, nginxTLSAddr} {
		for i := 0; ; i++ {
			if c, err := net.Dial("tcp", a); err == nil {
				c.Close()
				break
			}
			if i > 100 {
				t.Fatal("nginx did not start")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Both servers must present the same key, and agree to the same
	// protocol and cipher with wrk's TLS library (OpenSSL, as s_client).
	fmt.Printf("TLS: edged %s and nginx %s serve the key with SPKI pin %s; OpenSSL client negotiates: edged %s; nginx %s\n",
		edgeTLSAddr, nginxTLSAddr, pin, negotiated(edgeTLSAddr), negotiated(nginxTLSAddr))
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", nginxTLSAddr, certs.PinnedTLS(pin)); err != nil {
		t.Fatalf("nginx does not serve edged's key: %v", err)
	} else {
		c.Close()
	}
	edgePIDs, nginxPIDs := []int{edgeP.PID()}, procTree(ng.Process.Pid)
	tlsClient := pinnedClient(pin)
	sums := map[string]string{}
	for since := "0"; ; {
		resp, err := http.Get("http://" + hubAddr + "/api/v1/catalog?since=" + since)
		if err != nil {
			t.Fatal(err)
		}
		var page media.Changes
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			sums[it.ID] = it.SHA256
		}
		if !page.More {
			break
		}
		since = page.Next
	}
	for _, set := range []struct {
		name string
		ents []entry
	}{{"50 MB files", large}, {"200 KB files", small}} {
		var edgePaths, nginxPaths []string
		for _, x := range set.ents {
			edgePaths = append(edgePaths, "/media/"+x.id)
			sum := sums[x.id]
			nginxPaths = append(nginxPaths, "/sha256/"+sum[:2]+"/"+sum)
		}
		// Same bytes from all four: spot check.
		a := get(t, "GET", e.url+edgePaths[0])
		b := get(t, "GET", "http://"+nginxAddr+nginxPaths[0])
		as, ab := getBody(t, tlsClient, "https://"+edgeTLSAddr+edgePaths[0])
		bs, bb := getBody(t, tlsClient, "https://"+nginxTLSAddr+nginxPaths[0])
		if a.status != 200 || b.status != 200 || as != 200 || bs != 200 || !bytes.Equal(a.body, b.body) || !bytes.Equal(a.body, ab) || !bytes.Equal(a.body, bb) {
			t.Fatalf("edged and nginx disagree on %s: %d %d, over TLS %d %d", set.ents[0].id, a.status, b.status, as, bs)
		}
		type pass struct {
			name, base string
			paths      []string
			pids       []int
			wrkResult
			cpu  float64 // the server's CPU, % of one core
			load string
		}
		passes := []*pass{
			{name: "edged http", base: e.url, paths: edgePaths, pids: edgePIDs},
			{name: "nginx http", base: "http://" + nginxAddr, paths: nginxPaths, pids: nginxPIDs},
			{name: "edged https", base: "https://" + edgeTLSAddr, paths: edgePaths, pids: edgePIDs},
			{name: "nginx https", base: "https://" + nginxTLSAddr, paths: nginxPaths, pids: nginxPIDs},
		}
		for _, p := range passes {
			p.load = loadavg()
			c0, w0 := treeCPU(p.pids), time.Now()
			p.wrkResult = runWrk(t, dir, p.base, p.paths, *benchSeconds)
			p.cpu = 100 * float64(treeCPU(p.pids)-c0) / float64(time.Since(w0))
			fmt.Printf("PASS %s %s: %.0f req/s %.1f MiB/s, server CPU %.0f%% of a core (%.0f MiB per CPU-second); load before %s\n",
				set.name, p.name, p.rps, p.bytesPerSec/(1<<20), p.cpu, p.bytesPerSec/(1<<20)/(p.cpu/100), p.load)
		}
		ed, nx, eds, nxs := passes[0], passes[1], passes[2], passes[3]
		fmt.Printf("RESULT %s (wrk -t2 -c32 -d%ds, random file per request): edged %.0f req/s %.1f MiB/s; nginx %.0f req/s %.1f MiB/s; edged/nginx throughput %.2f\n",
			set.name, *benchSeconds, ed.rps, ed.bytesPerSec/(1<<20), nx.rps, nx.bytesPerSec/(1<<20), ed.bytesPerSec/nx.bytesPerSec)
		fmt.Printf("RESULT %s over HTTPS (same wrk load, same certificate and key): edged %.0f req/s %.1f MiB/s; nginx %.0f req/s %.1f MiB/s; edged/nginx throughput %.2f\n",
			set.name, eds.rps, eds.bytesPerSec/(1<<20), nxs.rps, nxs.bytesPerSec/(1<<20), eds.bytesPerSec/nxs.bytesPerSec)
		fmt.Printf("RESULT %s cost of TLS: HTTPS/HTTP throughput edged %.2f, nginx %.2f; server CPU per MiB HTTPS/HTTP edged %.2f, nginx %.2f\n",
			set.name, eds.bytesPerSec/ed.bytesPerSec, nxs.bytesPerSec/nx.bytesPerSec,
			(eds.cpu/eds.bytesPerSec)/(ed.cpu/ed.bytesPerSec), (nxs.cpu/nxs.bytesPerSec)/(nx.cpu/nx.bytesPerSec))
	}

	// Full handshakes per second, same client load on each server in turn.
	const hsWorkers = 16
	hsFor := time.Duration(*benchSeconds) * time.Second
	var hs [2]handshakeResult
	for i, srv := range []struct {
		name, addr string
		pids       []int
	}{{"edged", edgeTLSAddr, edgePIDs}, {"nginx", nginxTLSAddr, nginxPIDs}} {
		load := loadavg()
		hs[i] = handshakeLoad(srv.addr, pin, hsWorkers, hsFor, srv.pids)
		fmt.Printf("PASS handshakes %s: %d full handshakes in %s (%d failed%s), %.0f/s; server CPU %.2fs (%.0f handshakes per server CPU-second), client CPU %.2fs; load before %s\n",
			srv.name, hs[i].n, hs[i].wall.Round(time.Millisecond), hs[i].failed, strings.TrimSuffix(", first: "+hs[i].firstErr, ", first: "),
			hs[i].perSec(), hs[i].serverCPU.Seconds(), float64(hs[i].n)/hs[i].serverCPU.Seconds(), hs[i].clientCPU.Seconds(), load)
		if hs[i].n == 0 || hs[i].failed > hs[i].n/100 {
			t.Errorf("handshakes with %s: %d done, %d failed: %s", srv.name, hs[i].n, hs[i].failed, hs[i].firstErr)
		}
	}
	fmt.Printf("RESULT TLS 1.3 full handshakes (ECDHE P-256, ECDSA P-256 certificate, no resumption, %d client goroutines, %s each, client in this process on the same cores): edged %.0f/s, nginx %.0f/s, edged/nginx %.2f; per server CPU-second edged %.0f, nginx %.0f, edged/nginx %.2f\n",
		hsWorkers, hsFor, hs[0].perSec(), hs[1].perSec(), hs[0].perSec()/hs[1].perSec(),
		float64(hs[0].n)/hs[0].serverCPU.Seconds(), float64(hs[1].n)/hs[1].serverCPU.Seconds(),
		(float64(hs[0].n)/hs[0].serverCPU.Seconds())/(float64(hs[1].n)/hs[1].serverCPU.Seconds()))
}

// shapingProxy relays TCP hub→edge at a fixed rate and cuts every
// connection after cutEvery of transfer, like a thin, flaky city WAN.
type shapingProxy struct {
	ln       net.Listener
	target   string
	lim      *rate.Limiter
	cutEvery time.Duration
	wanBytes atomic.Int64
	cuts     atomic.Int32
}

func newShapingProxy(t *testing.T, target string, bps int, cutEvery time.Duration) *shapingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &shapingProxy{ln: ln, target: target, lim: rate.NewLimiter(rate.Limit(bps/8), 16<<10), cutEvery: cutEvery}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); p.relay(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

func (p *shapingProxy) relay(down net.Conn) {
	defer down.Close()
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { _, _ = io.Copy(up, down); up.Close() }()
	buf := make([]byte, 16<<10)
	var cut <-chan time.Time
	for {
		n, err := up.Read(buf)
		if n > 0 {
			if cut == nil && n > 4096 { // a content transfer, not an API answer
				cut = time.After(p.cutEvery)
			}
			for off := 0; off < n; {
				k := min(n-off, 4096)
				if p.lim.WaitN(context.Background(), k) != nil {
					return
				}
				select {
				case <-cut:
					p.cuts.Add(1)
					return
				default:
				}
				w, werr := down.Write(buf[off : off+k])
				p.wanBytes.Add(int64(w))
				if werr != nil {
					return
				}
				off += k
			}
		}
		if err != nil {
			return
		}
	}
}

// TestBenchShapedDownload (opt-in: -cache.bench) downloads one resource
// from a real cityhub through a 4 Mbit/s link that drops the connection
// every 4 s of transfer, and prints WAN bytes ÷ resource bytes and time ÷
// (bytes ÷ link rate).
func TestBenchShapedDownload(t *testing.T) {
	if !*benchServe {
		t.Skip("benchmark; run with -cache.bench")
	}
	const linkBps = 4_000_000
	dir := t.TempDir()
	bins := buildBins(t, dir, "cityhub", "edged")
	in := filepath.Join(dir, "in")
	os.MkdirAll(in, 0o700)
	want := randBytes(6 << 20)
	os.WriteFile(filepath.Join(in, "lesson.mp4"), want, 0o600)
	out, err := exec.Command(bins["cityhub"], "-data", filepath.Join(dir, "hub"), "import", in).Output()
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\t")
	enrolTok := hubEnrolToken(t, bins["cityhub"], filepath.Join(dir, "hub"))
	_, hubAddr := startBin(t, bins["cityhub"], "-data", filepath.Join(dir, "hub"), "-listen", "127.0.0.1:0")
	p := newShapingProxy(t, hubAddr, linkBps, 4*time.Second)
	data := filepath.Join(dir, "edge")
	enrolEdge(t, bins["edged"], data, "http://"+hubAddr, enrolTok)
	_, edgeAddr := startBin(t, bins["edged"], "-data", data, "-listen", "127.0.0.1:0", "-mdns=false", "-cloud", "http://"+p.ln.Addr().String(), "-school", testSchool)
	tok, _ := os.ReadFile(filepath.Join(data, "admin-token"))
	e := &edge{url: "http://" + edgeAddr, token: strings.TrimSpace(string(tok)), data: data}
	e.waitSynced(t, 1)
	before := p.wanBytes.Load()
	start := time.Now()
	r := get(t, "GET", e.url+"/media/"+id)
	took := time.Since(start)
	if r.status != 200 || !bytes.Equal(r.body, want) {
		t.Fatalf("GET: %d, %d bytes", r.status, len(r.body))
	}
	wan := p.wanBytes.Load() - before
	ideal := time.Duration(float64(len(want)) * 8 / linkBps * float64(time.Second))
	fmt.Printf("RESULT shaped download of %d bytes over %d Mbit/s with a cut every 4 s (%d cuts): WAN bytes ÷ resource bytes %.4f; time %v ÷ (bytes ÷ link rate %v) %.3f\n",
		len(want), linkBps/1_000_000, p.cuts.Load(), float64(wan)/float64(len(want)), took.Round(time.Millisecond), ideal.Round(time.Millisecond), took.Seconds()/ideal.Seconds())
}
