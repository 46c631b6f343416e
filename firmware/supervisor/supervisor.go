// Package supervisor runs the active firmware slot's edged and decides,
// from the outside, whether a new version is good: it starts the slot,
// waits for its health check to pass within a deadline, and otherwise
// stops it and falls back to the previous slot. It is deliberately not part
// of any slot: a bad release cannot break the thing that undoes it.
//
// The protocol with edged is small. edged installs an update into the
// inactive slot and switches the pointer (slot.Manager), then exits. The
// supervisor sees the exit, reads the pointer, and starts whatever is
// active now: a new slot on trial, counted by the boot counter.
package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/campusedge/campusedge/firmware/slot"
)

// Config wires a supervisor.
type Config struct {
	Slots *slot.Manager
	// Args are passed to the slot's entry executable.
	Args []string
	// Env is added to the child's environment (besides CAMPUSEDGE_FW_*).
	Env []string
	// HealthURL is edged's /healthz.
	HealthURL string
	// Deadline is how long a slot on trial has to become healthy.
	Deadline time.Duration
	// MinBackoff and MaxBackoff bound the wait before restarting a crashed
	// committed slot (doubling; reset after a long run).
	MinBackoff, MaxBackoff time.Duration
	// StopGrace is how long a stopped child gets between SIGTERM and SIGKILL.
	StopGrace time.Duration
	Stdout    io.Writer
	Stderr    io.Writer
	Logger    *slog.Logger
	// OnEvent, if set, sees each decision (for tests and status pages).
	OnEvent func(Event)
}

// Event is one decision of the supervisor.
type Event struct {
	Kind    string // start, healthy, commit, fallback, exit, switch
	Slot    string
	Version string
	Detail  string
}

