package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/token"
	"github.com/campusedge/campusedge/sync/cityadmin"
	"github.com/campusedge/campusedge/sync/hub"
)

// Files a serving cityhub leaves in its data dir so that the CLI on the
// same machine can drive it while it holds the bbolt lock.
const (
	adminKeyFile = "admin.key" // the API key (0600)
	adminURLFile = "admin.url" // where the admin API answers on this machine
	cliUser      = "cityhub-cli"
	apiKeyEnv    = "CITYHUB_API_KEY"
)

// ensureAPIKey makes sure DATA/admin.key holds an API key the store knows
// (account cityhub-cli, city admin, no password) and writes DATA/admin.url
// for addr, the plain listener.
func ensureAPIKey(ctx context.Context, st hub.Store, data string, addr string) error {
	if _, err := st.Account(ctx, cliUser); errors.Is(err, hub.ErrNotFound) {
		if err := st.PutAccount(ctx, hub.Account{User: cliUser, Role: hub.RoleCityAdmin, Created: time.Now().UTC()}); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	keyPath := filepath.Join(data, adminKeyFile)
	key, err := os.ReadFile(keyPath)
	valid := false
	if err == nil {
		_, serr := st.Session(ctx, token.Digest(strings.TrimSpace(string(key))), time.Now())
		valid = serr == nil
	}
	if !valid {
		secret, err := cityadmin.NewSession(ctx, st, cliUser, "api", time.Now().AddDate(10, 0, 0))
		if err != nil {
			return err
		}
		if err := fsutil.WriteFileAtomic(keyPath, []byte(secret+"\n"), 0o600); err != nil {
			return err
		}
	}
	host, port, _ := strings.Cut(addr, "]:")
	if !strings.HasPrefix(addr, "[") {
		i := strings.LastIndex(addr, ":")
		host, port = addr[:i], addr[i+1:]
	}
	if host == "" || host == "0.0.0.0" || host == "[::" || host == "::" {
		host = "127.0.0.1"
	} else if strings.HasPrefix(host, "[") {
		host += "]"
	}
	return fsutil.WriteFileAtomic(filepath.Join(data, adminURLFile), []byte("http://"+host+":"+port+"\n"), 0o600)
}

// remote is the admin API of a running hub, as the CLI uses it.
type remote struct {
	base string
	key  string
	hc   *http.Client
}

// localRemote is the hub serving on this data dir, if its files are there.
func localRemote(data string) (*remote, error) {
	u, err1 := os.ReadFile(filepath.Join(data, adminURLFile))
	k, err2 := os.ReadFile(filepath.Join(data, adminKeyFile))
	if err1 != nil || err2 != nil {
		return nil, errors.Join(err1, err2)
	}
	return newRemote(strings.TrimSpace(string(u)), strings.TrimSpace(string(k)))
}

func newRemote(base, key string) (*remote, error) { return newPinnedRemote(base, key, "") }

// newPinnedRemote is newRemote trusting exactly the TLS key with pin (the
// hub's own certificate, cityhub tls-pin) instead of the system's roots.
func newPinnedRemote(base, key, pin string) (*remote, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("-hub %q must be an http(s)://HOST:PORT URL", base)
	}
	if key == "" {
		return nil, fmt.Errorf("no API key: set %s (the hub's DATA/%s)", apiKeyEnv, adminKeyFile)
	}
	hc := &http.Client{Timeout: 60 * time.Second}
	if pin != "" {
		if err := certs.ValidPin(pin); err != nil {
			return nil, fmt.Errorf("-hub-pin: %w", err)
		}
		hc.Transport = &http.Transport{TLSClientConfig: certs.PinnedTLS(pin), ForceAttemptHTTP2: true}
	}
	return &remote{base: strings.TrimRight(base, "/"), key: key, hc: hc}, nil
}

// call sends body (JSON unless it is []byte) and decodes the answer into
// out; an API error comes back with its message.
func (r *remote) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	ctype := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ctype = bytes.NewReader(b), "text/csv"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+r.key)
	if rd != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return fmt.Errorf("the hub's admin API at %s: %w", r.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error   struct{ Code, Message string }
			Preview *cityadmin.Preview
		}
		_ = json.Unmarshal(raw, &e)
		if e.Preview != nil && out != nil {
			_ = json.Unmarshal(mustJSON(e.Preview), out)
		}
		if e.Error.Message == "" {
			e.Error.Message = strings.TrimSpace(string(raw))
		}
		return fmt.Errorf("%s (%s, HTTP %d)", e.Error.Message, e.Error.Code, resp.StatusCode)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// stream sends body (any size) and copies a 2xx answer to out; it has no
