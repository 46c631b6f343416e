package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/token"
	"github.com/campusedge/campusedge/sync/hub"
)

// provinceEdges is the province-scale fleet the edges page must list.
const provinceEdges = 2000

// seedProvince fills the store in data with 40 schools of 50 enrolled
// edges each, most seen a moment ago, some long ago, some never.
func seedProvince(t *testing.T, data string) {
	t.Helper()
	st, err := hub.OpenBolt(data)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := t.Context()
	now := time.Now()
	for i := 0; i < provinceEdges; i++ {
		school := fmt.Sprintf("s%02d", i/50)
		if i%50 == 0 {
			if err := st.CreateSchool(ctx, hub.School{Code: school, Name: "School " + school, Created: now}); err != nil {
				t.Fatal(err)
			}
		}
		tok := token.New()
		if err := st.CreateEnrolToken(ctx, school, token.Digest(tok), now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("edge%05d", i)
		if _, err := st.Enrol(ctx, token.Digest(tok), hub.Edge{ID: id, PublicKey: []byte(id)}, now); err != nil {
			t.Fatal(err)
		}
		switch i % 10 {
		case 9: // never seen
		case 8:
			_ = st.NoteEdge(ctx, id, hub.EdgeNote{Seen: now.Add(-time.Hour), Version: "v1.3.0"})
		default:
			_ = st.NoteEdge(ctx, id, hub.EdgeNote{Seen: now, Version: "v1.4.2", CertNotAfter: now.Add(80 * 24 * time.Hour)})
		}
	}
}

// TestEdgesPage2000InChromium measures the edges list with a province's
// 2,000 edges in headless Chromium over HTTPS at a LAN address: from the
// click on the Edges tab to the rows painted (two animation frames after
// the table is filled), five times; and, in the same run, the floor: the
// page's bare fetch and JSON parse of the same list. The bound is
// 1 s; with -edges.bench the median must be under it (figures in
// docs/BENCHMARKS.md); without, the test checks the 2,000 rows and logs.
func TestEdgesPage2000InChromium(t *testing.T) {
	if !browsertest.OnLAN(t) {
		return
	}
	browsertest.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 180*time.Second)
	defer cancel()
	data := t.TempDir()
	seedProvince(t, data)
	ready := make(chan net.Addr, 1)
	served := make(chan int, 1)
	go func() {
		served <- run(ctx, []string{"-data", data, "-listen", browsertest.LANListen}, io.Discard, io.Discard,
			func(_, s net.Addr) { ready <- s })
	}()
	var tlsAddr net.Addr
	select {
	case tlsAddr = <-ready:
	case code := <-served:
		t.Fatalf("hub exited %d", code)
	}
	defer func() { cancel(); <-served }()
	t.Setenv("CITYHUB_PASSWORD", "ada's long password")
	if code, _, errs := cli(ctx, "-data", data, "account", "add", "ada", "city_admin"); code != 0 {
		t.Fatal(errs)
	}
	_, pinOut, _ := cli(ctx, "-data", data, "tls-pin")
	br := browsertest.Start(ctx, t, browsertest.TrustPin(strings.TrimSpace(pinOut)))
	br.Do("open the console", chromedp.Navigate("https://"+tlsAddr.String()+"/console/"))
	br.RequireSecureLAN()
	br.Do("sign in", chromedp.SetValue(chromedp.CSS("#user"), "ada"), chromedp.SetValue(chromedp.CSS("#password"), "ada's long password"),
		chromedp.Click(chromedp.CSS(`#signin-form button[type="submit"]`)))
	br.Poll("signed in", `!document.getElementById("app").hidden && document.querySelectorAll("#schools tr").length === 40 ? "y" : ""`)

	measure := func(i int, expr string) float64 {
		key := "m" + strconv.Itoa(i)
		v := br.Poll("measure "+key, `(() => { const k = "`+key+`"; if (window[k] === undefined) { window[k] = null; `+expr+` }
			return window[k] === null ? "" : String(window[k]); })()`)
		ms, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("measure %s: %q", key, v)
		}
		return ms
	}
	var page, fetchOnly []float64
	for i := 0; i < 5; i++ {
		br.Do("schools tab", chromedp.Click(chromedp.CSS(`#tabs button[data-tab="schools"]`)))
		br.Poll("schools shown", `window.cityTabDone === "schools" ? "y" : ""`)
		page = append(page, measure(i, `const t0 = performance.now(); document.querySelector('#tabs button[data-tab="edges"]').click();
			(function wait() { if (window.cityTabDone !== "edges") return setTimeout(wait, 2);
			  requestAnimationFrame(() => requestAnimationFrame(() => { window[k] = performance.now() - t0; })); })();`))
		fetchOnly = append(fetchOnly, measure(10+i, `const t0 = performance.now();
			fetch("/api/v1/admin/edges").then(r => r.json()).then(j => { window[k] = j.edges.length === `+strconv.Itoa(provinceEdges)+` ? performance.now() - t0 : -1; });`))
	}
	t.Logf("last load: fetch, build, insert ms: %s", br.Poll("timing", `JSON.stringify(window.cityEdgesTiming)`))
	rows := br.Poll("rows", `String(document.querySelectorAll("#edges [data-edge]").length)`)
	if rows != strconv.Itoa(provinceEdges) {
		t.Fatalf("%s rows listed, want %d", rows, provinceEdges)
	}
	med := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	t.Logf("edges page with %d edges: click to painted median %.0f ms (runs %.0f ms); fetch+parse alone median %.0f ms (runs %.0f ms); %d CPUs",
		provinceEdges, med(page), page, med(fetchOnly), fetchOnly, numCPU())
	if slices.Contains(fetchOnly, -1) {
		t.Errorf("a bare fetch of the edges list did not return the %d edges", provinceEdges)
	}
	// The 1 s bound is a benchmark's (-edges.bench, on a quiet machine):
	// in the normal suite, run beside every other package under -race, a
	// wall-clock bound measures the machine's load, not the page.
	if m := med(page); *edgesBench && m >= 1000 {
		t.Errorf("edges page median %.0f ms, want under 1 s", m)
	}
}

var edgesBench = flag.Bool("edges.bench", false, "TestEdgesPage2000InChromium: fail when the median click-to-painted time is 1 s or more")

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}
