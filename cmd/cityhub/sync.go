package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/console"
	"github.com/campusedge/campusedge/edge/token"
	"github.com/campusedge/campusedge/sync/cityadmin"
	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/schooldata"
	"github.com/campusedge/campusedge/sync/wire"
)

// syncUsage documents the sync commands (cityhub -h prints it).
const syncUsage = `  cityhub [flags] school add CODE NAME          register a school
  cityhub [flags] school list
  cityhub [flags] enrol-token [-ttl D] [-pin PIN] CODE
                                                print a one-time enrolment token SECRET~PIN for a school's edge;
                                                PIN is the hub's TLS key (-tls-cert or its own), or -pin for a TLS proxy's key
  cityhub [flags] tls-pin                       print the pin of the hub's TLS key
  cityhub [flags] edge list [CODE]
  cityhub [flags] edge revoke EDGE_ID
  cityhub [flags] import-roster CODE FILE.csv     name,homeroom[,student_id,groups,…] or 姓名,班级[,学号,教学班]
  cityhub [flags] import-staff CODE FILE.csv      staff_id,name,roles[,rooms,secret] (secret: initial password or PIN, hashed here)
  cityhub [flags] export-staff CODE
  cityhub [flags] import-timetable CODE FILE.csv  day,period,start,end,room,group,subject,teacher[,resources]
                                                (UTF-8, UTF-8 with BOM, GBK or GB18030; docs/IMPORTS.md)
  cityhub [flags] export-records [-tz ZONE] CODE  CSV of every record the school's edges sent (UTF-8 with BOM,
                                                names not ids, times in ZONE, default Asia/Shanghai)
  cityhub [flags] export-roster CODE | export-timetable CODE
  cityhub [flags] import-roster|import-timetable|import-staff -preview CODE FILE.csv
                                                only show what would change (through a running hub)
  cityhub [flags] account add [-school CODE] USER ROLE
                                                city staff account; ROLE city_admin, school_admin (with -school)
                                                or content_editor; password from $CITYHUB_PASSWORD or stdin
While a hub serves on -data (holding its bbolt lock), these commands go through
its admin API (DATA/admin.url, DATA/admin.key); -hub URL with $CITYHUB_API_KEY
drives any hub; with -db postgres://… they run on the database beside any number
of serving replicas. cityhub import FOLDER works the same way (each file is sent
to the running hub's catalogue), and so do the export-* commands.
`

// openSyncStore opens PostgreSQL when dbURL is set, else DATA/sync.db.
func openSyncStore(ctx context.Context, data, dbURL string) (hub.Store, error) {
	if dbURL != "" {
		if !strings.HasPrefix(dbURL, "postgres://") && !strings.HasPrefix(dbURL, "postgresql://") {
			return nil, fmt.Errorf("-db %q must be a postgres:// URL (or empty for the embedded bbolt store)", dbURL)
		}
		return hub.OpenPG(ctx, dbURL)
	}
	return hub.OpenBolt(data)
}

// syncCmd is one sync command's invocation: args[0] is its name.
type syncCmd struct {
	ctx            context.Context
	st             hub.Store
	args           []string
	stdout, stderr io.Writer
	now            time.Time
	hubPin         func() (string, error) // the pin enrol-token puts in the token
}

// fail reports err under the command's name; exit code 1.
func (c *syncCmd) fail(err error) int {
	fmt.Fprintln(c.stderr, "cityhub "+c.args[0]+":", err)
	return 1
}

// usage prints the sync commands' usage; exit code 2.
func (c *syncCmd) usage() int {
	fmt.Fprint(c.stderr, "usage:\n"+syncUsage)
	return 2
}

// syncCommand is the sync command called name, nil for none (then name
// is serving's import or unknown).
func syncCommand(name string) func(*syncCmd) int {
	switch name {
	case "school":
		return (*syncCmd).school
	case "enrol-token":
		return (*syncCmd).enrolToken
	case "edge":
		return (*syncCmd).edge
	case "import-staff":
		return (*syncCmd).importStaff
	case "export-staff":
		return (*syncCmd).exportStaff
	case "import-roster", "import-timetable":
		return (*syncCmd).importDoc
	case "export-records":
		return (*syncCmd).exportRecords
	case "export-roster", "export-timetable":
		return (*syncCmd).exportDoc
	case "account":
		return (*syncCmd).account
	}
	return nil
}

