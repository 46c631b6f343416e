package bintest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	// ListeningRE matches the line every CampusEdge binary logs once it
	// serves: `msg=listening addr=…`; its submatch is the address.
	ListeningRE = regexp.MustCompile(`msg=listening addr=(\S+)`)
	// HTTPSRE matches edged's HTTPS listening line:
	// `msg="listening https" addr=… spki_pin=…`.
	HTTPSRE = regexp.MustCompile(`msg="listening https" addr=(\S+) .*spki_pin="?([^"\s]+)`)
)

// Process is a binary started by a test or a bench. Its stderr is kept in
// memory (and copied to a writer if given) and scanned for the listening
// line every CampusEdge binary logs.
type Process struct {
	Cmd     *exec.Cmd
	Addr    string    // host:port from "msg=listening addr=…", once seen
	Started time.Time // just before exec
	// Listening is the time from exec to the listening log line.
	Listening time.Duration

	mu   sync.Mutex
	log  bytes.Buffer
	line chan string   // lines for WaitLine; dropped when nobody reads
	done chan struct{} // closed when the process has exited and stderr is drained
	err  error         // Wait's result, valid after done

	listening      chan string   // the first listening address
	https          chan struct{} // closed when the HTTPS listening line was seen
	httpsAddr, pin string        // from that line; valid after https is closed
}

// maxLogBytes bounds the stderr kept in memory; 2,000 terminals coming and
// going log well under a megabyte.
const maxLogBytes = 16 << 20

// lineBacklog is how many lines wait for WaitLine; later ones are dropped
// until it reads, so a chatty process never blocks on its stderr.
const lineBacklog = 1024

// Run starts bin with args and returns at once; logTo, if not nil,
// receives a copy of stderr. Stdout is discarded.
func Run(bin string, args []string, logTo io.Writer) (*Process, error) {
	p := &Process{
		Cmd:  exec.Command(bin, args...),
		line: make(chan string, lineBacklog), done: make(chan struct{}),
		listening: make(chan string, 1), https: make(chan struct{}),
	}
	stderr, err := p.Cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p.Started = time.Now()
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go p.read(stderr, logTo)
	return p, nil
}

// read keeps stderr, notes the listening lines and hands lines to
// WaitLine until the process ends.
func (p *Process) read(stderr io.Reader, logTo io.Writer) {
	defer close(p.done)
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	seen, seenHTTPS := false, false
	for sc.Scan() {
		line := sc.Bytes()
		if !seen {
			if m := ListeningRE.FindSubmatch(line); m != nil {
				seen = true
				p.listening <- string(m[1])
			}
		}
		if !seenHTTPS {
			if m := HTTPSRE.FindSubmatch(line); m != nil {
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
		select {
		case p.line <- string(line):
		default:
		}
	}
	_, _ = io.Copy(io.Discard, stderr)
	p.err = p.Cmd.Wait()
}

// Start runs bin with args and waits (at most within) for its listening
// line. logTo, if not nil, receives a copy of stderr.
func Start(bin string, args []string, within time.Duration, logTo io.Writer) (*Process, error) {
	p, err := Run(bin, args, logTo)
	if err != nil {
		return nil, err
	}
	if err := p.WaitListening(within); err != nil {
		p.Kill()
		return nil, fmt.Errorf("%s: %w", bin, err)
	}
	return p, nil
}

// Launch is Run for a test: it fails the test if bin does not start, and
// kills the process when the test ends.
func Launch(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	p, err := Run(bin, args, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

// Serve is Start for a test: it fails the test unless bin logs its
// listening line within 30 s, and kills the process when the test ends.
func Serve(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	p, err := Start(bin, args, 30*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

// WaitListening waits up to within for the listening line and sets Addr
// and Listening.
func (p *Process) WaitListening(within time.Duration) error {
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case addr := <-p.listening:
		p.Listening = time.Since(p.Started)
		p.Addr = addr
		return nil
	case <-p.done:
		return fmt.Errorf("exited (%v) before it logged its address:\n%s", p.err, p.Logs())
	case <-timer.C:
		return fmt.Errorf("logged no listening address within %s:\n%s", within, p.Logs())
	}
}

// WaitLine waits up to within for a line matching re among the lines not
// yet read by an earlier WaitLine, and returns its submatches.
func (p *Process) WaitLine(re *regexp.Regexp, within time.Duration) ([]string, error) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		select {
		case l := <-p.line:
			if m := re.FindStringSubmatch(l); m != nil {
				return m, nil
			}
		case <-p.done:
			return nil, fmt.Errorf("process exited (%v) before logging %v; log:\n%s", p.err, re, p.Logs())
		case <-deadline.C:
			return nil, fmt.Errorf("no log line %v within %s; log:\n%s", re, within, p.Logs())
		}
	}
}

// Wait waits up to within for the process to exit and returns its exit
// code (-1 for a signal).
func (p *Process) Wait(within time.Duration) (int, error) {
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode(), nil
	case <-timer.C:
		return -1, fmt.Errorf("process did not exit within %s; log:\n%s", within, p.Logs())
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.Cmd.Process.Signal(sig) }

// Done is closed once the process has exited and its stderr is read.
func (p *Process) Done() <-chan struct{} { return p.done }

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
