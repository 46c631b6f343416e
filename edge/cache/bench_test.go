package cache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
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
	benchSets    = flag.String("cache.bench.sets", "small,large", "file sets of the serving benchmark: small (200 KB files), large (50 MB files)")
	benchBefore  = flag.String("cache.bench.before", "", "an older edged binary, measured in the same run on a second data dir that hard-links the same blobs")
	benchHold    = flag.String("cache.bench.hold", "", "write the set-up servers' addresses to this file and wait (up to 1 h) until it is removed, instead of measuring")
	benchPprof   = flag.String("cache.bench.pprof", "", "directory for CPU profiles of edged taken during its first pass of each set and protocol")
	benchWarmup  = flag.Int("cache.bench.warmup", 2, "seconds of unmeasured wrk load on each server before the measured passes of each set and protocol (edged's kept handles and decoded items, both servers' dentries, the page cache)")
	benchRounds  = flag.Int("cache.bench.rounds", 1, "rounds of the pass order (edged, nginx, nginx, edged) per set and protocol; each round gives its own edged/nginx ratio, and the median of them is printed")
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
	clientCPU        time.Duration // wrk's own user + system time
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
	cmd := exec.Command("wrk", "-t2", "-c32", fmt.Sprintf("-d%ds", seconds), "--timeout", "30s", "-s", script, base)
	out, err := cmd.CombinedOutput()
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
	r.clientCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	r.rps, _ = strconv.ParseFloat(m1[1], 64)
	r.bytesPerSec, _ = strconv.ParseFloat(m2[1], 64)
	r.bytesPerSec *= map[string]float64{"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[m2[2]]
	return r
}

