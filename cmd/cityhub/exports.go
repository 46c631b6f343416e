package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/sync/catalog"
	"github.com/campusedge/campusedge/sync/cityadmin"
	"github.com/campusedge/campusedge/sync/hub"
)

// Exports and catalogue imports through a running hub: the admin API
// answers GET /api/v1/admin/schools/{code}/exports/{kind} with exactly
// what cityhub export-KIND prints (the same code, on the hub's store), and
// cityhub import FOLDER sends each file to POST /api/v1/admin/catalog/items,
// so neither needs the hub stopped.

// exportKinds are the exports the API serves, by their command's suffix.
var exportKinds = map[string]bool{"roster": true, "timetable": true, "staff": true, "records": true}

// exportHandler serves a school's export from st.
func exportHandler(st hub.Store) func(http.ResponseWriter, *http.Request, cityadmin.Principal) {
	return func(w http.ResponseWriter, r *http.Request, p cityadmin.Principal) {
		code, kind := r.PathValue("code"), r.PathValue("kind")
		if !p.Can(code) {
			httpapi.WriteError(w, http.StatusNotFound, "not_found", "no school "+code+" among yours")
			return
		}
		if !exportKinds[kind] {
			httpapi.WriteError(w, http.StatusNotFound, "not_found", "no export "+kind+" (roster, timetable, staff or records)")
			return
		}
		args := []string{"export-" + kind}
		if tz := r.URL.Query().Get("tz"); tz != "" && kind == "records" {
			args = append(args, "-tz", tz)
		}
		args = append(args, code)
		out := &lazyCSV{w: w, name: code + "-" + kind + ".csv"}
		var errb bytes.Buffer
		if runSync(r.Context(), st, args, out, &errb, nil) == 0 {
			return
		}
		msg := strings.TrimSpace(errb.String())
		if out.started {
			// The file is cut short: abort the response so the client sees
			// an error, never a truncated export that looks whole.
			panic(http.ErrAbortHandler)
		}
		if strings.Contains(msg, "imported for school") {
			httpapi.WriteError(w, http.StatusNotFound, "nothing_to_export", msg)
			return
		}
		httpapi.WriteError(w, http.StatusBadRequest, "export_failed", msg)
	}
}

// lazyCSV answers 200 text/csv at the first byte written, so an export
// that fails before writing anything can still answer an error.
type lazyCSV struct {
	w       http.ResponseWriter
	name    string
	started bool
}

func (l *lazyCSV) Write(b []byte) (int, error) {
	if !l.started {
		l.started = true
		l.w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		l.w.Header().Set("Content-Disposition", "attachment; filename=\""+l.name+"\"")
		l.w.WriteHeader(http.StatusOK)
	}
	return l.w.Write(b)
}

// remoteExport prints a school's export from a running hub.
func remoteExport(ctx context.Context, r *remote, args []string, stdout, stderr io.Writer) int {
	kind := strings.TrimPrefix(args[0], "export-")
	rest := args[1:]
	q := url.Values{}
	if kind == "records" && len(rest) == 3 && rest[0] == "-tz" {
		q.Set("tz", rest[1])
		rest = rest[2:]
	}
	if len(rest) != 1 || !exportKinds[kind] {
		fmt.Fprint(stderr, "usage:\n"+syncUsage)
		return 2
	}
	path := "/api/v1/admin/schools/" + url.PathEscape(rest[0]) + "/exports/" + kind
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	if err := r.stream(ctx, http.MethodGet, path, "", nil, stdout); err != nil {
		fmt.Fprintln(stderr, "cityhub "+args[0]+":", err)
		return 1
	}
	return 0
}

// remoteImportFolder registers every file under folder in a running hub's
// catalogue and prints ID<TAB>PATH for each, as import does on the store.
func remoteImportFolder(ctx context.Context, r *remote, folder string, stdout, stderr io.Writer) int {
	paths, err := catalog.ImportPaths(folder)
	if err != nil {
		fmt.Fprintln(stderr, "cityhub import:", err)
		return 1
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			fmt.Fprintln(stderr, "cityhub import:", err)
			return 1
		}
		var out bytes.Buffer
		err = r.stream(ctx, http.MethodPost, "/api/v1/admin/catalog/items?name="+url.QueryEscape(filepath.Base(p)), "application/octet-stream", f, &out)
		f.Close()
		if err != nil {
			fmt.Fprintf(stderr, "cityhub import %s: %v\n", p, err)
			return 1
		}
		var it media.Item
		if err := jsonUnmarshal(out.Bytes(), &it); err != nil {
			fmt.Fprintf(stderr, "cityhub import %s: the hub's answer: %v\n", p, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s\t%s\n", it.ID, p)
	}
	return 0
}