// runSync runs one sync command.
// hubPin gives the pin enrol-token puts in the token.
func runSync(ctx context.Context, st hub.Store, args []string, stdout, stderr io.Writer, hubPin func() (string, error)) int {
	c := &syncCmd{ctx: ctx, st: st, args: args, stdout: stdout, stderr: stderr, now: time.Now().UTC(), hubPin: hubPin}
	cmd := syncCommand(args[0])
	if cmd == nil {
		return c.usage()
	}
	return cmd(c)
}

// school: school add CODE NAME, school list.
func (c *syncCmd) school() int {
	args := c.args
	switch {
	case len(args) == 4 && args[1] == "add":
		if !wire.ValidSchool(args[2]) {
			return c.fail(fmt.Errorf("school code %q must be 1-32 of letters, digits, '.', '_', '-' (the code edged -school uses)", args[2]))
		}
		if err := c.st.CreateSchool(c.ctx, hub.School{Code: args[2], Name: args[3], Created: c.now}); err != nil {
			return c.fail(err)
		}
		fmt.Fprintf(c.stdout, "school %s added\n", args[2])
		return 0
	case len(args) == 2 && args[1] == "list":
		ss, err := c.st.Schools(c.ctx)
		if err != nil {
			return c.fail(err)
		}
		for _, s := range ss {
			fmt.Fprintf(c.stdout, "%s\t%s\n", s.Code, s.Name)
		}
		return 0
	}
	return c.usage()
}

// enrolToken: enrol-token [-ttl D] [-pin PIN] CODE prints a one-time
// enrolment token carrying the pin of the hub's TLS key.
func (c *syncCmd) enrolToken() int {
	fs := flag.NewFlagSet("enrol-token", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	ttl := fs.Duration("ttl", 7*24*time.Hour, "how long the token stays usable")
	pinFlag := fs.String("pin", "", "pin of the TLS key edges will see, when a TLS proxy in front of cityhub serves another key (openssl … | base64)")
	if err := fs.Parse(c.args[1:]); err != nil || fs.NArg() != 1 {
		return c.usage()
	}
	pin := *pinFlag
	if pin == "" {
		p, err := c.hubPin()
		if err != nil {
			return c.fail(fmt.Errorf("the hub's TLS key for the token's pin: %w", err))
		}
		pin = p
	}
	if certs.ValidPin(pin) != nil {
		return c.fail(fmt.Errorf("-pin %q is not a pin: base64 of the SHA-256 of a DER SubjectPublicKeyInfo (cityhub tls-pin prints the hub's)", pin))
	}
	tok := token.New()
	if err := c.st.CreateEnrolToken(c.ctx, fs.Arg(0), token.Digest(tok), c.now.Add(*ttl)); err != nil {
		if errors.Is(err, hub.ErrNotFound) {
			return c.fail(fmt.Errorf("%w: add it first with: cityhub school add %s NAME", err, fs.Arg(0)))
		}
		return c.fail(err)
	}
	fmt.Fprintln(c.stdout, wire.FormatEnrolToken(tok, pin))
	fmt.Fprintf(c.stderr, "one-time token for school %s, valid until %s; it carries the pin of the hub's TLS key (%s); on the edge: edged enrol -data DIR -cloud https://HUB:%s -token TOKEN\n",
		fs.Arg(0), c.now.Add(*ttl).Format(time.RFC3339), pin, defaultHTTPSPort)
	return 0
}

// edge: edge list [CODE], edge revoke EDGE_ID.
func (c *syncCmd) edge() int {
	args := c.args
	switch {
	case len(args) >= 2 && len(args) <= 3 && args[1] == "list":
		school := ""
		if len(args) == 3 {
			school = args[2]
		}
		es, err := c.st.Edges(c.ctx, school)
		if err != nil {
			return c.fail(err)
		}
		for _, e := range es {
			bl := "-"
			if !e.BacklogAt.IsZero() {
				bl = strconv.FormatUint(e.Backlog, 10)
			}
			fmt.Fprintf(c.stdout, "%s\t%s\tacked=%d\trevoked=%t\tenrolled=%s\tbacklog=%s\n", e.ID, e.School, e.Acked, e.Revoked, e.Enrolled.Format(time.RFC3339), bl)
		}
		return 0
	case len(args) == 3 && args[1] == "revoke":
		if err := c.st.RevokeEdge(c.ctx, args[2]); err != nil {
			return c.fail(err)
		}
		fmt.Fprintf(c.stdout, "edge %s revoked\n", args[2])
		return 0
	}
	return c.usage()
}

// account: account add [-school CODE] USER ROLE.
func (c *syncCmd) account() int {
	q, code := parseAccount(c.args, c.stderr)
	if code != 0 {
		return code
	}
	if err := cityadmin.PutAccount(c.ctx, c.st, q, c.now); err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "account %s saved (%s)\n", q.User, q.Role)
	return 0
}

