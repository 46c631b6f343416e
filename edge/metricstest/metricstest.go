// Package metricstest reads the Prometheus text that GET /metrics answers,
// so that tests and benches check a counter or a gauge the same way instead
// of each parsing the format again: Value finds one sample by its name as
// written (labels included), Parse and Read give every unlabelled sample,
// the figures benches read (campusedge_terminals_online, go_goroutines…).
// It is a test helper: only tests and test-helper packages import it.
package metricstest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Parse reads the "name value" lines of the Prometheus text format into a
// map, skipping comments and labelled samples.
func Parse(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// Value is the value of the sample name in the Prometheus text b, or -1
// when b has none. name is the sample as written, labels included
// (`campusedge_sessions_kept{state="ended"}`).
func Value(b []byte, name string) float64 {
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			v, _, _ = strings.Cut(strings.TrimSpace(v), " ") // a timestamp may follow
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return f
			}
		}
	}
	return -1
}

// Read fetches base+"/metrics" with client (http.DefaultClient when nil)
// and parses it.
func Read(ctx context.Context, client *http.Client, base string) (map[string]float64, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", res.Status)
	}
	return Parse(io.LimitReader(res.Body, 16<<20))
}

// Grep is the lines of b that contain substr, for a failure message that
// shows the metrics a test looked at.
func Grep(b []byte, substr string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
