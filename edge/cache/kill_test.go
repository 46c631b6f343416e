package cache_test

import (
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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/edge/cache"
)

// startBin starts a binary until the test ends and returns it with the
// address it logs as listening.
func startBin(t *testing.T, bin string, args ...string) (*bintest.Process, string) {
	t.Helper()
	p := bintest.Serve(t, bin, args...)
	return p, p.Addr
}

// testSchool is the school the real-binary tests enrol their edge in: the
// hub serves its catalogue and content only to enrolled edges.
const testSchool = "s1"

// hubEnrolToken registers testSchool on the hub (stopped: the command
// takes the store's lock) and returns a one-time enrolment token.
func hubEnrolToken(t *testing.T, cityhub, hubData string) string {
	t.Helper()
	if out, err := exec.Command(cityhub, "-data", hubData, "school", "add", testSchool, "Test School").CombinedOutput(); err != nil {
		t.Fatalf("cityhub school add: %v %s", err, out)
	}
	out, err := exec.Command(cityhub, "-data", hubData, "enrol-token", testSchool).Output()
	if err != nil {
		t.Fatalf("cityhub enrol-token: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// enrolEdge enrols the (stopped) edge at data with the hub at cloud.
func enrolEdge(t *testing.T, edged, data, cloud, tok string) {
	t.Helper()
	if out, err := exec.Command(edged, "enrol", "-data", data, "-cloud", cloud, "-token", tok).CombinedOutput(); err != nil {
		t.Fatalf("edged enrol: %v %s", err, out)
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
	bins := buildBins(t, dir, "edged", "cityhub")
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

	enrolTok := hubEnrolToken(t, bins["cityhub"], filepath.Join(dir, "hub"))
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
	enrolEdge(t, bins["edged"], data, link.URL, enrolTok)
	args := []string{"-data", data, "-listen", "127.0.0.1:0", "-mdns=false", "-cloud", link.URL, "-school", testSchool}
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
	if err := edged.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-edged.Done()
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