// importDoc: import-roster CODE FILE.csv, import-timetable CODE FILE.csv
// publish the school's document as a change edges pull.
func (c *syncCmd) importDoc() int {
	args := c.args
	if len(args) == 4 && args[1] == "-preview" {
		return c.previewDoc(strings.TrimPrefix(args[0], "import-"), args[2], args[3])
	}
	if len(args) != 3 {
		return c.usage()
	}
	f, err := os.Open(args[2])
	if err != nil {
		return c.fail(err)
	}
	defer f.Close()
	var doc any
	var enc, what string
	kind := schooldata.KindRoster
	if args[0] == "import-roster" {
		var ro *schooldata.Roster
		ro, enc, err = schooldata.ReadRoster(f)
		if ro != nil {
			doc, what = ro, fmt.Sprintf("%d students", len(ro.Students))
		}
	} else {
		kind = schooldata.KindTimetable
		var tt *schooldata.Timetable
		tt, enc, err = schooldata.ReadTimetable(f)
		if tt != nil {
			doc, what = tt, fmt.Sprintf("%d periods", len(tt.Slots))
		}
	}
	if err != nil {
		return c.failImport(args[2], enc, err)
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return c.fail(err)
	}
	seq, err := c.st.PutChange(c.ctx, args[1], kind, data, c.now)
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "%s for school %s read as %s (%s), imported as change %d; edges pick it up on their next pull\n", kind, args[1], enc, what, seq)
	return 0
}

// previewDoc: import-roster|import-timetable|import-staff -preview CODE FILE prints what
// the import would change, or its row errors (exit 1), applying nothing.
func (c *syncCmd) previewDoc(kind, school, file string) int {
	csv, err := os.ReadFile(file)
	if err != nil {
		return c.fail(err)
	}
	if _, err := c.st.School(c.ctx, school); err != nil {
		return c.fail(fmt.Errorf("school %s: %w", school, err))
	}
	pv, _, err := cityadmin.PreviewImport(c.ctx, c.st, school, kind, csv)
	if err != nil {
		return c.fail(err)
	}
	printPreview(c.stdout, pv)
	if len(pv.Errors) > 0 {
		return c.fail(fmt.Errorf("%d row error(s); nothing applied", len(pv.Errors)))
	}
	return 0
}

// importStaff: import-staff CODE FILE.csv publishes the school's staff
// list (StaffHeader). Initial secrets are hashed with argon2id here and
// never stored in clear; edges apply the list at their next pull, and a
// person left out of a new list can no longer sign in there.
func (c *syncCmd) importStaff() int {
	if len(c.args) == 4 && c.args[1] == "-preview" {
		return c.previewDoc(schooldata.KindStaff, c.args[2], c.args[3])
	}
	if len(c.args) != 3 {
		return c.usage()
	}
	f, err := os.Open(c.args[2])
	if err != nil {
		return c.fail(err)
	}
	defer f.Close()
	rows, enc, err := schooldata.ReadStaff(f)
	if err != nil {
		return c.failImport(c.args[2], enc, err)
	}
	data, err := json.Marshal(schooldata.HashStaff(rows))
	if err != nil {
		return c.fail(err)
	}
	seq, err := c.st.PutChange(c.ctx, c.args[1], schooldata.KindStaff, data, c.now)
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "staff for school %s read as %s (%d people), imported as change %d; edges pick it up on their next pull\n", c.args[1], enc, len(rows), seq)
	return 0
}

