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
	"github.com/campusedge/campusedge/edge/token"
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
  cityhub [flags] import-roster CODE FILE.csv     student_id,name,homeroom,groups
  cityhub [flags] import-timetable CODE FILE.csv  day,period,start,end,room,group,subject,teacher,resources
  cityhub [flags] export-records CODE             CSV of every record the school's edges sent
  cityhub [flags] export-roster CODE | export-timetable CODE
With the default bbolt store, commands need the hub stopped (they take its lock);
with -db postgres://… they run beside any number of serving replicas.
`

var syncCommands = map[string]bool{"school": true, "enrol-token": true, "edge": true, "import-roster": true,
	"import-timetable": true, "export-records": true, "export-roster": true, "export-timetable": true}

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

// runSync runs one sync command.
// hubPin gives the pin enrol-token puts in the token.
func runSync(ctx context.Context, st hub.Store, args []string, stdout, stderr io.Writer, hubPin func() (string, error)) int {
	fail := func(err error) int { fmt.Fprintln(stderr, "cityhub "+args[0]+":", err); return 1 }
	usage := func() int { fmt.Fprint(stderr, "usage:\n"+syncUsage); return 2 }
	now := time.Now().UTC()
	switch args[0] {
	case "school":
		switch {
		case len(args) == 4 && args[1] == "add":
			if !wire.ValidSchool(args[2]) {
				return fail(fmt.Errorf("school code %q must be 1-32 of letters, digits, '.', '_', '-' (the code edged -school uses)", args[2]))
			}
			if err := st.CreateSchool(ctx, hub.School{Code: args[2], Name: args[3], Created: now}); err != nil {
				return fail(err)
			}
			fmt.Fprintf(stdout, "school %s added\n", args[2])
			return 0
		case len(args) == 2 && args[1] == "list":
			ss, err := st.Schools(ctx)
			if err != nil {
				return fail(err)
			}
			for _, s := range ss {
				fmt.Fprintf(stdout, "%s\t%s\n", s.Code, s.Name)
			}
			return 0
		}
		return usage()
	case "enrol-token":
		fs := flag.NewFlagSet("enrol-token", flag.ContinueOnError)
		fs.SetOutput(stderr)
		ttl := fs.Duration("ttl", 7*24*time.Hour, "how long the token stays usable")
		pinFlag := fs.String("pin", "", "pin of the TLS key edges will see, when a TLS proxy in front of cityhub serves another key (openssl … | base64)")
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 1 {
			return usage()
		}
		pin := *pinFlag
		if pin == "" {
			p, err := hubPin()
			if err != nil {
				return fail(fmt.Errorf("the hub's TLS key for the token's pin: %w", err))
			}
			pin = p
		}
		if certs.ValidPin(pin) != nil {
			return fail(fmt.Errorf("-pin %q is not a pin: base64 of the SHA-256 of a DER SubjectPublicKeyInfo (cityhub tls-pin prints the hub's)", pin))
		}
		tok := token.New()
		if err := st.CreateEnrolToken(ctx, fs.Arg(0), token.Digest(tok), now.Add(*ttl)); err != nil {
			if errors.Is(err, hub.ErrNotFound) {
				return fail(fmt.Errorf("%w: add it first with: cityhub school add %s NAME", err, fs.Arg(0)))
			}
			return fail(err)
		}
		fmt.Fprintln(stdout, wire.FormatEnrolToken(tok, pin))
		fmt.Fprintf(stderr, "one-time token for school %s, valid until %s; it carries the pin of the hub's TLS key (%s); on the edge: edged enrol -data DIR -cloud https://HUB:%s -token TOKEN\n",
			fs.Arg(0), now.Add(*ttl).Format(time.RFC3339), pin, defaultHTTPSPort)
		return 0
	case "edge":
		switch {
		case len(args) >= 2 && len(args) <= 3 && args[1] == "list":
			school := ""
			if len(args) == 3 {
				school = args[2]
			}
			es, err := st.Edges(ctx, school)
			if err != nil {
				return fail(err)
			}
			for _, e := range es {
				fmt.Fprintf(stdout, "%s\t%s\tacked=%d\trevoked=%t\tenrolled=%s\n", e.ID, e.School, e.Acked, e.Revoked, e.Enrolled.Format(time.RFC3339))
			}
			return 0
		case len(args) == 3 && args[1] == "revoke":
			if err := st.RevokeEdge(ctx, args[2]); err != nil {
				return fail(err)
			}
			fmt.Fprintf(stdout, "edge %s revoked\n", args[2])
			return 0
		}
		return usage()
	case "import-roster", "import-timetable":
		if len(args) != 3 {
			return usage()
		}
		f, err := os.Open(args[2])
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		var doc any
		kind := schooldata.KindRoster
		if args[0] == "import-roster" {
			doc, err = schooldata.ParseRosterCSV(f)
		} else {
			kind = schooldata.KindTimetable
			doc, err = schooldata.ParseTimetableCSV(f)
		}
		if err != nil {
			return fail(fmt.Errorf("%s: %w", args[2], err))
		}
		data, err := json.Marshal(doc)
		if err != nil {
			return fail(err)
		}
		seq, err := st.PutChange(ctx, args[1], kind, data, now)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "%s for school %s imported as change %d; edges pick it up on their next pull\n", kind, args[1], seq)
		return 0
	case "export-records":
		if len(args) != 2 {
			return usage()
		}
		cw := csv.NewWriter(stdout)
		_ = cw.Write([]string{"edge", "seq", "id", "kind", "edge_time", "received", "payload"})
		err := st.Records(ctx, args[1], func(r hub.StoredRecord) error {
			return cw.Write([]string{r.Edge, strconv.FormatUint(r.Seq, 10), r.ID, r.Kind,
				time.UnixMilli(r.At).UTC().Format(time.RFC3339Nano), r.Received.UTC().Format(time.RFC3339Nano), string(r.Payload)})
		})
		cw.Flush()
		if err == nil {
			err = cw.Error()
		}
		if err != nil {
			return fail(err)
		}
		return 0
	case "export-roster", "export-timetable":
		if len(args) != 2 {
			return usage()
		}
		kind := strings.TrimPrefix(args[0], "export-")
		var latest []byte
		for since := uint64(0); ; {
			ch, err := st.Changes(ctx, args[1], since, 100)
			if err != nil {
				return fail(err)
			}
			for _, c := range ch {
				if c.Kind == kind {
					latest = c.Data
				}
				since = c.Seq
			}
			if len(ch) < 100 {
				break
			}
		}
		if latest == nil {
			return fail(fmt.Errorf("no %s imported for school %s", kind, args[1]))
		}
		var err error
		if kind == schooldata.KindRoster {
			var r schooldata.Roster
			if err = json.Unmarshal(latest, &r); err == nil {
				err = schooldata.WriteRosterCSV(stdout, &r)
			}
		} else {
			var t schooldata.Timetable
			if err = json.Unmarshal(latest, &t); err == nil {
				err = schooldata.WriteTimetableCSV(stdout, &t)
			}
		}
		if err != nil {
			return fail(err)
		}
		return 0
	}
	return usage()
}

// hubHandler puts the sync API, /metrics and /healthz in front of the
// catalogue handler.
func hubHandler(catalogue http.Handler, st hub.Store, ca hub.Issuer, log *slog.Logger) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv := hub.NewServer(hub.Config{Store: st, CA: ca, Logger: log.With("component", "sync"), Registry: reg})
	mux := http.NewServeMux()
	mux.Handle("/api/v1/sync/", srv)
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