// TestBenchServeVsNginx (opt-in: -cache.bench) imports a file set into a
// real cityhub, lets a real edged prefetch it (pinned), then serves the
// very same blob files from edged (/media/{id}) and from nginx (started
// here on 127.0.0.1 with a generated config) to the same wrk load, and
// prints both throughputs and their ratio.
//
// The comparison is kept fair and written down in what it prints: nginx
// runs as many worker processes as edged has Go threads running code
// (GOMAXPROCS, the machine's CPUs), both keep connections alive for 120 s
// and without a request limit, both use sendfile on plain HTTP, both
// serve TLS 1.3 with the same certificate chain and key and agree to the
// same cipher suite with wrk's OpenSSL, and neither is pinned to a core.
// nginx keeps its default of no open_file_cache (one open per request).
// Passes alternate (edged, nginx, nginx, edged) so a load change on the
// shared machine falls on both; each pass prints the load average and wrk's
// own CPU per request (the client shares the two cores: a server's CPU per
// request moves the throughput only as its share of server + client).
// -cache.bench.rounds repeats the order and prints each round's ratio and
// their median, which one busy minute moves less than the run's means;
// -cache.bench.warmup seconds of unmeasured load on each server come first.
func TestBenchServeVsNginx(t *testing.T) {
	if !*benchServe {
		t.Skip("benchmark; run with -cache.bench")
	}
	dir := t.TempDir()
	fmt.Printf("LOAD at start: %s\n", loadavg())
	t.Cleanup(func() { fmt.Printf("LOAD at end: %s\n", loadavg()) })
	sets := map[string]bool{}
	for _, s := range strings.Split(*benchSets, ",") {
		sets[strings.TrimSpace(s)] = true
	}
	nLarge, nSmall := *benchLarge, *benchSmall
	if !sets["large"] {
		nLarge = 0
	}
	if !sets["small"] {
		nSmall = 0
	}
	bins := buildBins(t, dir, "cityhub", "edged")
	in := filepath.Join(dir, "in")
	start := time.Now()
	writeRandomFiles(t, filepath.Join(in, "large"), "large", nLarge, 50_000_000)
	writeRandomFiles(t, filepath.Join(in, "small"), "small", nSmall, 200_000)
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
	hubData := filepath.Join(dir, "hub")
	enrolTok := hubEnrolToken(t, bins["cityhub"], hubData)
	var beforeTok string
	if *benchBefore != "" {
		b, err := exec.Command(bins["cityhub"], "-data", hubData, "enrol-token", testSchool).Output()
		if err != nil {
			t.Fatalf("cityhub enrol-token: %v", err)
		}
		beforeTok = strings.TrimSpace(string(b))
	}
	_, hubAddr := startBin(t, bins["cityhub"], "-data", hubData, "-listen", "127.0.0.1:0")
	data := filepath.Join(dir, "edge")
	enrolEdge(t, bins["edged"], data, "http://"+hubAddr, enrolTok)
	edgeP, edgeAddr := startBin(t, bins["edged"], "-data", data, "-listen", "127.0.0.1:0", "-https-listen", "127.0.0.1:0", "-mdns=false", "-cloud", "http://"+hubAddr, "-school", testSchool)
	edgeTLSBase, pin, err := edgeP.HTTPS(15 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	edgeTLSAddr := strings.TrimPrefix(edgeTLSBase, "https://")
	tok, _ := os.ReadFile(filepath.Join(data, "admin-token"))
	e := &edge{url: "http://" + edgeAddr, token: strings.TrimSpace(string(tok)), data: data}
	e.waitSynced(t, len(large)+len(small))
	// Item id → SHA-256 from the imported files themselves (the hub
	// serves its catalogue only to enrolled edges).
	sums := map[string]string{}
	for _, x := range append(append([]entry{}, large...), small...) {
		sums[x.id] = fileSHA256(t, x.path)
	}
	// Fill the cache the way a school does ahead of a lesson: pin every
	// item and let the prefetcher fetch it. (Reading each item once over
	// the LAN would run into the per-client budget of uncached reads.)
	all := append(append([]entry{}, large...), small...)
	for _, x := range all {
		e.do(t, "PUT", "/api/v1/cache/pins/"+x.id, nil, http.StatusOK, nil)
	}
	waitBlobs(t, data, sums, 10*time.Minute)
	t.Logf("file set ready in %v (%d × 50 MB, %d × 200 KB)", time.Since(start).Round(time.Second), len(large), len(small))

	// An older edged on a second data dir that hard-links the same blobs:
	// it syncs the catalogue first (a blob the catalogue does not name is
	// removed at start), then restarts with the blobs in place.
	var beforeP *bintest.Process
	var beforeURL, beforeTLSBase, beforePin string
	if *benchBefore != "" {
		bdata := filepath.Join(dir, "edge-before")
		enrolEdge(t, *benchBefore, bdata, "http://"+hubAddr, beforeTok)
		args := []string{"-data", bdata, "-listen", "127.0.0.1:0", "-https-listen", "127.0.0.1:0", "-mdns=false", "-cloud", "http://" + hubAddr, "-school", testSchool}
		p, addr := startBin(t, *benchBefore, args...)
		btok, _ := os.ReadFile(filepath.Join(bdata, "admin-token"))
		be := &edge{url: "http://" + addr, token: strings.TrimSpace(string(btok)), data: bdata}
		be.waitSynced(t, len(all))
		if _, _, err := p.Stop(30 * time.Second); err != nil {
			t.Fatalf("stop the older edged: %v", err)
		}
		if out, err := exec.Command("cp", "-al", filepath.Join(data, "blobs", "sha256"), filepath.Join(bdata, "blobs")).CombinedOutput(); err != nil {
			t.Fatalf("link blobs: %v %s", err, out)
		}
		beforeP, addr = startBin(t, *benchBefore, args...)
		beforeURL = "http://" + addr
		if beforeTLSBase, beforePin, err = beforeP.HTTPS(15 * time.Second); err != nil {
			t.Fatal(err)
		}
	}

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
	workers := runtime.NumCPU() // edged's GOMAXPROCS: Go's default, not overridden
	os.WriteFile(conf, []byte(fmt.Sprintf(`user root;
worker_processes %[7]d;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 120s;
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
`, dir, nginxAddr, blobs, nginxTLSAddr, chain, key, workers)), 0o600)
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
	fmt.Printf("SETUP %d CPUs (%s); edged GOMAXPROCS %d (Go default), nginx worker_processes %d; neither pinned to a core; keep-alive 120 s, no request limit, on both; sendfile on both for HTTP; nginx open_file_cache off (default); wrk -t2 -c32 -d%ds --timeout 30s, a random file of the set per request\n",
		runtime.NumCPU(), cpuModel(), runtime.NumCPU(), workers, *benchSeconds)
	fmt.Printf("TLS: edged %s and nginx %s serve the key with SPKI pin %s; OpenSSL client negotiates: edged %s; nginx %s\n",
		edgeTLSAddr, nginxTLSAddr, pin, negotiated(edgeTLSAddr), negotiated(nginxTLSAddr))
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", nginxTLSAddr, certs.PinnedTLS(pin)); err != nil {
		t.Fatalf("nginx does not serve edged's key: %v", err)
	} else {
		c.Close()
	}
	edgePIDs, nginxPIDs := []int{edgeP.PID()}, procTree(ng.Process.Pid)
	if *benchHold != "" {
		info := fmt.Sprintf("dir=%s\nedge=%s\nedge_tls=%s\nedge_pid=%d\nedge_data=%s\ntoken=%s\nnginx=%s\nnginx_tls=%s\nnginx_pids=%v\n", dir, e.url, edgeTLSAddr, edgeP.PID(), data, e.token, nginxAddr, nginxTLSAddr, nginxPIDs)
		var lua strings.Builder
		for _, x := range small {
			sum := sums[x.id]
			fmt.Fprintf(&lua, "/media/%s /sha256/%s/%s\n", x.id, sum[:2], sum)
		}
		os.WriteFile(*benchHold+".paths", []byte(lua.String()), 0o644)
		os.WriteFile(*benchHold, []byte(info), 0o644)
		for i := 0; i < 3600; i++ {
			if _, err := os.Stat(*benchHold); err != nil {
				break
			}
			time.Sleep(time.Second)
		}
		return
	}
	tlsClient := pinnedClient(pin)
	edged := benchServer{name: "edged", base: e.url, tlsBase: "https://" + edgeTLSAddr, pids: edgePIDs, pin: pin}
	nginx := benchServer{name: "nginx", base: "http://" + nginxAddr, tlsBase: "https://" + nginxTLSAddr, pids: nginxPIDs, nginx: true}
	order := []benchServer{edged, nginx, nginx, edged}
	if beforeP != nil {
		before := benchServer{name: "edged-before", base: beforeURL, tlsBase: beforeTLSBase, pids: []int{beforeP.PID()}, pin: beforePin}
		order = append(append([]benchServer{before}, order...), before)
	}
	type pass struct {
		benchServer
		wrkResult
		cpu   float64 // the server's CPU, % of one core
		load  string
		round int
	}
	var setsRun []struct {
		name string
		ents []entry
	}
	if len(small) > 0 {
		setsRun = append(setsRun, struct {
			name string
			ents []entry
		}{"200 KB files", small})
	}
	if len(large) > 0 {
		setsRun = append(setsRun, struct {
			name string
			ents []entry
		}{"50 MB files", large})
	}
	for _, set := range setsRun {
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
		for _, proto := range []string{"http", "https"} {
			var passes []*pass
			profiled := false
			target := func(srv benchServer) (string, []string) {
				base, paths := srv.base, edgePaths
				if proto == "https" {
					base = srv.tlsBase
				}
				if srv.nginx {
					paths = nginxPaths
				}
				return base, paths
			}
			// Unmeasured load on each server first: the first measured
			// pass would otherwise be the only one to find edged's kept
			// handles and decoded items cold.
			warmed := map[string]bool{}
			for _, srv := range order {
				if *benchWarmup > 0 && !warmed[srv.name] {
					warmed[srv.name] = true
					base, paths := target(srv)
					runWrk(t, dir, base, paths, *benchWarmup)
				}
			}
			for round := range max(*benchRounds, 1) {
				for _, srv := range order {
					p := &pass{benchServer: srv, load: loadavg(), round: round}
					base, paths := target(srv)
					var prof func()
					if *benchPprof != "" && !profiled && srv.name == "edged" {
						profiled = true
						prof = cpuProfile(t, e, filepath.Join(*benchPprof, fmt.Sprintf("edged-%s-%s.pb.gz", strings.Fields(set.name)[0], proto)), *benchSeconds-2)
					}
					c0, w0 := treeCPU(p.pids), time.Now()
					p.wrkResult = runWrk(t, dir, base, paths, *benchSeconds)
					p.cpu = 100 * float64(treeCPU(p.pids)-c0) / float64(time.Since(w0))
					if prof != nil {
						prof()
					}
					fmt.Printf("PASS %s %s %s round %d: %.0f req/s %.1f MiB/s, server CPU %.0f%% of a core (%.0f MiB per CPU-second), wrk CPU per request %.0f µs; load before %s\n",
						set.name, srv.name, proto, round+1, p.rps, p.bytesPerSec/(1<<20), p.cpu, p.bytesPerSec/(1<<20)/(p.cpu/100), p.clientCPU.Seconds()/(p.rps*float64(*benchSeconds))*1e6, p.load)
					passes = append(passes, p)
				}
			}
			// CPU per request and per byte are the server's mean CPU over
			// its mean requests and bytes per second (a 50 MB pass may
			// complete no request).
			mean := func(name string) (rps, bps, cpuPerReq float64) {
				n, cpu := 0.0, 0.0
				for _, p := range passes {
					if p.name == name {
						rps += p.rps
						bps += p.bytesPerSec
						cpu += p.cpu / 100
						n++
					}
				}
				return rps / n, bps / n, cpu / rps
			}
			er, eb, ec := mean("edged")
			nr, nb, nc := mean("nginx")
			fmt.Printf("RESULT %s over %s (wrk -t2 -c32 -d%ds, random file per request, order %s): edged %.0f req/s %.1f MiB/s; nginx %.0f req/s %.1f MiB/s; edged/nginx throughput %.2f; server CPU per request edged %.0f µs, nginx %.0f µs (%.2f×); MiB per server CPU-second edged %.0f, nginx %.0f",
				set.name, strings.ToUpper(proto), *benchSeconds, passOrder(order), er, eb/(1<<20), nr, nb/(1<<20), eb/nb, ec*1e6, nc*1e6, ec/nc, eb/(1<<20)/(ec*er), nb/(1<<20)/(nc*nr))
			if beforeP != nil {
				br, bb, bc := mean("edged-before")
				fmt.Printf("; before (%s) %.0f req/s %.1f MiB/s, before/nginx %.2f, CPU per request %.0f µs", *benchBefore, br, bb/(1<<20), bb/nb, bc*1e6)
			}
			if *benchRounds > 1 {
				fmt.Printf("; edged/nginx throughput per round %s", roundRatios(*benchRounds, passes, func(p *pass) (string, float64, int) { return p.name, p.bytesPerSec, p.round }))
			}
			fmt.Println()
		}
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

// benchServer is one server the serving benchmark measures.
type benchServer struct {
	name, base, tlsBase string
	pids                []int
	pin                 string
	nginx               bool
}

// roundRatios is each round's edged/nginx throughput ratio (the mean of
// edged's passes in the round over the mean of nginx's) and their median.
// A round is a few seconds long, so a change of the machine's load falls
// on fewer of them than on the whole run's means.
func roundRatios[P any](rounds int, passes []P, of func(P) (name string, bytesPerSec float64, round int)) string {
	var ratios []float64
	for r := range rounds {
		var e, n, ne, nn float64
		for _, p := range passes {
			name, bps, round := of(p)
			switch {
			case round != r:
			case name == "edged":
				e, ne = e+bps, ne+1
			case name == "nginx":
				n, nn = n+bps, nn+1
			}
		}
		if ne > 0 && nn > 0 && n > 0 {
			ratios = append(ratios, (e/ne)/(n/nn))
		}
	}
	if len(ratios) == 0 {
		return "none"
	}
	parts := make([]string, len(ratios))
	for i, x := range ratios {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	slices.Sort(ratios)
	med := ratios[len(ratios)/2]
	if len(ratios)%2 == 0 {
		med = (ratios[len(ratios)/2-1] + med) / 2
	}
	return fmt.Sprintf("%s, median %.2f", strings.Join(parts, " "), med)
}

func passOrder(order []benchServer) string {
	names := make([]string, len(order))
	for i, s := range order {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}

// fileSHA256 is the hex SHA-256 of the file at path.
func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// waitBlobs waits until every blob of sums is in data's blob directory:
// the edge has fetched and verified it.
func waitBlobs(t *testing.T, data string, sums map[string]string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		missing := 0
		for _, sum := range sums {
			if _, err := os.Stat(media.BlobPath(filepath.Join(data, "blobs"), sum)); err != nil {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d items still not cached after %v", missing, len(sums), within)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// cpuProfile starts a CPU profile of the edge (GET pprof/profile) for
// seconds and returns a function that waits for it and writes it to path.
func cpuProfile(t *testing.T, e *edge, path string, seconds int) func() {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/debug/pprof/profile?seconds=%d", e.url, seconds), nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("%s: %s", resp.Status, b)
		}
		if err == nil {
			err = os.WriteFile(path, b, 0o644)
		}
		done <- err
	}()
	return func() {
		if err := <-done; err != nil {
			t.Errorf("CPU profile: %v", err)
			return
		}
		fmt.Printf("PROFILE %s\n", path)
	}
}

// cpuModel is the CPU's model name from /proc/cpuinfo.
func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
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

func TestRoundRatios(t *testing.T) {
	type p struct {
		name  string
		bps   float64
		round int
	}
	passes := []p{
		{"edged", 90, 0}, {"nginx", 100, 0}, {"nginx", 100, 0}, {"edged", 110, 0}, // 1.00
		{"edged", 40, 1}, {"nginx", 100, 1}, {"nginx", 100, 1}, {"edged", 60, 1}, // 0.50
		{"edged", 80, 2}, {"nginx", 100, 2}, {"nginx", 60, 2}, {"edged", 80, 2}, // 1.00
		{"edged-before", 999, 2},
	}
	got := roundRatios(3, passes, func(x p) (string, float64, int) { return x.name, x.bps, x.round })
	if want := "1.00 0.50 1.00, median 1.00"; got != want {
		t.Errorf("roundRatios = %q, want %q", got, want)
	}
	if got := roundRatios(2, passes[:8], func(x p) (string, float64, int) { return x.name, x.bps, x.round }); got != "1.00 0.50, median 0.75" {
		t.Errorf("two rounds: %q", got)
	}
}
