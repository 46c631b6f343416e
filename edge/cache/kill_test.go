package cache_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/cache"
)

var (
	listeningRE      = regexp.MustCompile(`msg=listening addr=(\S+)`)
	httpsListeningRE = regexp.MustCompile(`msg="listening https" addr=(\S+)`)
)

// startBin starts a binary and returns the address it logs as listening.
func startBin(t *testing.T, bin string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd, addrs := startBinLines(t, bin, []*regexp.Regexp{listeningRE}, args...)
	return cmd, addrs[0]
}

// startBinLines starts a binary and waits until it has logged a line
// matching each of res, returning each one's first submatch in order.
func startBinLines(t *testing.T, bin string, res []*regexp.Regexp, args ...string) (*exec.Cmd, []string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	found := make(chan []string, 1)
	go func() {
		defer close(done)
		got := make([]string, len(res))
		left := len(res)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			for i, re := range res {
				if got[i] != "" {
					continue
				}
				if m := re.FindStringSubmatch(sc.Text()); m != nil {
					got[i] = m[1]
					if left--; left == 0 {
						found <- got
					}
				}
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case a := <-found:
		return cmd, a
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not log its addresses", bin)
		return nil, nil
	}
}

// slowBody paces a response body to about rate bytes per second.
type slowBody struct {
	io.ReadCloser
	rate int
}

func (s slowBody) Read(p []byte) (int, error) {
	p = p[:min(len(p), s.rate/50)]
	n, err := s.ReadCloser.Read(p)
	time.Sleep(20 * time.Millisecond)
	return n, err
}

// TestKill9MidDownloadResumes runs the real cityhub and edged binaries
// with a 4 MB/s shaped link between them, kill -9s edged in the middle of
// a download, restarts it, and checks the download continues from the
// partial file and ends verified.
func TestKill9MidDownloadResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	dir := t.TempDir()
	bins := map[string]string{"edged": "", "cityhub": ""}
	for name := range bins {
		bins[name] = filepath.Join(dir, name)
		if out, err := exec.Command("go", "build", "-o", bins[name], "../../cmd/"+name).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	in := filepath.Join(dir, "in")
	os.MkdirAll(in, 0o700)
	want := make([]byte, 8<<20)
	rand.Read(want)
	os.WriteFile(filepath.Join(in, "long lesson.mp4"), want, 0o600)
	out, err := exec.Command(bins["cityhub"], "-data", filepath.Join(dir, "hub"), "import", in).Output()
	if err != nil {
		t.Fatalf("cityhub import: %v", err)
	}
	id, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\t")

	_, hubAddr := startBin(t, bins["cityhub"], "-data", filepath.Join(dir, "hub"), "-listen", "127.0.0.1:0")
	hubURL, _ := url.Parse("http://" + hubAddr)
	var mu sync.Mutex
	var ranges []string
	rp := httputil.NewSingleHostReverseProxy(hubURL)
	rp.FlushInterval = -1
	rp.ModifyResponse = func(r *http.Response) error {
		if strings.HasPrefix(r.Request.URL.Path, "/api/v1/content/") {
			r.Body = slowBody{r.Body, 4 << 20}
		}
		return nil
	}
	link := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/v1/content/") {
			mu.Lock()
			ranges = append(ranges, r.Header.Get("Range"))
			mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	defer link.Close()

	data := filepath.Join(dir, "edge")
	args := []string{"-data", data, "-listen", "127.0.0.1:0", "-mdns=false", "-cloud", link.URL}
	edged, edgeAddr := startBin(t, bins["edged"], args...)
	tok, _ := os.ReadFile(filepath.Join(data, "admin-token"))
	e := &edge{url: "http://" + edgeAddr, token: strings.TrimSpace(string(tok)), data: data}
	deadline := time.Now().Add(10 * time.Second)
	for e.catalog(t, "").Total != 1 {
		if time.Now().After(deadline) {
			t.Fatal("catalogue not synced")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A reader starts the download; kill -9 edged once 1 MB is on disk.
	go func() {
		resp, err := http.Get(e.url + "/media/" + id)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	part := filepath.Join(data, "blobs", "partial", id+".part")
	for {
		if fi, err := os.Stat(part); err == nil && fi.Size() > 1<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("download did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := edged.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_, _ = edged.Process.Wait()
	fi, _ := os.Stat(part)
	killedAt := fi.Size()

	_, edgeAddr = startBin(t, bins["edged"], args...)
	e.url = "http://" + edgeAddr
	if st := e.state(t, id); st.State != cache.Partial || st.Bytes < killedAt {
		t.Fatalf("after restart: %+v, want partial with ≥ %d bytes", st, killedAt)
	}
	r := get(t, "GET", e.url+"/media/"+id)
	if r.status != 200 || !bytes.Equal(r.body, want) {
		t.Fatalf("GET after restart: %d, %d bytes", r.status, len(r.body))
	}
	mu.Lock()
	defer mu.Unlock()
	var from int64
	if len(ranges) != 2 || ranges[0] != "" {
		t.Fatalf("hub saw content requests %q; want a full GET then one resume", ranges)
	}
	fmt.Sscanf(ranges[1], "bytes=%d-", &from)
	if from < killedAt || from >= int64(len(want)) {
		t.Fatalf("resumed with %q; killed with %d bytes on disk", ranges[1], killedAt)
	}
	t.Logf("killed at %d bytes, resumed from %d of %d", killedAt, from, len(want))
	if st := e.state(t, id); st.State != cache.Cached {
		t.Fatalf("final state %+v", st)
	}
}
