package e2e

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	bolt "go.etcd.io/bbolt"
)

func TestEdgeAnswersAndGuardsAdminCalls(t *testing.T) {
	e := startEdge(t, t.TempDir(), "127.0.0.1:0")
	info, err := os.Stat(filepath.Join(e.data, "admin-token"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("admin-token: %v mode %v, want 0600", err, info.Mode())
	}
	if !strings.Contains(e.logs(), "admin-token") {
		t.Errorf("first start does not name the admin token file in the log:\n%s", e.logs())
	}
	var h struct {
		Status string
		Checks map[string]struct{ OK bool }
	}
	if code := call(t, "GET", e.url+"/healthz", "", nil, &h); code != 200 || h.Status != "ok" || !h.Checks["store"].OK {
		t.Fatalf("/healthz %d %+v", code, h)
	}
	var info2 struct{ ID, Version, School string }
	if code := call(t, "GET", e.url+"/api/v1/edge", "", nil, &info2); code != 200 || len(info2.ID) != 10 || info2.Version == "" {
		t.Fatalf("/api/v1/edge %d %+v", code, info2)
	}
	// The token must never be stored in plain text.
	db, _ := os.ReadFile(filepath.Join(e.data, "edge.db"))
	if bytes.Contains(db, []byte(e.token)) {
		t.Fatal("edge.db contains the plain admin token")
	}
	for _, p := range []string{"/api/v1/classrooms", "/api/v1/terminals"} {
		var eb struct {
			Error struct{ Code, Message string }
		}
		if code := call(t, "GET", e.url+p, "", nil, &eb); code != 401 || eb.Error.Code != "unauthorized" {
			t.Errorf("GET %s without token: %d %+v", p, code, eb)
		}
		if code := call(t, "GET", e.url+p, "wrong", nil, &eb); code != 401 {
			t.Errorf("GET %s with a wrong token: %d", p, code)
		}
	}
	var eb struct {
		Error struct{ Code, Message string }
	}
	if code := call(t, "POST", e.url+"/api/v1/classrooms", e.token, map[string]string{"name": "", "room_code": "bad code!"}, &eb); code != 400 || eb.Error.Code != "invalid" {
		t.Errorf("bad classroom: %d %+v", code, eb)
	}
	if code := call(t, "POST", e.url+"/api/v1/classrooms", e.token, map[string]string{"name": strings.Repeat("x", 70<<10)}, &eb); code != 413 {
		t.Errorf("oversized body: %d %+v", code, eb)
	}
	if code := call(t, "GET", e.url+"/api/v1/nope", e.token, nil, &eb); code != 404 || eb.Error.Code != "not_found" {
		t.Errorf("unknown endpoint: %d %+v", code, eb)
	}
	res := httpGet(t, e.url+"/metrics")
	if !strings.Contains(res, "campusedge_terminals_online") || !strings.Contains(res, "go_goroutines") {
		t.Errorf("/metrics lacks the edge's gauges:\n%.500s", res)
	}
	if page := httpGet(t, e.url+"/"); !strings.Contains(page, "CampusEdge console") {
		t.Errorf("console not served at /")
	}
	e.signal(t, syscall.SIGTERM)
	if code := e.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("edged exit code %d after SIGTERM:\n%s", code, e.logs())
	}
	if !strings.Contains(e.logs(), "store closed") {
		t.Errorf("graceful shutdown did not close the store:\n%s", e.logs())
	}
}

var pairedRE = regexp.MustCompile(`msg=paired terminal=(\S+)`)
var connectedRE = regexp.MustCompile(`msg=connected `)

func pairErr(t *testing.T, e *edge, code string) string {
	t.Helper()
	var eb struct {
		Error struct{ Code, Message string }
	}
	st := call(t, "POST", e.url+"/api/v1/pair", "", map[string]string{"code": code, "name": "probe"}, &eb)
	if st < 400 {
		t.Fatalf("pairing with %q succeeded (%d), want a refusal", code, st)
	}
	return eb.Error.Code
}

// pairFrom pairs with code over plain HTTP from the local address from
// (another device on loopback) and returns the status and error code.
func pairFrom(t *testing.T, e *edge, from, code string) (int, string) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	defer c.CloseIdleConnections()
	b, _ := json.Marshal(map[string]string{"code": code, "name": "probe"})
	resp, err := c.Post(e.url+"/api/v1/pair", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb struct {
		Error struct{ Code, Message string }
	}
	_ = json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb.Error.Code
}

