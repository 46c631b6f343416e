package benchtools

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/campusedge/campusedge/edge/metricstest"
)

// Edge is a client of a running edged's HTTP API, as an admin and as
// terminals pairing.
type Edge struct {
	URL   string // http://host:port
	Token string // admin token
	HTTP  *http.Client
}

// NewEdge returns a client for base with keep-alive connections for up to
// conns concurrent callers.
func NewEdge(base, adminToken string, conns int) *Edge {
	return &Edge{URL: strings.TrimRight(base, "/"), Token: adminToken, HTTP: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: 30 * time.Second},
	}}
}

// APIError is a non-expected status with the edge's error body.
type APIError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: status %d: %s", e.Method, e.Path, e.Status, e.Body)
}

func (e *Edge) call(ctx context.Context, method, path string, admin bool, body, out any, want int) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.URL+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if admin {
		req.Header.Set("Authorization", "Bearer "+e.Token)
	}
	res, err := e.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if res.StatusCode != want {
		return &APIError{Method: method, Path: path, Status: res.StatusCode, Body: strings.TrimSpace(string(data))}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// CreateClassroom creates a classroom and returns its id.
func (e *Edge) CreateClassroom(ctx context.Context, name, roomCode string) (string, error) {
	var c struct {
		ID string `json:"id"`
	}
	err := e.call(ctx, http.MethodPost, "/api/v1/classrooms", true, map[string]string{"name": name, "room_code": roomCode}, &c, http.StatusCreated)
	return c.ID, err
}

// PairingCode issues a single-use pairing code for a classroom.
func (e *Edge) PairingCode(ctx context.Context, classroomID string) (string, error) {
	var c struct {
		Code string `json:"code"`
	}
	err := e.call(ctx, http.MethodPost, "/api/v1/classrooms/"+classroomID+"/pairing-codes", true, nil, &c, http.StatusCreated)
	return c.Code, err
}

// Credential is what a terminal gets for a pairing code.
type Credential struct {
	TerminalID  string `json:"terminal_id"`
	Token       string `json:"token"`
	ClassroomID string `json:"classroom_id"`
}

// Pair trades a code for a terminal credential, as a terminal does.
func (e *Edge) Pair(ctx context.Context, code, name, version string) (Credential, error) {
	var c Credential
	err := e.call(ctx, http.MethodPost, "/api/v1/pair", false, map[string]string{"code": code, "name": name, "version": version}, &c, http.StatusCreated)
	if err == nil && (c.Token == "" || c.TerminalID == "") {
		err = fmt.Errorf("pair: the answer has no terminal id or token")
	}
	return c, err
}

// TerminalState is the part of GET /api/v1/terminals the bench checks.
type TerminalState struct {
	ID     string `json:"id"`
	Online bool   `json:"online"`
}

// Terminals lists the paired terminals (admin).
func (e *Edge) Terminals(ctx context.Context) ([]TerminalState, error) {
	var out struct {
		Terminals []TerminalState `json:"terminals"`
	}
	err := e.call(ctx, http.MethodGet, "/api/v1/terminals", true, nil, &out, http.StatusOK)
	return out.Terminals, err
}

// CountOnline counts the terminals the edge reports online.
func (e *Edge) CountOnline(ctx context.Context) (online, total int, err error) {
	ts, err := e.Terminals(ctx)
	for _, t := range ts {
		if t.Online {
			online++
		}
	}
	return online, len(ts), err
}

// Metrics reads the unlabelled samples of GET /metrics (name → value).
func (e *Edge) Metrics(ctx context.Context) (map[string]float64, error) {
	return metricstest.Read(ctx, e.HTTP, e.URL)
}

// PairResult is the outcome of PairTerminals.
type PairResult struct {
	Credentials []Credential
	// PerTerminal is the time to issue one code and pair with it.
	PerTerminal []time.Duration
	Elapsed     time.Duration
}

// PairTerminals creates classrooms classrooms (room codes B001…) and pairs n
// terminals spread evenly over them through the real API: one single-use
// code per terminal, workers requests in flight. It stops at the first
// error.
func (e *Edge) PairTerminals(ctx context.Context, n, classrooms, workers int) (PairResult, error) {
	var res PairResult
	if n < 1 || classrooms < 1 || workers < 1 {
		return res, fmt.Errorf("need at least one terminal, classroom and worker")
	}
	ids := make([]string, classrooms)
	for i := range ids {
		id, err := e.CreateClassroom(ctx, fmt.Sprintf("Bench room %d", i+1), fmt.Sprintf("B%03d", i+1))
		if err != nil {
			return res, err
		}
		ids[i] = id
	}
	res.Credentials = make([]Credential, n)
	res.PerTerminal = make([]time.Duration, n)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	start := time.Now()
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				code, err := e.PairingCode(ctx, ids[i%classrooms])
				var c Credential
				if err == nil {
					c, err = e.Pair(ctx, code, fmt.Sprintf("bench-%04d", i), "edgebench")
				}
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("terminal %d: %w", i, err); cancel() })
					return
				}
				res.PerTerminal[i] = time.Since(t0)
				res.Credentials[i] = c
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res, firstErr
}
