package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestImportThenServe(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	os.MkdirAll(in, 0o700)
	os.WriteFile(filepath.Join(in, "lesson.mp4"), []byte("video bytes"), 0o600)
	os.WriteFile(filepath.Join(in, "quiz.pdf"), []byte("pdf bytes"), 0o600)

	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"-data", filepath.Join(dir, "hub"), "import", in}, &out, &errb, nil); code != 0 {
		t.Fatalf("import exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("import printed %q", out.String())
	}
	id, path, ok := strings.Cut(lines[0], "\t")
	if !ok || path != filepath.Join(in, "lesson.mp4") || id == "" {
		t.Fatalf("line %q is not ID<TAB>PATH", lines[0])
	}
	if code := run(context.Background(), []string{"-data", dir, "bogus"}, &out, &errb, nil); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}

	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan int, 1)
	var logb bytes.Buffer
	go func() {
		done <- run(ctx, []string{"-data", filepath.Join(dir, "hub"), "-listen", "127.0.0.1:0"}, &bytes.Buffer{}, &logb, func(a, _ net.Addr) { addrc <- a })
	}()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case <-time.After(5 * time.Second):
		t.Fatal("hub did not start")
	}
	resp, err := staffGet(t, filepath.Join(dir, "hub"), "http://"+addr.String()+"/api/v1/catalog")
	if err != nil {
		t.Fatal(err)
	}
	var page struct{ Items []struct{ ID string } }
	json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if len(page.Items) != 2 || page.Items[0].ID != id {
		t.Fatalf("catalogue = %+v", page)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve exit %d", code)
	}
	if !strings.Contains(logb.String(), "level=INFO msg=listening addr=127.0.0.1:") {
		t.Fatalf("no listening line in log:\n%s", logb.String())
	}
}

// staffGet is GET with the hub's staff credential (hub is its data dir).
func staffGet(t *testing.T, hub, url string) (*http.Response, error) {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(hub, "staff-token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	return http.DefaultClient.Do(req)
}