func TestPairingWithRealClassterm(t *testing.T) {
	e := startEdge(t, t.TempDir(), "127.0.0.1:0")
	room := e.classroom(t, "Grade 7 Class 2", "R204")
	w := e.watch(t)
	w.until(t, 5*time.Second, "snapshot", func(map[string]bool) bool { return true })

	// A good code: classterm pairs, keeps its credential, and goes online.
	code := e.pairingCode(t, room.ID)
	termData := t.TempDir()
	ct := start(t, built.classterm, "-data", termData, "-edge", e.url, "-pair", code, "-name", "board-1")
	id := ct.waitLine(t, pairedRE, 10*time.Second)[1]
	w.until(t, 10*time.Second, "terminal online", func(o map[string]bool) bool { return o[id] })
	st, err := os.Stat(filepath.Join(termData, "terminal.json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credential file: %v", err)
	}
	var list struct{ Terminals []terminal }
	call(t, "GET", e.url+"/api/v1/terminals", e.token, nil, &list)
	if len(list.Terminals) != 1 || !list.Terminals[0].Online || list.Terminals[0].ClassroomID != room.ID || list.Terminals[0].Addr != "127.0.0.1" || list.Terminals[0].Version == "" {
		t.Fatalf("terminal list after pairing: %+v", list.Terminals)
	}

	// The same code again: used.
	bad := start(t, built.classterm, "-data", t.TempDir(), "-edge", e.url, "-pair", code)
	if c := bad.wait(t, 10*time.Second); c == 0 || !strings.Contains(bad.logs(), "pairing_code_used") {
		t.Fatalf("reused code: exit %d\n%s", c, bad.logs())
	}

	// A wrong code through the real binary: refused with a clear message.
	wrong := otherCode(code)
	bad = start(t, built.classterm, "-data", t.TempDir(), "-edge", e.url, "-pair", wrong)
	if c := bad.wait(t, 10*time.Second); c == 0 || !strings.Contains(bad.logs(), "pairing_code_wrong") {
		t.Fatalf("wrong code: exit %d\n%s", c, bad.logs())
	}

	// Back-off per address (issue 14 finding 9: five wrong codes from any
	// device locked pairing for the whole edge, the right code included).
	// After three wrong codes this device (127.0.0.4, fresh: the wrong
	// classterm above came from 127.0.0.1) waits; the right code from
	// another device still pairs.
	fresh := e.pairingCode(t, room.ID)
	for i := range 3 {
		if _, got := pairFrom(t, e, "127.0.0.4", otherCode(fresh)); got != "pairing_code_wrong" {
			t.Fatalf("wrong try %d: %s", i+1, got)
		}
	}
	if _, got := pairFrom(t, e, "127.0.0.4", otherCode(fresh)); got != "pairing_backoff" {
		t.Fatalf("4th wrong try from one device: %s, want pairing_backoff", got)
	}
	if _, got := pairFrom(t, e, "127.0.0.4", fresh); got != "pairing_backoff" {
		t.Fatalf("right code from the backing-off device: %s, want pairing_backoff", got)
	}
	if st, got := pairFrom(t, e, "127.0.0.2", fresh); st != http.StatusCreated {
		t.Fatalf("right code from another device: %d %s, want it paired", st, got)
	}
	// A malformed code is a clear 400, not a counted try.
	if _, got := pairFrom(t, e, "127.0.0.3", "12ab"); got != "invalid" {
		t.Fatalf("malformed code: %s", got)
	}

	// Expired: make the code's deadline pass in the real store while edged
	// is stopped (no test-only clock in the binary).
	again := e.pairingCode(t, room.ID) // lifts the lock
	e.signal(t, syscall.SIGTERM)
	e.wait(t, 10*time.Second)
	expireCode(t, e.data, again)
	e2 := startEdge(t, e.data, "127.0.0.1:0")
	bad = start(t, built.classterm, "-data", t.TempDir(), "-edge", e2.url, "-pair", again)
	if c := bad.wait(t, 10*time.Second); c == 0 || !strings.Contains(bad.logs(), "pairing_code_expired") {
		t.Fatalf("expired code: exit %d\n%s", c, bad.logs())
	}
}

