package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/sync/schooldata"
)

const rosterCSV = "student_id,name,homeroom,groups\n" +
	"s0001,Li Wei,7A,math-7-1;phys-a\n" +
	"s0002,\"Zhang, Min\",7B,math-7-1\n" +
	"s0003,Wang Fang,7A,\n"

const timetableCSV = "day,period,start,end,room,group,subject,teacher,resources\n" +
	"mon,1,08:00,08:45,r101,7A,Mathematics,t-zhao,ml-fractions-1;ml-fractions-2\n" +
	"mon,1,08:00,08:45,r102,math-7-1,Mathematics (set 1),t-qian,\n" +
	"tue,2,09:00,09:45,r101,7A,Physics,t-sun,ml-optics\n"

func get(t *testing.T, url, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDownlinkFromCSVToEdge drives the downlink as an operator would: a
// bad CSV is refused with row numbers and imports nothing, good CSVs are
// imported with cityhub, a running edged pulls them, and its API gives the
// same CSV back; the hub's export gives it back too.
func TestDownlinkFromCSVToEdge(t *testing.T) {
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
	bad := write("bad.csv", rosterCSV+"s0004,,7C,\ns0001,Again,7C,\n")
	cmd := exec.Command(filepath.Join(binDir, "cityhub"), "-data", hubDir, "import-roster", "s7", bad)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "row 5, column name") || !strings.Contains(string(out), "row 6, column student_id: s0001 (Again) is already on row 2") {
		t.Fatalf("bad roster import: %v\n%s", err, out)
	}
	if out, err := exec.Command(filepath.Join(binDir, "cityhub"), "-data", hubDir, "export-roster", "s7").CombinedOutput(); err == nil {
		t.Fatalf("a refused import left a roster behind:\n%s", out)
	}
	cli(t, "cityhub", "-data", hubDir, "import-roster", "s7", write("roster.csv", rosterCSV))
	cli(t, "cityhub", "-data", hubDir, "import-timetable", "s7", write("tt.csv", timetableCSV))
	if got := cli(t, "cityhub", "-data", hubDir, "export-roster", "s7"); !sameRoster(t, got, rosterCSV) {
		t.Fatalf("hub export-roster:\n%s", got)
	}
	tok := strings.TrimSpace(cli(t, "cityhub", "-data", hubDir, "enrol-token", "s7"))
	_, hubURL := start(t, "cityhub", "-data", hubDir, "-listen", "127.0.0.1:0")
	_, url := start(t, "edged", "-data", edgeDir, "-listen", "127.0.0.1:0", "-mdns=false", "-cloud", hubURL, "-school", "s7")
	admin := adminToken(t, edgeDir)
	if st, body := get(t, url+"/api/v1/sync/roster", admin); st != http.StatusNotFound || !strings.Contains(body, "not_synced") {
		t.Fatalf("roster before enrolment: %d %s", st, body)
	}
	req, _ := http.NewRequest(http.MethodPost, url+"/api/v1/sync/enrol", strings.NewReader(`{"token":"`+tok+`"}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("enrol through the API: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, body := get(t, url+"/api/v1/sync/timetable?format=csv", admin)
		if st == http.StatusOK {
			if !sameTimetable(t, body, timetableCSV) {
				t.Fatalf("edge timetable CSV:\n%s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("timetable did not arrive: %d %s", st, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, body := get(t, url+"/api/v1/sync/roster?format=csv", admin); st != http.StatusOK || !sameRoster(t, body, rosterCSV) {
		t.Fatalf("edge roster CSV: %d\n%s", st, body)
	}
	if st, body := get(t, url+"/api/v1/sync/roster", ""); st != http.StatusUnauthorized {
		t.Fatalf("roster without admin token: %d %s", st, body)
	}
	// The timetable drives the cache's prefetch: the periods of the next
	// week that name lessons become prefetch entries ("tt-…"); r102's
	// period names none.
	allowed := map[string]bool{"ml-fractions-1+ml-fractions-2": true, "ml-optics": true}
	for {
		_, body := get(t, url+"/api/v1/cache/timetable", admin)
		var tt struct {
			Entries []struct {
				ID        string   `json:"id"`
				Classroom string   `json:"classroom"`
				Resources []string `json:"resources"`
			} `json:"entries"`
		}
		if err := json.Unmarshal([]byte(body), &tt); err != nil {
			t.Fatalf("cache timetable: %v: %s", err, body)
		}
		found := 0
		for _, e := range tt.Entries {
			if !strings.HasPrefix(e.ID, "tt-") {
				continue
			}
			if e.Classroom != "r101" || !allowed[strings.Join(e.Resources, "+")] {
				t.Fatalf("prefetch entry not from the timetable: %+v", e)
			}
			found++
		}
		if found > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no prefetch entries from the timetable: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sameRoster reports whether an exported roster (UTF-8 with BOM, with the
// code columns) holds the same roster as the CSV imported.
func sameRoster(t *testing.T, exported, imported string) bool {
	t.Helper()
	if !strings.HasPrefix(exported, "\ufeff") {
		t.Errorf("export without a UTF-8 BOM (Chinese Excel would read it as GBK)")
	}
	a, err1 := schooldata.ParseRosterCSV(strings.NewReader(exported))
	b, err2 := schooldata.ParseRosterCSV(strings.NewReader(imported))
	return err1 == nil && err2 == nil && reflect.DeepEqual(a, b)
}

// sameTimetable is sameRoster for timetables.
func sameTimetable(t *testing.T, exported, imported string) bool {
	t.Helper()
	if !strings.HasPrefix(exported, "\ufeff") {
		t.Errorf("export without a UTF-8 BOM")
	}
	a, err1 := schooldata.ParseTimetableCSV(strings.NewReader(exported))
	b, err2 := schooldata.ParseTimetableCSV(strings.NewReader(imported))
	return err1 == nil && err2 == nil && reflect.DeepEqual(a, b)
}
