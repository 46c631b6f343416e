package benchtools

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Build compiles the main packages pkgs (import paths) of the module in src
// into dir and returns the binaries' paths in the same order. It runs the go
// command found on PATH; src "" means the current directory, which go test
// sets to the package directory, inside this module.
func Build(ctx context.Context, src, dir string, pkgs ...string) ([]string, error) {
	var out []string
	for _, pkg := range pkgs {
		bin := filepath.Join(dir, path.Base(pkg))
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
		cmd.Dir = src
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
		}
		out = append(out, bin)
	}
	return out, nil
}

// RaiseFileLimit sets this process's soft RLIMIT_NOFILE to at least need (up
// to the hard limit) and returns the new soft limit. Children started
// afterwards inherit it: the Go runtime raises its own soft limit at start-up
// but hands children the original one unless Setrlimit was called, so this
// always calls it.
func RaiseFileLimit(need uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Max < need {
		return lim.Cur, fmt.Errorf("RLIMIT_NOFILE hard limit %d is below the %d file descriptors needed: raise it (ulimit -Hn, or LimitNOFILE= in the unit) or use fewer terminals", lim.Max, need)
	}
	lim.Cur = max(lim.Cur, need)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", need, err)
	}
	return lim.Cur, nil
}

// SourceState describes the git state of the tree at src ("" for the
// current directory): the commit and whether tracked files are modified, or
// "not a git checkout".
func SourceState(ctx context.Context, src string) string {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = src
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	rev, err := git("rev-parse", "--short=12", "HEAD")
	if err != nil {
		return "not a git checkout"
	}
	dirty, err := git("status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return "commit " + rev
	}
	if dirty != "" {
		var files []string
		for _, l := range strings.Split(dirty, "\n") {
			files = append(files, strings.TrimSpace(l[min(2, len(l)):]))
		}
		if len(files) > 5 {
			files = append(files[:5], "…")
		}
		return fmt.Sprintf("commit %s with %d modified tracked files: %s", rev, len(strings.Split(dirty, "\n")), strings.Join(files, ", "))
	}
	return "commit " + rev + ", clean"
}

var (
	listeningRE = regexp.MustCompile(`msg=listening addr=(\S+)`)
	// edged's HTTPS listener: `msg="listening https" addr=… spki_pin=…`.
	httpsRE = regexp.MustCompile(`msg="listening https" addr=(\S+) .*spki_pin="?([^"\s]+)`)
)

// Process is a server binary started by the bench. Its stderr is kept in
// memory (and copied to Log if set) and scanned for the listening line
// every CampusEdge binary logs.
type Process struct {
	Cmd     *exec.Cmd
	Addr    string    // host:port from "msg=listening addr=…"
	Started time.Time // just before exec
	// Listening is the time from exec to the listening log line.
	Listening time.Duration

	mu   sync.Mutex
	log  bytes.Buffer
	done chan struct{} // closed when the process has exited and stderr is drained
	err  error         // Wait's result, valid after done

	https          chan struct{} // closed when the HTTPS listening line was seen
	httpsAddr, pin string        // from that line; valid after https is closed
}

// maxLogBytes bounds the stderr kept in memory; 2,000 terminals coming and
// going log well under a megabyte.
const maxLogBytes = 16 << 20

// Start runs bin with args and waits (at most within) for its listening line.
// logTo, if not nil, receives a copy of stderr.
func Start(bin string, args []string, within time.Duration, logTo io.Writer) (*Process, error) {
	p := &Process{Cmd: exec.Command(bin, args...), done: make(chan struct{}), https: make(chan struct{})}
	stderr, err := p.Cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	listening := make(chan string, 1)
	p.Started = time.Now()
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		seen, seenHTTPS := false, false
		for sc.Scan() {
			line := sc.Bytes()
			if !seen {
				if m := listeningRE.FindSubmatch(line); m != nil {
					seen = true
					listening <- string(m[1])
				}
			}
			if !seenHTTPS {
				if m := httpsRE.FindSubmatch(line); m != nil {
					seenHTTPS = true
					p.httpsAddr, p.pin = string(m[1]), string(m[2])
					close(p.https)
				}
			}
			p.mu.Lock()
			if p.log.Len() < maxLogBytes {
				p.log.Write(line)
				p.log.WriteByte('\n')
			}
			p.mu.Unlock()
			if logTo != nil {
				_, _ = fmt.Fprintf(logTo, "%s\n", line)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = p.Cmd.Wait()
	}()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case addr := <-listening:
		p.Listening = time.Since(p.Started)
		p.Addr = addr
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%s exited (%v) before it logged its address:\n%s", bin, p.err, p.Logs())
	case <-timer.C:
		_ = p.Cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("%s logged no listening address within %s:\n%s", bin, within, p.Logs())
	}
}

// HTTPS waits up to within for edged's HTTPS listening line and returns
// the base https:// URL and the SPKI pin of the key it serves.
func (p *Process) HTTPS(within time.Duration) (base, pin string, err error) {
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-p.https:
		return "https://" + p.httpsAddr, p.pin, nil
	case <-p.done:
		return "", "", fmt.Errorf("the process exited before it logged an HTTPS address")
	case <-timer.C:
		return "", "", fmt.Errorf("no HTTPS listening line within %s", within)
	}
}

// PID is the process id.
func (p *Process) PID() int { return p.Cmd.Process.Pid }

// URL is the base HTTP URL.
func (p *Process) URL() string { return "http://" + p.Addr }

// Logs returns the stderr captured so far.
func (p *Process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// LogLevels counts the captured log lines by slog level (INFO, WARN, ERROR…).
func (p *Process) LogLevels() map[string]int {
	out := map[string]int{}
	for _, line := range strings.Split(p.Logs(), "\n") {
		if _, rest, ok := strings.Cut(line, "level="); ok {
			lvl, _, _ := strings.Cut(rest, " ")
			out[lvl]++
		}
	}
	return out
}

// LogLines returns the captured lines at level lvl (at most limit of them).
func (p *Process) LogLines(lvl string, limit int) []string {
	var out []string
	for _, line := range strings.Split(p.Logs(), "\n") {
		if strings.Contains(line, "level="+lvl+" ") && len(out) < limit {
			out = append(out, line)
		}
	}
	return out
}

// Stop sends SIGTERM and waits up to within for the process to exit, then
// kills it. It returns how long the graceful exit took and the exit code.
func (p *Process) Stop(within time.Duration) (time.Duration, int, error) {
	start := time.Now()
	select {
	case <-p.done:
		return 0, p.Cmd.ProcessState.ExitCode(), fmt.Errorf("the process had already exited: %v", p.err)
	default:
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, -1, err
	}
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-p.done:
		return time.Since(start), p.Cmd.ProcessState.ExitCode(), nil
	case <-timer.C:
		_ = p.Cmd.Process.Kill()
		<-p.done
		return time.Since(start), -1, fmt.Errorf("no exit within %s of SIGTERM; killed", within)
	}
}

// Kill ends the process at once (cleanup after a failed run).
func (p *Process) Kill() {
	select {
	case <-p.done:
	default:
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitHealthy polls GET base/healthz until it answers 200, at most within,
// retrying every 250 µs. Each try uses a new connection, as a supervisor's
// probe would.
func WaitHealthy(base string, within time.Duration) error {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		res, err := client.Get(base + "/healthz")
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<20))
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", res.Status)
		}
		last = err
		time.Sleep(250 * time.Microsecond)
	}
	return errors.Join(fmt.Errorf("%s/healthz did not answer 200 within %s", base, within), last)
}
