package e2e

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// signIn tries to sign in on the edge at url; it returns the status.
func signIn(t *testing.T, url, id, password string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/api/v1/auth/signin", strings.NewReader(`{"id":"`+id+`","password":"`+password+`"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStaffFromCityToEdge: the city imports a school's staff CSV with
// cityhub (a bad one is refused by row), the school's edged pulls it by
// the downlink and the staff sign in with their initial password or PIN;
// the city then imports a list without one teacher, and after the next
// downlink that teacher can no longer sign in while the others can. The
// hub keeps only argon2id hashes.
func TestStaffFromCityToEdge(t *testing.T) {
	dir := t.TempDir()
	hubDir, edgeDir := filepath.Join(dir, "hub"), filepath.Join(dir, "edge")
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cli(t, "cityhub", "-data", hubDir, "school", "add", "s7", "No. 7 Primary")
	const header = "staff_id,name,roles,rooms,secret\n"
	staffCSV := header +
		"wang.li,Wang Li,teacher,,maths-teacher-7\n" +
		"zhao.min,赵敏,teacher;admin,,135790\n" +
		"chen.jing,Chen Jing,assistant,R204;R205,assist-pass-1\n"
	out, err := runCLI("cityhub", "-data", hubDir, "import-staff", "s7", write("bad.csv", header+"Bad Id,X,teacher,,\nok.one,,chief,,123\n"))
	if err == nil || !strings.Contains(out, "row 2, column staff_id") || !strings.Contains(out, "row 3, column roles") || !strings.Contains(out, "row 3, column secret") {
		t.Fatalf("bad staff import: %v\n%s", err, out)
	}
	cli(t, "cityhub", "-data", hubDir, "import-staff", "s7", write("staff.csv", staffCSV))
	if got := cli(t, "cityhub", "-data", hubDir, "export-staff", "s7"); strings.Contains(got, "maths-teacher-7") || !strings.Contains(got, "chen.jing,Chen Jing,assistant,R204;R205,") {
		t.Fatalf("hub export-staff (no secrets, lists kept):\n%s", got)
	}
	tok := strings.TrimSpace(cli(t, "cityhub", "-data", hubDir, "enrol-token", "s7"))
	hub, hubURL := start(t, "cityhub", "-data", hubDir, "-listen", "127.0.0.1:0")
	edge, url := start(t, "edged", "-data", edgeDir, "-listen", "127.0.0.1:0", "-mdns=false", "-cloud", hubURL, "-school", "s7")
	admin := adminToken(t, edgeDir)
	if st, body := signIn(t, url, "wang.li", "maths-teacher-7"); st != http.StatusUnauthorized {
		t.Fatalf("sign-in before the staff arrived: %d %s", st, body)
	}
	req, _ := http.NewRequest(http.MethodPost, url+"/api/v1/sync/enrol", strings.NewReader(`{"token":"`+tok+`"}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("enrol: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	waitSignIn := func(id, password string, want int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, body := signIn(t, url, id, password)
			if st == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("sign-in as %s: %d %s, want %d", id, st, body, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitSignIn("wang.li", "maths-teacher-7", http.StatusOK)
	waitSignIn("zhao.min", "135790", http.StatusOK)
	waitSignIn("chen.jing", "assist-pass-1", http.StatusOK)
	if st, body := get(t, url+"/api/v1/staff", admin); st != http.StatusOK || !strings.Contains(body, `"source":"city"`) || !strings.Contains(body, `"classrooms":["R204","R205"]`) {
		t.Fatalf("edge staff list: %d %s", st, body)
	}

	// The city removes Wang Li (the bbolt hub is stopped for the import;
	// a PostgreSQL one imports beside running replicas). After the next
	// downlink (edged pulls when it starts, and every minute) the sign-in
	// is refused.
	hub.stop(t)
	edge.stop(t)
	cli(t, "cityhub", "-data", hubDir, "import-staff", "s7", write("staff2.csv", header+
		"zhao.min,赵敏,teacher;admin,,135790\n"+
		"chen.jing,Chen Jing,assistant,R204;R205,\n"))
	_, hubURL = start(t, "cityhub", "-data", hubDir, "-listen", "127.0.0.1:0")
	_, url = start(t, "edged", "-data", edgeDir, "-listen", "127.0.0.1:0", "-mdns=false", "-cloud", hubURL, "-school", "s7")
	waitSignIn("wang.li", "maths-teacher-7", http.StatusUnauthorized)
	// An empty secret keeps the one the person has.
	waitSignIn("chen.jing", "assist-pass-1", http.StatusOK)
	waitSignIn("zhao.min", "135790", http.StatusOK)
	if st, body := get(t, url+"/api/v1/audit", admin); st != http.StatusOK || !strings.Contains(body, `"action":"staff.delete","target":"wang.li"`) {
		t.Fatalf("audit log: %d %s", st, body)
	}
	// The hub keeps argon2id hashes only.
	hubData, err := os.ReadFile(filepath.Join(hubDir, "sync.db"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(hubData), "maths-teacher-7") || !strings.Contains(string(hubData), "$argon2id$v=19$") {
		t.Error("the hub's store holds a secret in clear, or no argon2id hash")
	}
}

// runCLI runs a built binary and returns its combined output and error.
func runCLI(name string, args ...string) (string, error) {
	out, err := exec.Command(filepath.Join(binDir, name), args...).CombinedOutput()
	return string(out), err
}