// exportStaff: export-staff CODE writes the latest staff list as CSV
// (without secrets, which the hub does not keep).
func (c *syncCmd) exportStaff() int {
	if len(c.args) != 2 {
		return c.usage()
	}
	latest, err := c.latestChange(schooldata.KindStaff)
	if err != nil {
		return c.fail(err)
	}
	if latest == nil {
		return c.fail(fmt.Errorf("no staff imported for school %s", c.args[1]))
	}
	var l schooldata.StaffList
	if err := json.Unmarshal(latest, &l); err != nil {
		return c.fail(err)
	}
	fmt.Fprint(c.stdout, utf8BOM)
	if err := schooldata.WriteStaffCSV(c.stdout, &l); err != nil {
		return c.fail(err)
	}
	return 0
}

// utf8BOM starts every export: without it Chinese Excel and WPS read a
// CSV file as GBK and show UTF-8 names garbled.
const utf8BOM = "\ufeff"

// exportRecords: export-records [-tz ZONE] CODE writes every record the
// school's edges sent as CSV for a spreadsheet: one value per column,
// times in the school's zone, classrooms and pupils by name (pupils from
// the school's latest roster).
func (c *syncCmd) exportRecords() int {
	fs := flag.NewFlagSet("export-records", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	tz := fs.String("tz", "Asia/Shanghai", "the school's time zone for the time columns")
	if err := fs.Parse(c.args[1:]); err != nil || fs.NArg() != 1 {
		return c.usage()
	}
	loc, err := time.LoadLocation(*tz)
	if err != nil {
		return c.fail(fmt.Errorf("-tz %q: %w (an IANA zone such as Asia/Shanghai or Asia/Urumqi)", *tz, err))
	}
	school := fs.Arg(0)
	pupils := map[string]string{}
	if data, err := c.latestChangeOf(school, schooldata.KindRoster); err != nil {
		return c.fail(err)
	} else if data != nil {
		var ro schooldata.Roster
		if json.Unmarshal(data, &ro) == nil {
			for _, s := range ro.Students {
				pupils[s.ID] = s.Name
			}
		}
	}
	fmt.Fprint(c.stdout, utf8BOM)
	cw := csv.NewWriter(c.stdout)
	cw.UseCRLF = true // what Excel writes, and what Notepad shows as lines
	// The first six columns are the ones scripts read before names came.
	_ = cw.Write([]string{"edge", "seq", "id", "kind", "edge_time", "received", "classroom", "student_id", "student", "session", "data", "payload"})
	const layout = "2006-01-02 15:04:05"
	err = c.st.Records(c.ctx, school, func(r hub.StoredRecord) error {
		var p struct {
			Classroom     string          `json:"classroom_id"`
			ClassroomName string          `json:"classroom_name"`
			Student       string          `json:"student_id"`
			Session       string          `json:"session_id"`
			Data          json.RawMessage `json:"data"`
		}
		_ = json.Unmarshal(r.Payload, &p) // a record of another shape keeps its columns empty
		classroom := p.ClassroomName
		if classroom == "" {
			classroom = p.Classroom
		}
		return cw.Write([]string{r.Edge, strconv.FormatUint(r.Seq, 10), r.ID, r.Kind, time.UnixMilli(r.At).In(loc).Format(layout), r.Received.In(loc).Format(layout),
			classroom, p.Student, pupils[p.Student], p.Session, string(p.Data), string(r.Payload)})
	})
	cw.Flush()
	if err == nil {
		err = cw.Error()
	}
	if err != nil {
		return c.fail(err)
	}
	return 0
}

// failImport reports a refused import file: its problems in the
// operator's language (LC_ALL, LC_MESSAGES, LANG: zh_CN.UTF-8 gives
// Chinese), with the encoding the file was read in.
func (c *syncCmd) failImport(file, enc string, err error) int {
	var ie *schooldata.ImportError
	lang := console.LanguageFromEnv(os.Getenv)
	if !errors.As(err, &ie) || lang == "en" {
		if enc != "" {
			return c.fail(fmt.Errorf("%s (read as %s): %w", file, enc, err))
		}
		return c.fail(fmt.Errorf("%s: %w", file, err))
	}
	tr := console.NewTranslator(lang)
	if enc == "" {
		enc = "—"
	}
	fmt.Fprintf(c.stderr, "cityhub %s: %s: %s\n", c.args[0], file, tr.T("att.roster.refused", map[string]string{"encoding": enc}))
	for _, p := range ie.Problems {
		fmt.Fprintln(c.stderr, "  "+tr.Problem(p.Row, p.Column, p.Code, p.Args, p.Msg))
	}
	return 1
}

// exportDoc: export-roster CODE, export-timetable CODE write the latest
// imported document back as CSV.
func (c *syncCmd) exportDoc() int {
	if len(c.args) != 2 {
		return c.usage()
	}
	kind := strings.TrimPrefix(c.args[0], "export-")
	latest, err := c.latestChange(kind)
	if err != nil {
		return c.fail(err)
	}
	if latest == nil {
		return c.fail(fmt.Errorf("no %s imported for school %s", kind, c.args[1]))
	}
	fmt.Fprint(c.stdout, utf8BOM)
	if kind == schooldata.KindRoster {
		var r schooldata.Roster
		if err = json.Unmarshal(latest, &r); err == nil {
			err = schooldata.WriteRosterCSV(c.stdout, &r)
		}
	} else {
		var t schooldata.Timetable
		if err = json.Unmarshal(latest, &t); err == nil {
			err = schooldata.WriteTimetableCSV(c.stdout, &t)
		}
	}
	if err != nil {
		return c.fail(err)
	}
	return 0
}

// latestChange is the data of the school's (args[1]) newest change of
// kind, nil when there is none.
func (c *syncCmd) latestChange(kind string) ([]byte, error) {
	return c.latestChangeOf(c.args[1], kind)
}

// latestChangeOf is the data of school's newest change of kind.
func (c *syncCmd) latestChangeOf(school, kind string) ([]byte, error) {
	var latest []byte
	for since := uint64(0); ; {
		ch, err := c.st.Changes(c.ctx, school, since, 100)
		if err != nil {
			return nil, err
		}
		for _, ct := range ch {
			if ct.Kind == kind {
				latest = ct.Data
			}
			since = ct.Seq
		}
		if len(ch) < 100 {
			return latest, nil
		}
	}
}

// hubHandler puts the sync API, /metrics and /healthz in front of the
// catalogue handler; counts tallies sync for the health series.
func hubHandler(reg *prometheus.Registry, catalogue, firmware, admin http.Handler, st hub.Store, ca hub.Issuer, staff func(string) bool, counts *hub.SyncCounts, log *slog.Logger) http.Handler {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv := hub.NewServer(hub.Config{Store: st, CA: ca, Staff: staff, Logger: log.With("component", "sync"), Registry: reg, Counts: counts})
	mux := http.NewServeMux()
	mux.Handle("/api/v1/sync/", srv)
	if admin != nil {
		mux.Handle("/api/v1/admin/", admin)
		mux.Handle("/console/", admin)
		mux.Handle("/console", admin)
		// The city console speaks through the edge's message catalogues and
		// loader (keys city.*), so both consoles translate one way.
		pages := console.Handler()
		mux.Handle("GET /i18n.js", pages)
		mux.Handle("GET /i18n/", pages)
	}
	// What the city holds for its schools is read and added to only by an
	// enrolled edge (signed) or city staff: the catalogue, its bytes,
	// uploads, firmware reports, releases and bundles.
	mux.Handle("GET /api/v1/catalog", srv.Gate(0, catalogue))
	mux.Handle("GET /api/v1/content/", srv.Gate(0, catalogue))
	mux.Handle("POST /api/v1/uploads", srv.Gate(maxUploadAnnounce, catalogue))
	mux.Handle("PATCH /api/v1/uploads/", srv.Gate(0, catalogue)) // bytes streamed, checked by their SHA-256
	if firmware != nil {
		mux.Handle("POST /api/v1/firmware/check", srv.Gate(maxFirmwareCheck, firmware))
		mux.Handle("GET /api/v1/firmware/releases", srv.Gate(0, firmware))
		mux.Handle("GET /api/v1/firmware/bundles/", srv.Gate(0, firmware))
		mux.Handle("/api/v1/firmware/", firmware) // publishing: the publish token
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		if err := srv.Ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "degraded", "checks": map[string]string{"sync_store": err.Error()}})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "ok", "checks": map[string]string{"sync_store": "ok"}})
	})
	mux.Handle("/", catalogue)
	return mux
}

// Bodies the credential check reads before handing on (it verifies the
// signature over them): an upload's announcement and a firmware check.
const (
	maxUploadAnnounce = 8 << 10
	maxFirmwareCheck  = 64 << 10
)
