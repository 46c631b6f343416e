package cityadmin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/schooldata"
)

// Preview is what an import would change, or why it cannot be applied.
type Preview struct {
	School    string                `json:"school"`
	Kind      string                `json:"kind"`
	Rows      int                   `json:"rows"`
	Errors    []schooldata.RowError `json:"errors"`
	Added     int                   `json:"added"`
	Removed   int                   `json:"removed"`
	Changed   int                   `json:"changed"`
	Unchanged int                   `json:"unchanged"`
	// Sample lists up to maxSample of the differences, for the operator
	// to check before applying.
	Sample  []Diff `json:"sample"`
	Applied bool   `json:"applied"`
	Change  uint64 `json:"change,omitempty"` // the downlink change, when applied
}

// Diff is one difference: op is add, remove or change.
type Diff struct {
	Op   string `json:"op"`
	Key  string `json:"key"`
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

const maxSample = 50

// LatestDoc is the data of the school's newest downlink change of kind,
// nil when there is none.
func LatestDoc(ctx context.Context, st hub.Store, school, kind string) ([]byte, error) {
	var latest []byte
	for since := uint64(0); ; {
		ch, err := st.Changes(ctx, school, since, 100)
		if err != nil {
			return nil, err
		}
		for _, c := range ch {
			if c.Kind == kind {
				latest = c.Data
			}
			since = c.Seq
		}
		if len(ch) < 100 {
			return latest, nil
		}
	}
}

// keyed turns a document into key -> canonical row text.
func keyed(kind string, doc any) (map[string]string, error) {
	out := map[string]string{}
	add := func(k string, v any) {
		b, _ := json.Marshal(v)
		out[k] = string(b)
	}
	switch d := doc.(type) {
	case *schooldata.Roster:
		for _, s := range d.Students {
			add(s.ID, s)
		}
	case *schooldata.Timetable:
		for _, s := range d.Slots {
			add(s.Day+" p"+strconv.Itoa(s.Period)+" "+s.Group, s)
		}
	case []schooldata.StaffRow:
		for _, r := range d {
			add(r.ID, staffView{r.Name, r.Roles, r.Rooms, r.Secret != ""})
		}
	case *schooldata.StaffList:
		for _, m := range d.Staff {
			add(m.ID, staffView{m.Name, m.Roles, m.Rooms, m.Hash != ""})
		}
	default:
		return nil, fmt.Errorf("unknown kind %s", kind)
	}
	return out, nil
}

// staffView is a staff member as a preview compares and shows it: whether
// an initial secret is set, never the secret or its hash (a new hash of
// the same secret differs anyway).
type staffView struct {
	Name      string   `json:"name"`
	Roles     []string `json:"roles"`
	Rooms     []string `json:"rooms"`
	HasSecret bool     `json:"has_secret"`
}

// EncodeDoc is the downlink document of a parsed import: staff secrets
// are hashed here (argon2id, tens of milliseconds each), so only when the
// import is applied, not on every preview.
func EncodeDoc(doc any) ([]byte, error) {
	if rows, ok := doc.([]schooldata.StaffRow); ok {
		return json.Marshal(schooldata.HashStaff(rows))
	}
	return json.Marshal(doc)
}

// PreviewImport parses csv as a kind document (roster, timetable, staff)
// for school and compares it with the school's current one. A document
// with row errors has p.Errors set and nothing else; parsed is the
// document when valid (EncodeDoc makes it what edges pull).
func PreviewImport(ctx context.Context, st hub.Store, school, kind string, csv []byte) (p Preview, parsed any, err error) {
	p = Preview{School: school, Kind: kind, Errors: []schooldata.RowError{}, Sample: []Diff{}}
	var doc, old any
	switch kind {
	case schooldata.KindRoster:
		var r *schooldata.Roster
		r, err = schooldata.ParseRosterCSV(bytes.NewReader(csv))
		doc, old = r, &schooldata.Roster{}
		if r != nil {
			p.Rows = len(r.Students)
		}
	case schooldata.KindTimetable:
		var t *schooldata.Timetable
		t, err = schooldata.ParseTimetableCSV(bytes.NewReader(csv))
		doc, old = t, &schooldata.Timetable{}
		if t != nil {
			p.Rows = len(t.Slots)
		}
	case schooldata.KindStaff:
		var rows []schooldata.StaffRow
		rows, err = schooldata.ParseStaffCSV(bytes.NewReader(csv))
		doc, old = rows, &schooldata.StaffList{}
		p.Rows = len(rows)
	default:
		return p, nil, fmt.Errorf("kind %q: want roster, timetable or staff", kind)
	}
	var ie *schooldata.ImportError
	if errors.As(err, &ie) {
		p.Errors = ie.Problems
		return p, nil, nil
	} else if err != nil {
		p.Errors = []schooldata.RowError{{Row: 1, Msg: err.Error()}}
		return p, nil, nil
	}
	prev, err := LatestDoc(ctx, st, school, kind)
	if err != nil {
		return p, nil, err
	}
	if prev != nil {
		if err := json.Unmarshal(prev, old); err != nil {
			return p, nil, fmt.Errorf("the school's current %s: %w", kind, err)
		}
	}
	now, _ := keyed(kind, doc)
	was, _ := keyed(kind, old)
	diff(&p, was, now)
	return p, doc, nil
}

func diff(p *Preview, was, now map[string]string) {
	keys := make([]string, 0, len(was)+len(now))
	for k := range was {
		keys = append(keys, k)
	}
	for k := range now {
		if _, ok := was[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		o, inOld := was[k]
		n, inNew := now[k]
		var d Diff
		switch {
		case !inOld:
			p.Added++
			d = Diff{Op: "add", Key: k, To: n}
		case !inNew:
			p.Removed++
			d = Diff{Op: "remove", Key: k, From: o}
		case o != n:
			p.Changed++
			d = Diff{Op: "change", Key: k, From: o, To: n}
		default:
			p.Unchanged++
			continue
		}
		if len(p.Sample) < maxSample {
			p.Sample = append(p.Sample, d)
		}
	}
}

// importDoc previews a CSV import (the body), and with ?apply=true
// publishes it to the school's edges when it has no row errors.
func (a *API) importDoc(w http.ResponseWriter, r *http.Request, p Principal) {
	code, ok := a.schoolOf(w, r, p)
	if !ok {
		return
	}
	kind := r.PathValue("kind")
	if kind != schooldata.KindRoster && kind != schooldata.KindTimetable && kind != schooldata.KindStaff {
		httpapi.WriteError(w, http.StatusNotFound, "unknown_kind", "imports are roster, timetable or staff")
		return
	}
	body, ok := readBody(w, r, schooldata.MaxFileBytes)
	if !ok {
		return
	}
	pv, parsed, err := PreviewImport(r.Context(), a.st, code, kind, body)
	if err != nil {
		a.storeErr(w, "import", err)
		return
	}
	if r.URL.Query().Get("apply") != "true" {
		httpapi.WriteJSON(w, http.StatusOK, pv)
		return
	}
	if len(pv.Errors) > 0 {
		httpapi.WriteJSON(w, http.StatusUnprocessableEntity, map[string]any{
			"error":   map[string]string{"code": "invalid_rows", "message": fmt.Sprintf("%d row error(s); fix the file and preview again: nothing was applied", len(pv.Errors))},
			"preview": pv})
		return
	}
	data, err := EncodeDoc(parsed)
	if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	seq, err := a.st.PutChange(r.Context(), code, kind, data, a.now().UTC())
	if err != nil {
		a.storeErr(w, "import", err)
		return
	}
	pv.Applied, pv.Change = true, seq
	a.log.Info("import applied", "school", code, "kind", kind, "change", seq, "rows", pv.Rows, "by", p.User)
	httpapi.WriteJSON(w, http.StatusOK, pv)
}
