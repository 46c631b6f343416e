package e2e

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/disktest"
	"github.com/campusedge/campusedge/sync/internal/faultproxy"
)

type health struct {
	Status string
	Checks map[string]struct {
		OK     bool
		Detail string
	}
}

func getHealth(t *testing.T, url string) health {
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h health
	_ = json.NewDecoder(resp.Body).Decode(&h)
	return h
}

// TestFullDiskRefusesRetryablyAndLosesNothing: edged's data dir is a 64 MB
// disk (ext4 on a loop device, or tmpfs where loop devices are missing).
// The disk is filled by something else; /healthz turns degraded naming
// the disk and the bytes free, /metrics says full; every operation tried
// meanwhile (records through the API, classroom joins and hands on the
// control channel) is either stored (201/ack) or refused with a retryable
// answer (507/503 not_saved with Retry-After; control error not_saved),
// never 400. Once space is freed, everything refused is sent again and
// stored; the hub ends up holding every acknowledged record, and edge.db
// passes bbolt's consistency check.
func TestFullDiskRefusesRetryablyAndLosesNothing(t *testing.T) {
	mnt, kind := disktest.Small(t, 64)
	t.Logf("data disk: %s at %s", kind, mnt)
	dir := t.TempDir()
	hubDir, edgeDir := filepath.Join(dir, "hub"), filepath.Join(mnt, "edge")
	cli(t, "cityhub", "-data", hubDir, "school", "add", "s10", "第十中学")
	tok := strings.TrimSpace(cli(t, "cityhub", "-data", hubDir, "enrol-token", "s10"))
	hub, hubURL := start(t, "cityhub", "-data", hubDir, "-listen", "127.0.0.1:0")
	px, err := faultproxy.Start(faultproxy.Config{Target: strings.TrimPrefix(hubURL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	args := []string{"-data", edgeDir, "-listen", "127.0.0.1:0", "-mdns=false", "-https-listen", "off", "-cloud", "http://" + px.Addr(), "-school", "s10"}
	p, url := start(t, "edged", args...)
	e := &edgeAPI{t: t, url: url, admin: adminToken(t, edgeDir), dir: edgeDir, args: args, p: p}
	e.must(http.MethodPost, "/api/v1/sync/enrol", `{"token":"`+tok+`"}`, http.StatusOK)
	b := e.must(http.MethodPost, "/api/v1/classrooms", `{"name":"初三(2)班","room_code":"F32"}`, http.StatusCreated)
	var room struct{ ID string }
	_ = json.Unmarshal([]byte(b), &room)
	b = e.must(http.MethodPost, "/api/v1/sessions", `{"title":"化学","classrooms":["`+room.ID+`"]}`, http.StatusCreated)
	var s struct {
		ID     string
		Tokens struct {
			Master     string `json:"master"`
			Classrooms map[string]struct {
				Terminal  string `json:"terminal"`
				Assistant string `json:"assistant"`
			} `json:"classrooms"`
		} `json:"tokens"`
	}
	_ = json.Unmarshal([]byte(b), &s)
	e.must(http.MethodPost, "/api/v1/sessions/"+s.ID+"/start", "", http.StatusOK)
	req, _ := http.NewRequest(http.MethodPut, url+"/api/v1/attendance/roster", strings.NewReader("student_id,name,homeroom,groups\nf1,李雷,F32,\nf2,韩梅梅,F32,\n"))
	req.Header.Set("Authorization", "Bearer "+e.admin)
	req.Header.Set("Content-Type", "text/csv")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("roster import: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	// The class is under way before the disk fills: master, the room's
	// terminal and assistant are in, a quiz is open.
	conns := map[string]*wsReq{}
	for who, tok := range map[string]string{"master": s.Tokens.Master, "terminal": s.Tokens.Classrooms[room.ID].Terminal, "assistant": s.Tokens.Classrooms[room.ID].Assistant} {
		c, _, err := dialWS(ctx, url, tok)
		if err != nil {
			t.Fatal(err)
		}
		defer c.ws.Close()
		if r, err := c.request(ctx, map[string]any{"type": "join", "name": who}); err != nil || r["type"] != "ack" {
			t.Fatalf("%s join: %v %v", who, r, err)
		}
		conns[who] = c
	}
	if r, err := conns["master"].request(ctx, map[string]any{"type": "quiz", "question": map[string]any{"id": "q0", "kind": "single", "prompt": "H2O?", "options": []string{"水", "盐"}, "correct": []int{0}}}); err != nil || r["type"] != "ack" {
		t.Fatalf("quiz q0: %v %v", r, err)
	}
	// Hold the records on the edge while the disk is full: the WAN is cut.
	px.SetTarget("127.0.0.1:1")
	px.DropAll()

	disktest.Fill(t, filepath.Join(mnt, "filler"))
	deadline := time.Now().Add(15 * time.Second)
	var h health
	for h = getHealth(t, url); h.Status != "degraded" || h.Checks["disk"].OK; h = getHealth(t, url) {
		if time.Now().After(deadline) {
			t.Fatalf("/healthz on a full disk: %+v", h)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if d := h.Checks["disk"].Detail; !strings.Contains(d, edgeDir) || !strings.Contains(d, "bytes free") {
		t.Errorf("disk check does not name the disk and its free bytes: %q", d)
	}
	t.Logf("/healthz: %s — %s", h.Status, h.Checks["disk"].Detail)
	if _, m := e.do(http.MethodGet, "/metrics", ""); !strings.Contains(m, "campusedge_disk_full{") {
		t.Errorf("no disk gauge in /metrics")
	}

	// Operations during the full state.
	stored := map[string]bool{} // payload marker -> stored (201)
	var refused []string
	// The outbox keeps a few MiB past its data written (outbox.Config.
	// Preallocate): records go on being stored into that reserve after the
	// filler took the rest, so append until the store itself is full (8 KB
	// records: at most ~10 MB), and at least 40.
	for i := 0; i < 1200 && (i < 40 || len(refused) == 0); i++ {
		marker := fmt.Sprintf("full-%d", i)
		code, body := e.do(http.MethodPost, "/api/v1/sync/records", `{"kind":"fulldisk.test","payload":{"m":"`+marker+`","pad":"`+strings.Repeat("x", 8000)+`"}}`)
		switch code {
		case http.StatusCreated:
			stored[marker] = true
		case http.StatusInsufficientStorage, http.StatusServiceUnavailable:
			if !strings.Contains(body, `"not_saved"`) {
				t.Fatalf("refusal without not_saved: %d %s", code, body)
			}
			refused = append(refused, marker)
		default:
			t.Fatalf("a record on a full disk answered %d %s (want 201, or 507/503 not_saved)", code, body)
		}
	}
	// Class operations during the full state, one try each: acknowledged
	// (stored) or refused not_saved (nothing changed), nothing else.
	type op struct {
		who, what, key string
		msg            map[string]any
		acked          bool
	}
	ops := []*op{
		{who: "master", what: "quiz push", key: recordKey("quiz.question", s.ID, "", "", "q1"),
			msg: map[string]any{"type": "quiz", "question": map[string]any{"id": "q1", "kind": "single", "prompt": strings.Repeat("氧化还原反应。", 140), "options": []string{"对", "错"}, "correct": []int{0}}}},
		{who: "terminal", what: "answer", key: recordKey("quiz.answer", s.ID, room.ID, "", "q0"),
			msg: map[string]any{"type": "quiz_answer", "quiz_id": "q0", "choices": []int{0}}},
		{who: "terminal", what: "hand", key: recordKey("session.log", s.ID, room.ID, "", "hand"),
			msg: map[string]any{"type": "hand", "raised": true}},
		{who: "assistant", what: "mark", key: recordKey("attendance.mark", s.ID, room.ID, "f1", ""),
			msg: map[string]any{"type": "mark", "student_id": "f1", "status": "present"}},
		{who: "assistant", what: "mark", key: recordKey("attendance.mark", s.ID, room.ID, "f2", ""),
			msg: map[string]any{"type": "mark", "student_id": "f2", "status": "absent"}},
	}
	outcome := map[string]int{}
	for _, o := range ops {
		r, err := conns[o.who].requestOnce(ctx, o.msg)
		switch {
		case err != nil:
			t.Fatalf("%s on a full disk: %v", o.what, err)
		case r["type"] == "ack":
			o.acked = true
			outcome[o.what+" stored"]++
		case r["code"] == "not_saved":
			outcome[o.what+" refused"]++
		default:
			t.Fatalf("%s on a full disk answered %v (want ack or not_saved)", o.what, r)
		}
	}
	t.Logf("class operations on the full disk: %v", outcome)
	term, w, err := dialWS(ctx, url, s.Tokens.Classrooms[room.ID].Terminal)
	if err != nil {
		t.Fatal(err)
	}
	defer term.ws.Close()
	joinedAcked := false
	// One try, no retries: a full disk refuses (not_saved) or stores.
	r, err := term.requestOnce(ctx, map[string]any{"type": "join", "name": "初三(2)班"})
	switch {
	case err != nil:
		t.Fatal(err)
	case r["type"] == "ack":
		joinedAcked = true
	case r["code"] != "not_saved":
		t.Fatalf("join on a full disk: %v", r)
	}
	t.Logf("during the full state: %d records stored, %d refused retryably; join %v", len(stored), len(refused), r["type"])
	if len(refused) == 0 && joinedAcked {
		t.Fatalf("nothing was refused: the disk was not full for the store")
	}

	// Space comes back; everything refused is sent again.
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second)
	for h = getHealth(t, url); !h.Checks["disk"].OK; h = getHealth(t, url) {
		if time.Now().After(deadline) {
			t.Fatalf("/healthz after freeing space: %+v", h)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, marker := range refused {
		e.must(http.MethodPost, "/api/v1/sync/records", `{"kind":"fulldisk.test","payload":{"m":"`+marker+`"}}`, http.StatusCreated)
		stored[marker] = true
	}
	if !joinedAcked {
		if r, err := term.request(ctx, map[string]any{"type": "join", "name": "初三(2)班"}); err != nil || r["type"] != "ack" {
			t.Fatalf("join after freeing space: %v %v", r, err)
		}
	}
	for _, o := range ops {
		if o.acked {
			continue
		}
		if r, err := conns[o.who].request(ctx, o.msg); err != nil || r["type"] != "ack" {
			t.Fatalf("%s sent again after freeing space: %v %v", o.what, r, err)
		}
	}
	pid, _ := w["participant_id"].(string)

	// The WAN returns; everything reaches the hub.
	px.SetTarget(strings.TrimPrefix(hubURL, "http://"))
	deadline = time.Now().Add(60 * time.Second)
	for st := getStatus(t, url, e.admin); st.Backlog != 0; st = getStatus(t, url, e.admin) {
		if time.Now().After(deadline) {
			t.Fatalf("backlog not drained: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	term.ws.Close()
	for _, c := range conns {
		c.ws.Close()
	}
	p.stop(t)
	hub.stop(t)
	db, err := bolt.Open(filepath.Join(edgeDir, "edge.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var problems []error
	_ = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			problems = append(problems, err)
		}
		return nil
	})
	db.Close()
	if len(problems) > 0 {
		t.Fatalf("edge.db fails bbolt's check: %v", problems)
	}
	rows, err := csv.NewReader(strings.NewReader(cli(t, "cityhub", "-data", hubDir, "export-records", "s10"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	got, joinAtHub, have := map[string]bool{}, false, map[string]bool{}
	for _, row := range rows[1:] {
		var pl struct {
			M         string `json:"m"`
			Kind      string `json:"kind"`
			Session   string `json:"session_id"`
			Classroom string `json:"classroom_id"`
			Student   string `json:"student_id"`
			Data      struct {
				Participant string              `json:"participant"`
				QuizID      string              `json:"quiz_id"`
				Question    struct{ ID string } `json:"question"`
				Event       string              `json:"event"`
			} `json:"data"`
		}
		_ = json.Unmarshal([]byte(row[payloadColumn(t, rows[0])]), &pl)
		got[pl.M] = true
		if row[3] == "attendance.join" && pl.Data.Participant == pid {
			joinAtHub = true
		}
		have[recordKey(pl.Kind, pl.Session, pl.Classroom, pl.Student, pl.Data.QuizID+pl.Data.Question.ID+pl.Data.Event)] = true
	}
	for _, o := range ops {
		if !have[o.key] {
			t.Errorf("%s (acknowledged %s) never reached the hub: %s", o.what, map[bool]string{true: "on the full disk", false: "after a retry"}[o.acked], o.key)
		}
	}
	for m := range stored {
		if !got[m] {
			t.Errorf("record %s was stored (201) but never reached the hub", m)
		}
	}
	if !joinAtHub {
		t.Errorf("the acknowledged join of %s never reached the hub", pid)
	}
	t.Logf("after freeing space: all %d records and the join reached the hub; edge.db passes bbolt's check", len(stored))
}

// TestHubDiskFullIsRetried: cityhub's data dir is a 64 MB disk that fills
// up. Its sync endpoints answer 507 disk_full with Retry-After (never a
// refusal the edge would stop on), the edge keeps every record and shows
// the link down with the hub's reason, and once the hub's disk has room
// again the backlog drains: the hub holds every record the edge took.
func TestHubDiskFullIsRetried(t *testing.T) {
	mnt, kind := disktest.Small(t, 64)
	t.Logf("hub data disk: %s", kind)
	hubDir, edgeDir := filepath.Join(mnt, "hub"), filepath.Join(t.TempDir(), "edge")
	cli(t, "cityhub", "-data", hubDir, "school", "add", "s11", "第十一中学")
	tok := strings.TrimSpace(cli(t, "cityhub", "-data", hubDir, "enrol-token", "s11"))
	hub, hubURL := start(t, "cityhub", "-data", hubDir, "-listen", "127.0.0.1:0")
	args := []string{"-data", edgeDir, "-listen", "127.0.0.1:0", "-mdns=false", "-https-listen", "off", "-cloud", hubURL, "-school", "s11"}
	p, url := start(t, "edged", args...)
	e := &edgeAPI{t: t, url: url, admin: adminToken(t, edgeDir), dir: edgeDir, args: args, p: p}
	e.must(http.MethodPost, "/api/v1/sync/enrol", `{"token":"`+tok+`"}`, http.StatusOK)
	deadline := time.Now().Add(30 * time.Second)
	for st := getStatus(t, url, e.admin); st.Link != "up"; st = getStatus(t, url, e.admin) {
		if time.Now().After(deadline) {
			t.Fatalf("link not up: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	disktest.Fill(t, filepath.Join(mnt, "filler"))
	const n = 200
	for i := range n {
		e.must(http.MethodPost, "/api/v1/sync/records", fmt.Sprintf(`{"kind":"hubfull.test","payload":{"m":"h-%d","pad":"%s"}}`, i, strings.Repeat("y", 4000)), http.StatusCreated)
	}
	var st struct {
		Link      string `json:"link"`
		LastError string `json:"last_error"`
		Backlog   uint64 `json:"backlog"`
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		_ = json.Unmarshal([]byte(e.must(http.MethodGet, "/api/v1/sync", "", http.StatusOK)), &st)
		if st.Link == "down" && strings.Contains(st.LastError, "507") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge did not see the hub's full disk: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("hub disk full: edge link %s, backlog %d, last error %q", st.Link, st.Backlog, st.LastError)
	if st.Backlog == 0 {
		t.Fatal("the records left the edge though the hub could not store them")
	}
	resp, err := http.Get(hubURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), `cityhub_sync_rejected_requests_total{code="disk_full"}`) {
		t.Errorf("hub metrics do not count disk_full refusals")
	}

	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	deadline = time.Now().Add(90 * time.Second) // the uplink's backoff, at most 60 s
	for s := getStatus(t, url, e.admin); s.Backlog != 0; s = getStatus(t, url, e.admin) {
		if time.Now().After(deadline) {
			t.Fatalf("backlog not drained after the hub's disk had room: %+v", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("hub disk freed: backlog drained %v later (the uplink's backoff)", time.Since(freed).Round(time.Millisecond))
	p.stop(t)
	hub.stop(t)
	rows, err := csv.NewReader(strings.NewReader(cli(t, "cityhub", "-data", hubDir, "export-records", "s11"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, row := range rows[1:] {
		var pl struct{ M string }
		_ = json.Unmarshal([]byte(row[payloadColumn(t, rows[0])]), &pl)
		got[pl.M] = true
	}
	for i := range n {
		if !got[fmt.Sprintf("h-%d", i)] {
			t.Fatalf("record h-%d never reached the hub", i)
		}
	}
}

// payloadColumn finds the column of cityhub export-records that holds each
// record's whole payload.
func payloadColumn(t *testing.T, header []string) int {
	t.Helper()
	for i, h := range header {
		if strings.TrimPrefix(h, "\ufeff") == "payload" {
			return i
		}
	}
	t.Fatalf("export-records has no payload column: %q", header)
	return 0
}
