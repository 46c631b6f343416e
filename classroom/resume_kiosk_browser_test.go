package classroom_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/campusedge/campusedge/edge/bintest"
	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/logtest"
	"github.com/campusedge/campusedge/edge/termagent"
)

// TestKill9ResumesKioskScreen: a classroom's screen run as a school runs
// it — `classterm -pair CODE -kiosk` against the real edged at the LAN
// address over HTTPS, Chromium in kiosk mode showing the classroom page —
// and a teacher page publishing the lesson. Mid-class edged is killed with
// SIGKILL and restarted on the same data dir and ports, as systemd would;
// the kiosk screen decodes the lesson again by itself (watched through
// Chromium's DevTools port, which the test asks classterm to open), on a
// new connection, and attendance shows the room present throughout.
func TestKill9ResumesKioskScreen(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	if _, err := os.Stat(termagent.DefaultChromium); err != nil {
		browsertest.Require(t) // skips, or fails under CI
	}
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	logBuf, termLog := &logtest.Buffer{}, &logtest.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("classterm log:\n%s\nedged log:\n%s", termLog.String(), logBuf.String())
		}
	})
	dir := t.TempDir()
	bins, err := bintest.Build(ctx, dir, bintest.BuildOptions{}, bintest.Cmd("edged"), bintest.Cmd("classterm"))
	if err != nil {
		t.Fatal(err)
	}
	data, plain, secure := filepath.Join(dir, "data"), freeLANPort(t), freeLANPort(t)
	start := func() *bintest.Process {
		p, err := bintest.Start(bins[0], []string{"-data", data, "-listen", plain, "-https-listen", secure, "-mdns=false", "-reconnect-grace", "15s"}, 30*time.Second, logBuf)
		if err != nil {
			t.Fatalf("starting edged: %v", err)
		}
		t.Cleanup(p.Kill)
		return p
	}
	p := start()
	tok, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	pin := servedPin(t, secure)
	e := &edge{url: "https://" + secure, plain: "http://" + plain, admin: strings.TrimSpace(string(tok)), log: logBuf,
		client: &http.Client{Transport: &http.Transport{TLSClientConfig: certs.PinnedTLS(pin)}, Timeout: 10 * time.Second}}
	resp, b := e.Do(t, ctx, "POST", "/api/v1/classrooms", e.admin, "application/json", []byte(`{"name":"八年级（2）班","room_code":"8B"}`))
	var room struct{ ID string }
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &room) != nil {
		t.Fatalf("classroom: %d %s", resp.StatusCode, b)
	}
	resp, b = e.Do(t, ctx, "POST", "/api/v1/classrooms/"+room.ID+"/pairing-codes", e.admin, "", nil)
	var pc struct{ Code string }
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &pc) != nil {
		t.Fatalf("pairing code: %d %s", resp.StatusCode, b)
	}

	// The screen: classterm pairs and keeps Chromium in kiosk mode on the
	// classroom page. Headless here, and with a DevTools port on loopback
	// (port 0: Chromium picks one and writes it to DevToolsActivePort in
	// its profile) for the test to watch the page.
	termData := filepath.Join(dir, "classterm-data")
	term := exec.Command(bins[1], "-data", termData, "-edge", e.url, "-pair", pc.Code, "-name", "board-8B", "-kiosk",
		"-kiosk-flag=--headless", "-kiosk-flag=--no-sandbox", "-kiosk-flag=--disable-gpu", "-kiosk-flag=--disable-quic",
		"-kiosk-flag=--use-fake-device-for-media-stream", "-kiosk-flag=--remote-debugging-address=127.0.0.1", "-kiosk-flag=--remote-debugging-port=0")
	term.Stdout, term.Stderr = termLog, termLog
	term.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := term.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// classterm stops its Chromium on SIGTERM; whatever is left (it
		// was killed, or a helper lingers) goes by the process groups of
		// the browsers it started, which it logs.
		_ = term.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = term.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-term.Process.Pid, syscall.SIGKILL)
			<-done
		}
		for _, m := range regexp.MustCompile(`kiosk: Chromium running" pid=([0-9]+)`).FindAllStringSubmatch(termLog.String(), -1) {
			if pid, err := strconv.Atoi(m[1]); err == nil && pid > 1 {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
	var devtools string
	for deadline := time.Now().Add(45 * time.Second); devtools == ""; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the kiosk Chromium never opened its DevTools port")
		}
		if b, err := os.ReadFile(filepath.Join(termData, "kiosk-profile", "DevToolsActivePort")); err == nil {
			if port, _, ok := strings.Cut(string(b), "\n"); ok && port != "" {
				devtools = "ws://127.0.0.1:" + port
			}
		}
	}
	// The page's own DevTools socket, spoken to directly: one
	// Runtime.evaluate at a time.
	var pageWS string
	for deadline := time.Now().Add(30 * time.Second); pageWS == ""; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the kiosk never showed the classroom page")
		}
		var targets []struct{ Type, URL, WebSocketDebuggerURL string }
		resp, err := http.Get(strings.Replace(devtools, "ws://", "http://", 1) + "/json/list")
		if err != nil {
			continue
		}
		_ = json.NewDecoder(resp.Body).Decode(&targets)
		resp.Body.Close()
		for _, tg := range targets {
			if tg.Type == "page" && strings.HasPrefix(tg.URL, e.url+"/classroom.html") {
				pageWS = tg.WebSocketDebuggerURL
			}
		}
	}
	cdp, _, err := websocket.DefaultDialer.DialContext(ctx, pageWS, nil)
	if err != nil {
		t.Fatalf("DevTools of the kiosk page: %v", err)
	}
	defer cdp.Close()
	calls := 0
	// screenEval evaluates expr in the kiosk page (awaiting a promise) and
	// returns its JSON value.
	screenEval := func(expr string) (json.RawMessage, error) {
		calls++
		req := map[string]any{"id": calls, "method": "Runtime.evaluate", "params": map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}}
		_ = cdp.SetWriteDeadline(time.Now().Add(3 * time.Second))
		if err := cdp.WriteJSON(req); err != nil {
			return nil, err
		}
		_ = cdp.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			var m struct {
				ID     int `json:"id"`
				Result struct {
					Result struct {
						Value json.RawMessage `json:"value"`
					} `json:"result"`
					Exception *struct{ Text string } `json:"exceptionDetails"`
				} `json:"result"`
				Error *struct{ Message string } `json:"error"`
			}
			if err := cdp.ReadJSON(&m); err != nil {
				return nil, err
			}
			if m.ID != calls {
				continue // an event, or a late answer
			}
			switch {
			case m.Error != nil:
				return nil, errors.New(m.Error.Message)
			case m.Result.Exception != nil:
				return nil, errors.New(m.Result.Exception.Text)
			}
			return m.Result.Result.Value, nil
		}
	}
	screenState := `JSON.stringify({joins: window.room.joins, errors: window.room.errors, status: document.getElementById("status").textContent, session: window.room.sessionId, secure: window.isSecureContext})`
	pollScreen := func(what, expr string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			v, err := screenEval(expr)
			if err == nil && string(v) == "true" {
				return
			}
			if time.Now().After(deadline) {
				st, err2 := screenEval(screenState)
				t.Fatalf("%s: not within 30 s (%s %v); the screen: %s %v", what, v, err, st, err2)
			}
		}
	}
	pollScreen("the kiosk page paired as its terminal", `!!window.room && window.room.paired === true`)

	// The lesson: the master teacher's page, started from its link.
	s := e.createClassIn(t, ctx, "数学：勾股定理", []string{room.ID})
	teacher := browsertest.Start(ctx, t, browsertest.TrustPin(pin)).Context()
	navigate(t, teacher, e.url+"/teacher.html#session="+s.ID+"&master="+s.Tokens.Master)
	browserPoll(teacher, t, "teacher publishing", `window.teacher.published === true`)

	decoding := func(minJoins int) string {
		return fmt.Sprintf(`(async (c) => !!c && window.room.joins >= %d && ((await c.videoStats()).master || 0) > 0)(window.room.conn)`, minJoins)
	}
	pollScreen("the kiosk screen decoding the lesson", decoding(1))
	v, err := screenEval(`window.room.joins`)
	if err != nil {
		t.Fatal(err)
	}
	joins, _ := strconv.Atoi(string(v))
	time.Sleep(time.Second)

	killed := time.Now()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	p = start()
	pollScreen("the kiosk screen decoding the lesson again after the restart", decoding(joins+1))
	t.Logf("kiosk screen decoding the lesson again %v after the kill", time.Since(killed).Round(100*time.Millisecond))

	var att struct {
		Classrooms map[string]struct {
			Joins, Leaves, Reconnects int
			Present                   bool
		} `json:"classrooms"`
	}
	resp, b = e.Do(t, ctx, "GET", "/api/v1/sessions/"+s.ID+"/attendance", e.admin, "", nil)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &att) != nil {
		t.Fatalf("attendance: %d %s", resp.StatusCode, b)
	}
	if ca := att.Classrooms[room.ID]; ca.Joins != 1 || ca.Leaves != 0 || ca.Reconnects < 1 || !ca.Present {
		t.Errorf("attendance of the kiosk's room after the kill: %+v, want 1 join, 0 leaves, ≥ 1 reconnect, present", ca)
	}
}