// otherCode returns a valid-looking code that differs from code.
func otherCode(code string) string {
	b := []byte(code)
	b[0] = '0' + (b[0]-'0'+1)%10
	return string(b)
}

func expireCode(t *testing.T, data, code string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(data, "edge.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("pairing"))
		var p map[string]any
		if err := json.Unmarshal(b.Get([]byte(code)), &p); err != nil {
			return err
		}
		p["expires_at"] = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
		v, _ := json.Marshal(p)
		return b.Put([]byte(code), v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTerminalsComeBackAfterEdgeRestart(t *testing.T) {
	data := t.TempDir()
	e := startEdge(t, data, "127.0.0.1:0")
	addr := strings.TrimPrefix(e.url, "http://")
	room := e.classroom(t, "Grade 8 Class 1", "R301")
	const n = 4
	ids := map[string]bool{}
	for i := range n {
		ct := start(t, built.classterm, "-data", t.TempDir(), "-edge", e.url, "-pair", e.pairingCode(t, room.ID), "-name", "t"+string(rune('a'+i)))
		ids[ct.waitLine(t, pairedRE, 10*time.Second)[1]] = true
	}
	allOnline := func(o map[string]bool) bool {
		for id := range ids {
			if !o[id] {
				return false
			}
		}
		return true
	}
	e.watch(t).until(t, 15*time.Second, "all terminals online", allOnline)

	e.signal(t, syscall.SIGTERM)
	if c := e.wait(t, 10*time.Second); c != 0 {
		t.Fatalf("edged exit %d; log:\n%s", c, e.logs())
	}
	// Same port, as on a real appliance; the terminals know only that URL.
	var e2 *edge
	for i := 0; ; i++ {
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			e2 = startEdge(t, data, addr)
			break
		}
		if i > 50 {
			t.Fatalf("port %s did not free up", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	w := e2.watch(t)
	w.until(t, 30*time.Second, "all terminals back online after restart", allOnline)
}

func TestSecondEdgedOnSameDataDirFailsFast(t *testing.T) {
	data := t.TempDir()
	startEdge(t, data, "127.0.0.1:0")
	began := time.Now()
	second := start(t, built.edged, "-data", data, "-listen", "127.0.0.1:0", "-mdns=false")
	code := second.wait(t, 5*time.Second)
	took := time.Since(began)
	if code == 0 || took > 2*time.Second {
		t.Fatalf("second edged: exit %d after %s, want non-zero within 2s", code, took)
	}
	if !strings.Contains(second.logs(), "another edged already running on this data dir") {
		t.Fatalf("message does not say why:\n%s", second.logs())
	}
}

func TestCorruptOrForeignStoreIsRefusedNotReplaced(t *testing.T) {
	t.Run("corrupt", func(t *testing.T) {
		data := t.TempDir()
		junk := bytes.Repeat([]byte("not a database "), 4096)
		path := filepath.Join(data, "edge.db")
		if err := os.WriteFile(path, junk, 0o600); err != nil {
			t.Fatal(err)
		}
		p := start(t, built.edged, "-data", data, "-listen", "127.0.0.1:0", "-mdns=false")
		if c := p.wait(t, 5*time.Second); c == 0 {
			t.Fatal("edged started on a corrupt store")
		}
		if !strings.Contains(p.logs(), path) || !strings.Contains(p.logs(), "corrupt") {
			t.Fatalf("message does not name the file:\n%s", p.logs())
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(after, junk) {
			t.Fatal("corrupt store was modified")
		}
	})
	t.Run("foreign", func(t *testing.T) {
		data := t.TempDir()
		path := filepath.Join(data, "edge.db")
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte("someone-elses"))
			if err != nil {
				return err
			}
			return b.Put([]byte("k"), []byte("v"))
		}); err != nil {
			t.Fatal(err)
		}
		db.Close()
		before, _ := os.ReadFile(path)
		p := start(t, built.edged, "-data", data, "-listen", "127.0.0.1:0", "-mdns=false")
		if c := p.wait(t, 5*time.Second); c == 0 {
			t.Fatal("edged started on another program's bbolt file")
		}
		if !strings.Contains(p.logs(), path) || !strings.Contains(p.logs(), "another program") {
			t.Fatalf("message does not name the file:\n%s", p.logs())
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
			t.Fatal("foreign store was modified")
		}
	})
}

// TestResetAdminToken: the waits below are deadlines, not timings: a loaded
// CI machine once took over 5 s to start a race-built binary.
func TestResetAdminToken(t *testing.T) {
	data := t.TempDir()
	e := startEdge(t, data, "127.0.0.1:0")
	old := e.token
	// While edged runs the store is locked: the reset must refuse, not hang.
	p := start(t, built.edged, "reset-admin-token", "-data", data)
	if c := p.wait(t, 20*time.Second); c == 0 {
		t.Fatal("reset succeeded while edged holds the store")
	}
	e.signal(t, syscall.SIGTERM)
	e.wait(t, 10*time.Second)
	p = start(t, built.edged, "reset-admin-token", "-data", data)
	if c := p.wait(t, 20*time.Second); c != 0 {
		t.Fatalf("reset: exit %d\n%s", c, p.logs())
	}
	e2 := startEdge(t, data, "127.0.0.1:0")
	if e2.token == old {
		t.Fatal("token file unchanged")
	}
	if code := call(t, "GET", e2.url+"/api/v1/classrooms", old, nil, nil); code != 401 {
		t.Errorf("old token: %d", code)
	}
	if code := call(t, "GET", e2.url+"/api/v1/classrooms", e2.token, nil, nil); code != 200 {
		t.Errorf("new token: %d", code)
	}
}

func TestControlChannelRefusesBadInput(t *testing.T) {
	e := startEdge(t, t.TempDir(), "127.0.0.1:0")
	room := e.classroom(t, "Grade 9", "R9")
	termData := t.TempDir()
	ct := start(t, built.classterm, "-data", termData, "-edge", e.url, "-pair", e.pairingCode(t, room.ID))
	ct.waitLine(t, connectedRE, 10*time.Second)
	ct.signal(t, syscall.SIGTERM)
	if c := ct.wait(t, 10*time.Second); c != 0 {
		t.Fatalf("classterm exit %d on SIGTERM", c)
	}

	// A forged credential: classterm stops and says to pair again.
	path := filepath.Join(termData, "terminal.json")
	raw, _ := os.ReadFile(path)
	var st map[string]string
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	good := st["token"]
	st["token"] = strings.SplitN(good, ".", 2)[0] + ".forged"
	raw, _ = json.Marshal(st)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	forged := start(t, built.classterm, "-data", termData)
	if c := forged.wait(t, 10*time.Second); c == 0 || !strings.Contains(forged.logs(), "pair again") {
		t.Fatalf("forged credential: exit %d\n%s", c, forged.logs())
	}

	// Raw WebSocket: garbage and unknown types get errors and the
	// connection stays; the terminal is still online afterwards.
	ws := dialWS(t, e)
	hello := map[string]any{"type": "hello", "v": 1, "token": good}
	if err := ws.WriteJSON(hello); err != nil {
		t.Fatal(err)
	}
	expectType(t, ws, "welcome", "")
	for _, msg := range []string{`{not json`, `{"type":"hello","v":9}`, `{"type":"no_such_thing","v":1}`} {
		if err := ws.WriteMessage(1, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		expectType(t, ws, "error", "")
	}
	if err := ws.WriteJSON(map[string]any{"type": "ping", "v": 1, "id": "p1"}); err != nil {
		t.Fatal(err)
	}
	expectType(t, ws, "pong", "p1")
	// An oversized message ends the connection (the read limit), nothing else.
	_ = ws.WriteMessage(1, bytes.Repeat([]byte("x"), 70<<10))
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := ws.ReadMessage(); err == nil {
		t.Fatal("oversized message did not close the connection")
	}

	// A wrong token is refused with a reason.
	ws = dialWS(t, e)
	if err := ws.WriteJSON(map[string]any{"type": "hello", "v": 1, "token": "nope.nope"}); err != nil {
		t.Fatal(err)
	}
	expectType(t, ws, "error", "")
}

func dialWS(t *testing.T, e *edge) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(strings.Replace(e.url, "http", "ws", 1)+"/api/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func expectType(t *testing.T, ws *websocket.Conn, typ, id string) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m struct{ Type, ID, Code, Message string }
	if err := ws.ReadJSON(&m); err != nil {
		t.Fatalf("waiting for %s: %v", typ, err)
	}
	if m.Type != typ || (id != "" && m.ID != id) {
		t.Fatalf("got %+v, want type %s id %q", m, typ, id)
	}
}