// overall time limit (a province's records export, a lesson video), only
// ctx's.
func (r *remote) stream(ctx context.Context, method, path, ctype string, body io.Reader, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+r.key)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if f, ok := body.(*os.File); ok {
		// A known length lets the hub refuse a file its disk cannot take
		// before a byte is sent.
		if fi, err := f.Stat(); err == nil {
			req.ContentLength = fi.Size()
		}
	}
	hc := *r.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("the hub's admin API at %s: %w", r.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e struct {
			Error struct{ Code, Message string }
		}
		_ = json.Unmarshal(raw, &e)
		if e.Error.Message == "" {
			e.Error.Message = strings.TrimSpace(string(raw))
		}
		return fmt.Errorf("%s (%s, HTTP %d)", e.Error.Message, e.Error.Code, resp.StatusCode)
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		return fmt.Errorf("the hub's answer was cut off: %w", err)
	}
	return nil
}

// runRemote runs a sync command through the admin API.
func runRemote(ctx context.Context, r *remote, args []string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintln(stderr, "cityhub "+args[0]+":", err)
		return 1
	}
	usage := func() int { fmt.Fprint(stderr, "usage:\n"+syncUsage); return 2 }
	switch {
	case args[0] == "school" && len(args) == 4 && args[1] == "add":
		if err := r.call(ctx, "POST", "/api/v1/admin/schools", map[string]string{"code": args[2], "name": args[3]}, nil); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "school %s added\n", args[2])
	case args[0] == "school" && len(args) == 2 && args[1] == "list":
		var out struct{ Schools []hub.School }
		if err := r.call(ctx, "GET", "/api/v1/admin/schools", nil, &out); err != nil {
			return fail(err)
		}
		for _, s := range out.Schools {
			fmt.Fprintf(stdout, "%s\t%s\n", s.Code, s.Name)
		}
	case args[0] == "enrol-token":
		return remoteToken(ctx, r, args, stdout, stderr)
	case args[0] == "edge" && len(args) >= 2 && len(args) <= 3 && args[1] == "list":
		q := ""
		if len(args) == 3 {
			q = "?school=" + url.QueryEscape(args[2])
		}
		var out struct{ Edges []cityadmin.EdgeView }
		if err := r.call(ctx, "GET", "/api/v1/admin/edges"+q, nil, &out); err != nil {
			return fail(err)
		}
		for _, e := range out.Edges {
			bl := "-"
			if e.BacklogKnown {
				bl = strconv.FormatUint(e.Backlog, 10)
			}
			fmt.Fprintf(stdout, "%s\t%s\tacked=%d\trevoked=%t\tenrolled=%s\thealth=%s\tbacklog=%s\n", e.ID, e.School, e.Acked, e.Revoked, e.Enrolled.Format(time.RFC3339), e.Health, bl)
		}
	case args[0] == "edge" && len(args) == 3 && args[1] == "revoke":
		if err := r.call(ctx, "POST", "/api/v1/admin/edges/"+url.PathEscape(args[2])+"/revoke", nil, nil); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "edge %s revoked\n", args[2])
	case args[0] == "import-roster" || args[0] == "import-timetable" || args[0] == "import-staff":
		return remoteImport(ctx, r, args, stdout, stderr)
	case args[0] == "account":
		q, code := parseAccount(args, stderr)
		if code != 0 {
			return code
		}
		if err := r.call(ctx, "POST", "/api/v1/admin/accounts", q, nil); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "account %s saved (%s)\n", q.User, q.Role)
	case strings.HasPrefix(args[0], "export-"):
		return remoteExport(ctx, r, args, stdout, stderr)
	case syncCommand(args[0]) != nil:
		return fail(errors.New("this command reads the store directly: stop the hub, or run it with -db postgres://… beside the replicas"))
	default:
		return usage()
	}
	return 0
}