func (c *Config) defaults() {
	if c.Deadline <= 0 {
		c.Deadline = 90 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.StopGrace <= 0 {
		c.StopGrace = 10 * time.Second
	}
	if c.Stdout == nil {
		c.Stdout = os.Stdout
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Run supervises until ctx ends; then it stops the child and returns nil.
func Run(ctx context.Context, c Config) error {
	c.defaults()
	log := c.Logger
	backoff := c.MinBackoff
	emit := func(e Event) {
		if c.OnEvent != nil {
			c.OnEvent(e)
		}
	}
	for ctx.Err() == nil {
		b, err := c.Slots.Boot()
		if err != nil {
			log.Error("cannot boot a firmware slot", "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(backoff*2, c.MaxBackoff)
			continue
		}
		if b.FellBack != "" {
			log.Warn("fell back to the previous firmware slot", "reason", b.FellBack, "slot", b.Slot, "version", b.Version)
			emit(Event{Kind: "fallback", Slot: b.Slot, Version: b.Version, Detail: b.FellBack})
		}
		log.Info("starting firmware slot", "slot", b.Slot, "version", b.Version, "trial", b.Trial, "boot", b.Boots, "path", b.Path)
		emit(Event{Kind: "start", Slot: b.Slot, Version: b.Version})
		started := time.Now()
		ch, err := c.start(b)
		if err != nil {
			log.Error("cannot start firmware slot", "slot", b.Slot, "err", err)
			emit(Event{Kind: "exit", Slot: b.Slot, Version: b.Version, Detail: err.Error()})
			if !sleep(ctx, c.MinBackoff) {
				return nil
			}
			continue
		}
		if b.Trial {
			switch c.waitHealthy(ctx, ch) {
			case healthy:
				man, err := c.Slots.Commit(b.Slot)
				if err != nil {
					log.Error("cannot commit healthy slot", "slot", b.Slot, "err", err)
				} else {
					log.Info("new firmware is healthy; committed", "slot", b.Slot, "version", man.Version, "after", time.Since(started).Round(time.Millisecond))
					emit(Event{Kind: "commit", Slot: b.Slot, Version: b.Version})
				}
			case exited:
				log.Warn("new firmware exited before it was healthy", "slot", b.Slot, "version", b.Version, "boot", b.Boots, "err", ch.err)
				emit(Event{Kind: "exit", Slot: b.Slot, Version: b.Version, Detail: fmt.Sprint(ch.err)})
				if !sleep(ctx, c.MinBackoff) {
					return nil
				}
				continue
			case timedOut:
				log.Warn("new firmware not healthy within the deadline; going back", "slot", b.Slot, "version", b.Version, "deadline", c.Deadline)
				ch.stop(c.StopGrace)
				if err := c.Slots.Fallback(b.Slot, fmt.Sprintf("version %s was not healthy within %s", b.Version, c.Deadline)); err != nil {
					log.Error("fallback failed", "err", err)
					if !sleep(ctx, c.MinBackoff) {
						return nil
					}
				} else {
					emit(Event{Kind: "fallback", Slot: b.Slot, Version: b.Version, Detail: "deadline"})
				}
				continue
			case cancelled:
				ch.stop(c.StopGrace)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			ch.stop(c.StopGrace)
			return nil
		case <-ch.done:
		}
		st, err := c.Slots.State()
		if err == nil && st.Active != b.Slot {
			log.Info("firmware slot switched; starting the new one", "from", b.Slot, "to", st.Active)
			emit(Event{Kind: "switch", Slot: st.Active})
			backoff = c.MinBackoff
			continue
		}
		if time.Since(started) > 10*c.MaxBackoff {
			backoff = c.MinBackoff
		}
		log.Warn("edged exited; restarting", "slot", b.Slot, "version", b.Version, "err", ch.err, "restart_in", backoff)
		emit(Event{Kind: "exit", Slot: b.Slot, Version: b.Version, Detail: fmt.Sprint(ch.err)})
		if !sleep(ctx, backoff) {
			return nil
		}
		backoff = min(backoff*2, c.MaxBackoff)
	}
	return nil
}

type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (c *Config) start(b slot.Boot) (*child, error) {
	cmd := exec.Command(b.Path, c.Args...)
	cmd.Stdout, cmd.Stderr = c.Stdout, c.Stderr
	cmd.Env = append(append(os.Environ(), c.Env...),
		"CAMPUSEDGE_FW_SLOT="+b.Slot, "CAMPUSEDGE_FW_VERSION="+b.Version)
	// If the supervisor dies (kill -9, power), its edged must die with it,
	// or a restarted supervisor would find the port taken.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := &child{cmd: cmd, done: make(chan struct{})}
	go func() { ch.err = cmd.Wait(); close(ch.done) }()
	return ch, nil
}

func (ch *child) stop(grace time.Duration) {
	_ = ch.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ch.done:
	case <-time.After(grace):
		_ = ch.cmd.Process.Kill()
		<-ch.done
	}
}

type outcome int

const (
	healthy outcome = iota
	exited
	timedOut
	cancelled
)

func (c *Config) waitHealthy(ctx context.Context, ch *child) outcome {
	deadline := time.NewTimer(c.Deadline)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return cancelled
		case <-ch.done:
			return exited
		case <-deadline.C:
			return timedOut
		case <-tick.C:
			if err := Probe(ctx, client, c.HealthURL); err == nil {
				return healthy
			}
		}
	}
}

// Probe asks a /healthz once. Healthy means HTTP 200 with the edged health
// document, and its "store" check passing (the store opened and migrated).
func Probe(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: HTTP %d", resp.StatusCode)
	}
	var h struct {
		Status string `json:"status"`
		Checks map[string]struct {
			OK bool `json:"ok"`
		} `json:"checks"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&h); err != nil {
		return fmt.Errorf("health: %w", err)
	}
	if h.Status != "ok" && h.Status != "degraded" {
		return fmt.Errorf("health: status %q", h.Status)
	}
	if st, ok := h.Checks["store"]; !ok || !st.OK {
		return errors.New("health: store check not passing")
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
