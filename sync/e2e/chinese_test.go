package e2e

import (
	"encoding/csv"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/text/encoding/simplifiedchinese"
)

// A Karamay school's files, as Chinese Excel saves plain CSV (GBK for the
// roster; GB18030 for the timetable, whose teacher's name has 𠮷, outside
// GBK), CRLF, a trailing empty line, Chinese headers and no codes.
const (
	zhRoster = "学号,姓名,班级,教学班\r\n" +
		"20250301,阿依古丽·吐尔逊,初一(3)班,数学提高班\r\n" +
		"20250302,王芳,初一(3)班,\r\n" +
		"20250401,李伟,初一(4)班,数学提高班\r\n\r\n"
	zhTimetable = "星期,节次,开始,结束,教室,教室代码,班级,科目,教师\r\n" +
		"周一,1,08:00,08:45,三楼多媒体教室,301,初一(3)班,数学,李老师\r\n" +
		"周二,2,09:00,09:45,物理实验室,lab-1,数学提高班,数学（提高）,𠮷祥老师\r\n\r\n"
)

// TestChineseSchoolDataRoundTrip: Chinese class, teacher and pupil names
// (a Uyghur name with its '·') go through cityhub's import, the downlink
// to a real edged, the edge's API (the console's roster view) and every
// export, and come out exactly as the school typed them; a file in no
// encoding is refused with the fix and changes nothing.
func TestChineseSchoolDataRoundTrip(t *testing.T) {
	dir := t.TempDir()
	hubDir, edgeDir := filepath.Join(dir, "hub"), filepath.Join(dir, "edge")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	gbk, err := simplifiedchinese.GBK.NewEncoder().Bytes([]byte(zhRoster))
	if err != nil {
		t.Fatal(err)
	}
	gb18030, err := simplifiedchinese.GB18030.NewEncoder().Bytes([]byte(zhTimetable))
	if err != nil {
		t.Fatal(err)
	}
	cli(t, "cityhub", "-data", hubDir, "school", "add", "kly1", "克拉玛依市第一中学")
	// Bytes in no encoding: refused with the fix, nothing imported.
	out, err := exec.Command(filepath.Join(binDir, "cityhub"), "-data", hubDir, "import-roster", "kly1", write("bad.csv", []byte("姓名,班级\r\n\x81\x20\xff,x\r\n"))).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "save it as CSV UTF-8") {
		t.Fatalf("file in no encoding: %v\n%s", err, out)
	}
	// The same on a Chinese operator's terminal: the problem in Chinese,
	// from the pages' catalogue.
	zhCmd := exec.Command(filepath.Join(binDir, "cityhub"), "-data", hubDir, "import-roster", "kly1", filepath.Join(dir, "bad.csv"))
	zhCmd.Env = append(os.Environ(), "LC_ALL=", "LC_MESSAGES=", "LANG=zh_CN.UTF-8")
	if out, err := zhCmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "文件编码不是 UTF-8、GBK 或 GB18030") || !strings.Contains(string(out), "没有导入任何数据") {
		t.Fatalf("file in no encoding, LANG=zh_CN.UTF-8: %v\n%s", err, out)
	}
	if out, err := exec.Command(filepath.Join(binDir, "cityhub"), "-data", hubDir, "export-roster", "kly1").CombinedOutput(); err == nil {
		t.Fatalf("a refused file left a roster behind:\n%s", out)
	}
	if got := cli(t, "cityhub", "-data", hubDir, "import-roster", "kly1", write("名单.csv", gbk)); !strings.Contains(got, "read as GBK (3 students)") {
		t.Fatalf("import-roster: %s", got)
	}
	if got := cli(t, "cityhub", "-data", hubDir, "import-timetable", "kly1", write("课表.csv", gb18030)); !strings.Contains(got, "read as GB18030 (2 periods)") {
		t.Fatalf("import-timetable: %s", got)
	}
	// The hub's exports: UTF-8 with BOM, the same data as imported.
	if got := cli(t, "cityhub", "-data", hubDir, "export-roster", "kly1"); !sameRoster(t, got, zhRoster) || !strings.Contains(got, "阿依古丽·吐尔逊,初一(3)班") {
		t.Fatalf("export-roster:\n%s", got)
	}
	if got := cli(t, "cityhub", "-data", hubDir, "export-timetable", "kly1"); !sameTimetable(t, got, zhTimetable) || !strings.Contains(got, "𠮷祥老师") {
		t.Fatalf("export-timetable:\n%s", got)
	}

	tok := strings.TrimSpace(cli(t, "cityhub", "-data", hubDir, "enrol-token", "kly1"))
	hubP, hubURL := start(t, "cityhub", "-data", hubDir, "-listen", "127.0.0.1:0")
	edge, url := start(t, "edged", "-data", edgeDir, "-listen", "127.0.0.1:0", "-mdns=false", "-cloud", hubURL, "-school", "kly1")
	admin := adminToken(t, edgeDir)
	post := func(path, body string) {
		req, _ := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode/100 != 2 {
			t.Fatalf("POST %s: %v %v", path, err, resp.Status)
		}
		resp.Body.Close()
	}
	post("/api/v1/sync/enrol", `{"token":"`+tok+`"}`)
	deadline := time.Now().Add(30 * time.Second)
	var roster struct {
		Source   string `json:"source"`
		Students []struct{ ID, Name, Homeroom string }
		Classes  []struct{ Code, Name string }
	}
	for {
		// The console's view of the roster: what the attendance panel shows.
		st, body := get(t, url+"/api/v1/attendance/roster", admin)
		if st == http.StatusOK && json.Unmarshal([]byte(body), &roster) == nil && roster.Source == "sync" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("roster did not arrive: %d %s", st, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(roster.Students) != 3 || roster.Students[0].Name != "阿依古丽·吐尔逊" || roster.Students[0].ID != "20250301" {
		t.Fatalf("roster on the edge: %+v", roster)
	}
	names := map[string]string{}
	for _, c := range roster.Classes {
		names[c.Code] = c.Name
	}
	if names[roster.Students[0].Homeroom] != "初一(3)班" || names[roster.Students[2].Homeroom] != "初一(4)班" {
		t.Fatalf("class names on the edge: %+v", roster.Classes)
	}
	for {
		st, body := get(t, url+"/api/v1/sync/timetable", admin)
		if st == http.StatusOK {
			if !strings.Contains(body, `"teacher_name":"𠮷祥老师"`) || !strings.Contains(body, `"room_name":"三楼多媒体教室"`) || !strings.Contains(body, `"group_name":"初一(3)班"`) {
				t.Fatalf("timetable on the edge: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("timetable did not arrive: %d %s", st, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, body := get(t, url+"/api/v1/sync/roster?format=csv", admin); st != http.StatusOK || !sameRoster(t, body, zhRoster) {
		t.Fatalf("edge roster CSV: %d\n%s", st, body)
	}

	// A mark for a pupil goes up and export-records names the pupil and
	// the classroom, in one column each, with the school's local time.
	post("/api/v1/sync/records", `{"kind":"attendance.mark","payload":{"kind":"attendance.mark","session_id":"s1","classroom_id":"c-x","classroom_name":"初一(3)班教室","student_id":"20250301","at":"2026-12-02T01:30:00Z","data":{"status":"present"}}}`)
	for {
		var s syncStatus
		if s = getStatus(t, url, admin); s.Backlog == 0 && s.AckedSeq > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("record not acknowledged: %+v\n%s", s, edge.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	edge.stop(t)
	hubP.stop(t)
	exp := cli(t, "cityhub", "-data", hubDir, "export-records", "kly1")
	if !strings.HasPrefix(exp, "\ufeff") || !strings.Contains(exp, "\r\n") {
		t.Errorf("export-records is not UTF-8 with BOM and CRLF")
	}
	rows, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(exp, "\ufeff"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	var found bool
	for _, r := range rows[1:] {
		if r[col["kind"]] == "attendance.mark" {
			found = r[col["classroom"]] == "初一(3)班教室" && r[col["student"]] == "阿依古丽·吐尔逊" && r[col["student_id"]] == "20250301"
			if !found {
				t.Errorf("record row: %q", r)
			}
		}
	}
	if !found {
		t.Fatalf("no attendance row in export-records:\n%s", exp)
	}
}
