package cityadmin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/buildinfo"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/firmware/bundle"
	"github.com/campusedge/campusedge/firmware/release"
	"github.com/campusedge/campusedge/sync/catalog"
	"github.com/campusedge/campusedge/sync/cityadmin"
	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/internal/pgtest"
	"github.com/campusedge/campusedge/sync/schooldata"
	"github.com/campusedge/campusedge/sync/uplink"
)

func backends(t *testing.T, fn func(t *testing.T, st hub.Store)) {
	t.Run("bolt", func(t *testing.T) {
		st, err := hub.OpenBolt(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		fn(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		st, err := hub.OpenPG(context.Background(), pgtest.DB(t))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		fn(t, st)
	})
}

const badRoster = "student_id,name,homeroom,groups\ns1,Wang Fang,7A,math-1\ns 2,Li Lei,7A,\ns3,,7B,\n"
const goodRoster = "student_id,name,homeroom,groups\ns1,Wang Fang,7A,math-1\ns2,Li Lei,7A,\ns3,Han Meimei,7B,\n"

// TestCityAdminFlow: a city admin adds a school and issues a token; a real
// edge (bbolt, outbox, uplink over pinned HTTPS) enrols with it and is
// listed online after a sync; a roster import previews with row errors,
// refuses to apply them, then applies the fixed file and the edge pulls it;
// a school admin sees only their school; a content editor sees no edges;
// a cookie request without this hub's Origin is refused.
func TestCityAdminFlow(t *testing.T) {
	backends(t, func(t *testing.T, st hub.Store) {
		ctx := t.Context()
		h := startHub(t, st)
		admin := h.client(t)
		if code := admin.do("GET", "/api/v1/admin/schools", nil, nil); code != http.StatusUnauthorized {
			t.Fatalf("schools before sign-in: %d", code)
		}
		admin.login("ada", mustAccount(t, st, "ada", hub.RoleCityAdmin, ""))
		for _, s := range [][2]string{{"north", "North Middle"}, {"south", "South Primary"}} {
			if code := admin.do("POST", "/api/v1/admin/schools", map[string]string{"code": s[0], "name": s[1]}, nil); code != http.StatusCreated {
				t.Fatalf("add school %s: %d", s[0], code)
			}
		}
		var tok cityadmin.IssuedToken
		if code := admin.do("POST", "/api/v1/admin/schools/north/tokens", map[string]int{"ttl_hours": 2}, &tok); code != http.StatusCreated || !strings.HasPrefix(tok.QR, "data:image/png;base64,") {
			t.Fatalf("issue token: %d %+v", code, tok)
		}
		edge := newEdge(t)
		if _, err := uplink.Enrol(ctx, edge.DB, nil, h.URL, tok.Token, edge.Key, nil); err != nil {
			t.Fatal(err)
		}
		var edges struct{ Edges []cityadmin.EdgeView }
		admin.do("GET", "/api/v1/admin/edges", nil, &edges)
		if len(edges.Edges) != 1 || edges.Edges[0].Health != "never_seen" || edges.Edges[0].Online {
			t.Fatalf("edge before its first sync: %+v", edges)
		}
		up := edge.uplink(h.URL)
		if _, err := edge.Ob.Append(ctx, "attendance.mark", []byte(`{"s":"s1"}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := up.SendOnce(ctx, mustEnrolment(t, edge)); err != nil {
			t.Fatal(err)
		}
		admin.do("GET", "/api/v1/admin/edges?school=north", nil, &edges)
		if len(edges.Edges) != 1 || !edges.Edges[0].Online || edges.Edges[0].Health != "ok" || edges.Edges[0].Acked != 1 || edges.Edges[0].Version != buildinfo.Version {
			t.Fatalf("edge after a sync: %+v", edges)
		}
		var toks struct{ Tokens []hub.EnrolToken }
		admin.do("GET", "/api/v1/admin/schools/north/tokens", nil, &toks)
		if len(toks.Tokens) != 1 || toks.Tokens[0].ID != tok.ID || toks.Tokens[0].UsedBy != edge.Key.id {
			t.Fatalf("tokens %+v", toks)
		}

		var pv cityadmin.Preview
		admin.do("POST", "/api/v1/admin/schools/north/imports/roster", []byte(badRoster), &pv)
		if len(pv.Errors) != 2 || pv.Errors[0].Row != 3 || pv.Errors[1].Row != 4 {
			t.Fatalf("preview of a bad roster: %+v", pv)
		}
		var refused struct{ Preview cityadmin.Preview }
		if code := admin.do("POST", "/api/v1/admin/schools/north/imports/roster?apply=true", []byte(badRoster), &refused); code != http.StatusUnprocessableEntity || len(refused.Preview.Errors) != 2 {
			t.Fatalf("apply of a bad roster: %d %+v", code, refused)
		}
		admin.do("POST", "/api/v1/admin/schools/north/imports/roster", []byte(goodRoster), &pv)
		if len(pv.Errors) != 0 || pv.Added != 3 || pv.Applied {
			t.Fatalf("preview of the fixed roster: %+v", pv)
		}
		if code := admin.do("POST", "/api/v1/admin/schools/north/imports/roster?apply=true", []byte(goodRoster), &pv); code != 200 || !pv.Applied || pv.Change == 0 {
			t.Fatalf("apply: %d %+v", code, pv)
		}
		if err := up.PullOnce(ctx); err != nil {
			t.Fatal(err)
		}
		var r schooldata.Roster
		if err := json.Unmarshal(edge.doc(schooldata.KindRoster), &r); err != nil || len(r.Students) != 3 || r.Students[2].Name != "Han Meimei" {
			t.Fatalf("edge's roster %+v %v", r, err)
		}
		admin.do("POST", "/api/v1/admin/schools/north/imports/roster", []byte(strings.Replace(goodRoster, "Li Lei", "Li Lei-Ming", 1)), &pv)
		if pv.Changed != 1 || pv.Unchanged != 2 || pv.Added != 0 || len(pv.Sample) != 1 || pv.Sample[0].Key != "s2" {
			t.Fatalf("preview of one change: %+v", pv)
		}

		// Staff: the preview shows who and whether a secret is set, never
		// the secret; the applied document carries only its hash.
		staffCSV := []byte("staff_id,name,roles,rooms,secret\nt1,Wang Li,teacher,r101,first-secret-9\n")
		admin.do("POST", "/api/v1/admin/schools/north/imports/staff", staffCSV, &pv)
		if len(pv.Errors) != 0 || pv.Added != 1 || len(pv.Sample) != 1 || !strings.Contains(pv.Sample[0].To, `"has_secret":true`) || strings.Contains(pv.Sample[0].To, "first-secret") {
			t.Fatalf("staff preview %+v", pv)
		}
		if code := admin.do("POST", "/api/v1/admin/schools/north/imports/staff?apply=true", staffCSV, &pv); code != 200 || !pv.Applied {
			t.Fatalf("staff apply: %d %+v", code, pv)
		}
		if err := up.PullOnce(ctx); err != nil {
			t.Fatal(err)
		}
		var sl schooldata.StaffList
		if err := json.Unmarshal(edge.doc(schooldata.KindStaff), &sl); err != nil || len(sl.Staff) != 1 || !strings.HasPrefix(sl.Staff[0].Hash, "$argon2id$") ||
			strings.Contains(string(edge.doc(schooldata.KindStaff)), "first-secret") {
			t.Fatalf("edge's staff list %s %v", edge.doc(schooldata.KindStaff), err)
		}

		// A school admin of south sees south only.
		sa := h.client(t)
		sa.login("bo", mustAccount(t, st, "bo", hub.RoleSchoolAdmin, "south"))
		var schools struct{ Schools []hub.School }
		sa.do("GET", "/api/v1/admin/schools", nil, &schools)
		if len(schools.Schools) != 1 || schools.Schools[0].Code != "south" {
			t.Fatalf("school admin's schools %+v", schools)
		}
		sa.do("GET", "/api/v1/admin/edges", nil, &edges)
		if len(edges.Edges) != 0 {
			t.Fatalf("school admin of south sees edges %+v", edges)
		}
		for _, c := range []struct{ m, p string }{{"GET", "/api/v1/admin/edges?school=north"}, {"GET", "/api/v1/admin/schools/north/tokens"},
			{"POST", "/api/v1/admin/schools/north/tokens"}, {"POST", "/api/v1/admin/edges/" + edge.Key.id + "/revoke"}} {
			if code := sa.do(c.m, c.p, map[string]int{}, nil); code != http.StatusNotFound {
				t.Errorf("school admin of south: %s %s = %d, want 404", c.m, c.p, code)
			}
		}
		if code := sa.do("POST", "/api/v1/admin/schools", map[string]string{"code": "x", "name": "X"}, nil); code != http.StatusForbidden {
			t.Errorf("school admin adds a school: %d", code)
		}
		ed := h.client(t)
		ed.login("cy", mustAccount(t, st, "cy", hub.RoleContentEditor, ""))
		if code := ed.do("GET", "/api/v1/admin/edges", nil, nil); code != http.StatusForbidden {
			t.Errorf("content editor lists edges: %d", code)
		}
		// CSRF: the same cookie without this hub's Origin.
		admin.base = h.URL
		req, _ := http.NewRequest("POST", h.URL+"/api/v1/admin/schools", strings.NewReader(`{"code":"evil","name":"Evil"}`))
		req.Header.Set("Origin", "https://evil.example")
		resp, err := admin.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("cross-origin POST with the cookie: %d", resp.StatusCode)
		}
		// Revoking the edge stops its sync at once.
		var rv any
		if code := admin.do("POST", "/api/v1/admin/edges/"+edge.Key.id+"/revoke", nil, &rv); code != 200 {
			t.Log(rv)
			t.Fatalf("revoke: %d", code)
		}
		if err := up.PullOnce(ctx); err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("revoked edge pulls: %v", err)
		}
	})
}

func mustEnrolment(t testing.TB, e *testEdge) uplink.Enrolment {
	t.Helper()
	en, ok, err := uplink.LoadEnrolment(e.DB)
	if err != nil || !ok {
		t.Fatalf("enrolment %v %v", ok, err)
	}
	return en
}

// TestTwoReplicasOnePostgres: two admin API replicas on one database: a
// sign-in on one is a session on the other, a school added on one is
// listed by the other, a catalogue edit and a firmware rollout wave made
// on one are what the other lists (and answers edges) at once, a school
// upload published on one is in the other's catalogue, a token revoked
// on one cannot enrol through the other, and signing out on one ends the
// session on both.
func TestTwoReplicasOnePostgres(t *testing.T) {
	url := pgtest.DB(t)
	var hs [2]*testHub
	var cats [2]*catalog.Store
	var fws [2]*release.Store
	var bundlePath string
	for i := range hs {
		st, err := hub.OpenPG(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		// Each replica its own data dir: only the database is shared. A
		// holds the release key it publishes with.
		data := t.TempDir()
		if i == 0 {
			bundlePath = makeBundle(t, data, "1.2.0")
		}
		if cats[i], err = catalog.OpenPG(t.Context(), data, url); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cats[i].Close() })
		ps, err := release.OpenPGState(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ps.Close)
		if fws[i], err = release.OpenWith(data, ps); err != nil {
			t.Fatal(err)
		}
		hs[i] = startHub(t, st, func(c *cityadmin.Config) {
			c.Catalogue, c.Reviews, c.Review, c.Firmware = cats[i], cats[i], true, releaseConsole{fws[i]}
		})
	}
	a := hs[0].client(t)
	a.login("ada", mustAccount(t, hs[0].St, "ada", hub.RoleCityAdmin, ""))
	b := hs[1].client(t)
	b.c.Jar = a.c.Jar // the same browser behind a load balancer
	// The jar keys cookies by host: both replicas are 127.0.0.1.
	if code := a.do("POST", "/api/v1/admin/schools", map[string]string{"code": "east", "name": "East"}, nil); code != 201 {
		t.Fatalf("add on A: %d", code)
	}
	var schools struct{ Schools []hub.School }
	if code := b.do("GET", "/api/v1/admin/schools", nil, &schools); code != 200 || len(schools.Schools) != 1 || schools.Schools[0].Code != "east" {
		t.Fatalf("schools on B: %d %+v", code, schools)
	}

	// Catalogue: an item (imported through A's store), edited on A, is
	// listed edited by B and pulled edited from B by edges.
	it, err := cats[0].Put(media.Item{ID: "fractions", Title: "分数", MIME: "video/mp4", Size: 5, SHA256: strings.Repeat("ab", 32)})
	if err != nil {
		t.Fatal(err)
	}
	if code := a.do("PATCH", "/api/v1/admin/catalog/"+it.ID, map[string]string{"subject": "数学", "grade": "5"}, nil); code != 200 {
		t.Fatalf("edit on A: %d", code)
	}
	var items struct{ Items []media.Item }
	if code := b.do("GET", "/api/v1/admin/catalog", nil, &items); code != 200 || len(items.Items) != 1 || items.Items[0].Subject != "数学" || items.Items[0].Grade != "5" {
		t.Fatalf("catalogue on B after the edit on A: %d %+v", code, items)
	}
	if ch, err := cats[1].Changes(0, 10); err != nil || len(ch.Items) != 1 || ch.Items[0].Subject != "数学" {
		t.Fatalf("edges' catalogue pull from B: %+v %v", ch, err)
	}
	// A school upload waiting for review, published on B, is in A's catalogue.
	up := media.Item{ID: media.UploadID(strings.Repeat("cd", 32)), Title: "作业", MIME: "application/pdf", Size: 3, SHA256: strings.Repeat("cd", 32)}
	if err := cats[0].Submit(catalog.Submission{Item: up, School: "east", Received: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if code := b.do("POST", "/api/v1/admin/uploads/"+up.ID+"/publish", map[string]string{"subject": "语文"}, nil); code != 200 {
		t.Fatalf("publish on B: %d", code)
	}
	if got, err := cats[0].Get(up.ID); err != nil || got.Subject != "语文" {
		t.Fatalf("A's catalogue after publishing on B: %+v %v", got, err)
	}
	// Firmware: a release at wave 1 %, advanced to 5 % on A; B lists 5 %
	// and answers an edge in the 5 % wave with it.
	bf, err := os.Open(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fws[0].Publish(bf, release.Stable, 1)
	bf.Close()
	if err != nil {
		t.Fatal(err)
	}
	if code := a.do("POST", "/api/v1/admin/firmware/linux-amd64/1.2.0/rollout", map[string]any{"channel": "stable", "rollout_percent": 5}, nil); code != 200 {
		t.Fatalf("advance on A: %d", code)
	}
	var fw struct {
		Releases []cityadmin.RolloutView `json:"releases"`
	}
	if code := b.do("GET", "/api/v1/admin/firmware", nil, &fw); code != 200 || len(fw.Releases) != 1 || fw.Releases[0].Rollout != 5 || fw.Releases[0].NextWave != 25 {
		t.Fatalf("firmware on B after the wave on A: %d %+v", code, fw)
	}
	var inWave string
	for i := 0; inWave == ""; i++ {
		if id := fmt.Sprintf("edge%d", i); release.InRollout(id, "linux-amd64", "1.2.0", 5) && !release.InRollout(id, "linux-amd64", "1.2.0", 1) {
			inWave = id
		}
	}
	rel, err := fws[1].Answer(release.Check{EdgeID: inWave, Product: "campusedge", Target: "linux-amd64", Channel: release.Stable, Version: "1.1.0"})
	if err != nil || rel == nil || rel.Version != "1.2.0" {
		t.Fatalf("B's answer to an edge of the 5 %% wave: %+v %v", rel, err)
	}
	if reps, err := fws[0].Edges(); err != nil || len(reps) != 1 || reps[0].EdgeID != inWave {
		t.Fatalf("the edge's report made to B, listed by A: %+v %v", reps, err)
	}

	var tok cityadmin.IssuedToken
	b.do("POST", "/api/v1/admin/schools/east/tokens", map[string]int{}, &tok)
	if code := a.do("POST", "/api/v1/admin/schools/east/tokens/"+tok.ID+"/revoke", nil, nil); code != 200 {
		t.Fatalf("revoke on A: %d", code)
	}
	edge := newEdge(t)
	tokB := strings.Replace(tok.Token, "~"+hs[1].Pin, "~"+hs[0].Pin, 1) // enrol through A, whose key differs
	if _, err := uplink.Enrol(t.Context(), edge.DB, nil, hs[0].URL, tokB, edge.Key, nil); err == nil || !strings.Contains(err.Error(), "invalid_token") && !strings.Contains(err.Error(), "unknown, already used") {
		t.Fatalf("enrol with a token revoked on the other replica: %v", err)
	}
	u, _ := neturl.Parse(hs[0].URL)
	old := a.c.Jar.Cookies(u)
	if len(old) != 1 || old[0].Name != cityadmin.CookieName {
		t.Fatalf("cookies %v", old)
	}
	me := func() int {
		req, _ := http.NewRequest("GET", hs[0].URL+"/api/v1/admin/me", nil)
		req.AddCookie(old[0])
		c := *a.c
		c.Jar = nil
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := me(); code != http.StatusOK {
		t.Fatalf("the cookie on A before sign-out: %d", code)
	}
	if code := b.do("POST", "/api/v1/admin/logout", nil, nil); code != http.StatusNoContent {
		t.Fatalf("logout on B: %d", code)
	}
	// Replay the old cookie to A: the session is gone there too.
	if code := me(); code != http.StatusUnauthorized {
		t.Fatalf("A after sign-out on B: %d", code)
	}
}

// FuzzPreviewImport: any CSV body gives a preview or row errors, never a
// panic, and a preview without errors has rows that add up.
func FuzzPreviewImport(f *testing.F) {
	st, err := hub.OpenBolt(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	_ = st.CreateSchool(context.Background(), hub.School{Code: "s", Name: "S"})
	f.Add("roster", []byte(goodRoster))
	f.Add("roster", []byte(badRoster))
	f.Add("timetable", []byte("day,period,start,end,room,group,subject,teacher,resources\nmon,1,08:00,08:45,r1,7A,math,t1,\n"))
	f.Add("timetable", []byte("day,period\n\"unterminated"))
	f.Add("staff", []byte("staff_id,name,roles,rooms,secret\nt1,Wang Li,teacher,r1,\n"))
	f.Fuzz(func(t *testing.T, kind string, csv []byte) {
		if kind != "roster" && kind != "timetable" && kind != "staff" {
			kind = "roster"
		}
		pv, parsed, err := cityadmin.PreviewImport(context.Background(), st, "s", kind, csv)
		if err != nil {
			t.Fatal(err)
		}
		if len(pv.Errors) == 0 && (parsed == nil || pv.Added+pv.Changed+pv.Unchanged != pv.Rows) {
			t.Fatalf("preview %+v without errors does not add up", pv)
		}
	})
}

// TestSignInFlood: 40 concurrent wrong sign-ins (password checks queue
// two at a time) each answer 401 or, after waiting 5 s in the queue, 429
// busy — never a 5xx or a hang — and the right password still signs in
// afterwards.
func TestSignInFlood(t *testing.T) {
	st, err := hub.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := startHub(t, st)
	pw := mustAccount(t, st, "ada", hub.RoleCityAdmin, "")
	codes := make(chan int, 40)
	for i := 0; i < 40; i++ {
		go func() {
			c := h.client(t)
			codes <- c.do("POST", "/api/v1/admin/login", map[string]string{"user": "ada", "password": "wrong password guess"}, nil)
		}()
	}
	seen := map[int]int{}
	for i := 0; i < 40; i++ {
		seen[<-codes]++
	}
	if seen[http.StatusUnauthorized]+seen[http.StatusTooManyRequests] != 40 || seen[http.StatusUnauthorized] == 0 {
		t.Fatalf("answers to a flood of wrong sign-ins: %v", seen)
	}
	h.client(t).login("ada", pw)
}

// releaseConsole is the release channel as the console sees it (cityhub's
// own adapter lives in package main).
type releaseConsole struct{ st *release.Store }

func (f releaseConsole) Releases() ([]cityadmin.FirmwareRelease, error) {
	rels, err := f.st.Releases()
	var out []cityadmin.FirmwareRelease
	for _, r := range rels {
		out = append(out, cityadmin.FirmwareRelease{Target: r.Target, Version: r.Version, Channel: r.Channel, Rollout: r.Rollout, Published: r.Published})
	}
	return out, err
}

func (f releaseConsole) SetRollout(target, version, channel string, pct int) (cityadmin.FirmwareRelease, error) {
	r, err := f.st.SetRollout(target, version, channel, pct)
	if errors.Is(err, release.ErrNotFound) {
		return cityadmin.FirmwareRelease{}, cityadmin.ErrNoRelease
	}
	return cityadmin.FirmwareRelease{Target: r.Target, Version: r.Version, Channel: r.Channel, Rollout: r.Rollout, Published: r.Published}, err
}

func (f releaseConsole) Edges() ([]cityadmin.FirmwareEdge, error) {
	reps, err := f.st.Edges()
	var out []cityadmin.FirmwareEdge
	for _, e := range reps {
		out = append(out, cityadmin.FirmwareEdge{EdgeID: e.EdgeID, Target: e.Target, Channel: e.Channel, Version: e.Version, State: e.State})
	}
	return out, err
}

// makeBundle makes a release key trusted by the hub of data and a signed
// bundle of version with it; it returns the bundle's path.
func makeBundle(t *testing.T, data, version string) string {
	t.Helper()
	_, pubPath, err := bundle.GenerateKey(filepath.Join(data, "firmware", "release-keys"), nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err := bundle.LoadPrivateKey(strings.TrimSuffix(pubPath, ".pub") + ".key")
	if err != nil {
		t.Fatal(err)
	}
	payload := t.TempDir()
	if err := os.WriteFile(filepath.Join(payload, "edged"), []byte("bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "fw.bundle")
	if _, err := bundle.Create(bundle.Build{Dir: payload, Product: "campusedge", Target: "linux-amd64", Version: version, Entry: "edged"}, key, out); err != nil {
		t.Fatal(err)
	}
	return out
}