func remoteToken(ctx context.Context, r *remote, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enrol-token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ttl := fs.Duration("ttl", 7*24*time.Hour, "how long the token stays usable")
	pin := fs.String("pin", "", "pin of the TLS key edges will see (default: the hub's)")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 1 {
		fmt.Fprint(stderr, "usage:\n"+syncUsage)
		return 2
	}
	hours := int(ttl.Hours())
	if hours < 1 {
		hours = 1
	}
	var out cityadmin.IssuedToken
	if err := r.call(ctx, "POST", "/api/v1/admin/schools/"+url.PathEscape(fs.Arg(0))+"/tokens", map[string]any{"ttl_hours": hours, "pin": *pin}, &out); err != nil {
		fmt.Fprintln(stderr, "cityhub enrol-token:", err)
		return 1
	}
	fmt.Fprintln(stdout, out.Token)
	fmt.Fprintf(stderr, "one-time token %s for school %s, valid until %s; on the edge: edged enrol -data DIR -cloud https://HUB:%s -token TOKEN\n",
		out.ID, out.School, out.Expires.Format(time.RFC3339), defaultHTTPSPort)
	return 0
}

func remoteImport(ctx context.Context, r *remote, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	preview := fs.Bool("preview", false, "only show what would change")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 2 {
		fmt.Fprint(stderr, "usage:\n"+syncUsage)
		return 2
	}
	csv, err := os.ReadFile(fs.Arg(1))
	if err != nil {
		fmt.Fprintln(stderr, "cityhub "+args[0]+":", err)
		return 1
	}
	kind := strings.TrimPrefix(args[0], "import-")
	q := "?apply=true"
	if *preview {
		q = ""
	}
	var pv cityadmin.Preview
	err = r.call(ctx, "POST", "/api/v1/admin/schools/"+url.PathEscape(fs.Arg(0))+"/imports/"+kind+q, csv, &pv)
	printPreview(stdout, pv)
	if err != nil {
		fmt.Fprintln(stderr, "cityhub "+args[0]+":", err)
		return 1
	}
	if len(pv.Errors) > 0 {
		fmt.Fprintf(stderr, "cityhub %s: %d row error(s); nothing applied\n", args[0], len(pv.Errors))
		return 1
	}
	if pv.Applied {
		fmt.Fprintf(stdout, "%s for school %s imported as change %d; edges pick it up on their next pull\n", kind, fs.Arg(0), pv.Change)
	}
	return 0
}

func printPreview(w io.Writer, pv cityadmin.Preview) {
	for _, e := range pv.Errors {
		fmt.Fprintln(w, "error:", e.Error())
	}
	if len(pv.Errors) == 0 && pv.Kind != "" {
		fmt.Fprintf(w, "%d rows: %d added, %d removed, %d changed, %d unchanged\n", pv.Rows, pv.Added, pv.Removed, pv.Changed, pv.Unchanged)
	}
}

// parseAccount reads account add [-school CODE] [-disabled] USER ROLE with
// the password from CITYHUB_PASSWORD or stdin's first line.
func parseAccount(args []string, stderr io.Writer) (cityadmin.AccountRequest, int) {
	if len(args) < 2 || args[1] != "add" {
		fmt.Fprint(stderr, "usage:\n"+syncUsage)
		return cityadmin.AccountRequest{}, 2
	}
	fs := flag.NewFlagSet("account add", flag.ContinueOnError)
	fs.SetOutput(stderr)
	school := fs.String("school", "", "the school of a school_admin")
	disabled := fs.Bool("disabled", false, "keep the account but refuse its sign-in")
	if err := fs.Parse(args[2:]); err != nil || fs.NArg() != 2 {
		fmt.Fprint(stderr, "usage:\n"+syncUsage)
		return cityadmin.AccountRequest{}, 2
	}
	pw := os.Getenv("CITYHUB_PASSWORD")
	if pw == "" {
		line, _ := readLine(os.Stdin, cityadmin.MaxPasswordLen+2)
		pw = line
	}
	q := cityadmin.AccountRequest{User: fs.Arg(0), Role: fs.Arg(1), School: *school, Password: pw, Disabled: *disabled}
	if err := q.Check(); err != nil {
		fmt.Fprintln(stderr, "cityhub account add:", err)
		return q, 1
	}
	return q, 0
}

// readLine reads one line of at most max bytes.
func readLine(r io.Reader, max int) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < max {
		n, err := r.Read(one)
		if n == 1 {
			if one[0] == '\n' {
				break
			}
			b = append(b, one[0])
		}
		if err != nil {
			break
		}
	}
	return strings.TrimRight(string(b), "\r"), nil
}
