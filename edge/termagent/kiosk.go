package termagent

import (
	"context"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultChromium is Debian's real Chromium binary; the /usr/bin/chromium
// wrapper script breaks on these machines (its /dev/shm check) and adds
// extensions.
const DefaultChromium = "/usr/lib/chromium/chromium"

// KioskOptions say how classterm -kiosk starts Chromium.
type KioskOptions struct {
	Chromium string // binary; DefaultChromium if empty
	EdgeURL  string // the edge's https base URL (State.EdgeURL)
	Pin      string // the edge's key pin (State.EdgePin)
	Token    string // the terminal's credential (State.Token)
	DataDir  string // classterm's data dir: holds kiosk-profile/ and kiosk-start.html
	// GrantMedia auto-accepts the camera and microphone prompt
	// (--use-fake-ui-for-media-stream; the devices stay real). A classroom
	// screen has nobody at it to click "Allow", and without return video
	// the remote teacher cannot see the room; the browser only ever loads
	// the pinned edge's page. classterm turns it on unless -kiosk-grant-media=false.
	GrantMedia bool
	Extra      []string // more flags (-kiosk-flag), before the start page
}

// KioskStartFile is the local page Chromium opens first; see KioskCommand.
const KioskStartFile = "kiosk-start.html"

// KioskPageURL is the classroom page with the terminal's credential in the
// fragment (never sent on the wire; classroom.js stores it and strips it).
func KioskPageURL(edgeURL, token string) string {
	return strings.TrimRight(edgeURL, "/") + "/classroom.html#terminal=" + url.PathEscape(token)
}

// KioskArgs is Chromium's command line (without the binary) for a kiosk
// showing startURL. Exposed so that tests start Chromium exactly as
// classterm -kiosk does.
func KioskArgs(o KioskOptions, startURL string) []string {
	args := []string{
		"--kiosk",
		// The edge's key, learnt and code-bound at pairing, is trusted
		// without any CA: the page is a secure context (camera, mic).
		"--ignore-certificate-errors-spki-list=" + o.Pin,
		"--user-data-dir=" + filepath.Join(o.DataDir, "kiosk-profile"),
		"--autoplay-policy=no-user-gesture-required",
		"--no-first-run",
		"--no-default-browser-check",
		"--noerrdialogs",
		"--disable-session-crashed-bubble",
		"--disable-infobars",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-sync",
		// Candidates as real addresses, not mDNS names: the edge on the
		// school LAN is the only peer, and it does not resolve .local names.
		"--disable-features=Translate,MediaRouter,WebRtcHideLocalIpsWithMdns",
		"--password-store=basic",
	}
	if o.GrantMedia {
		args = append(args, "--use-fake-ui-for-media-stream")
	}
	args = append(args, o.Extra...)
	return append(args, startURL)
}

// KioskCommand writes the start page and returns the binary and arguments
// of the kiosk browser. The start page (0600, in the data dir) sends the
// browser on to KioskPageURL: the credential then appears in no command
// line, which any local user could read in /proc.
func KioskCommand(o KioskOptions) (bin string, args []string, err error) {
	if o.Pin == "" || !strings.HasPrefix(o.EdgeURL, "https://") {
		return "", nil, errors.New("kiosk: the terminal has no https edge and key pin: pair it with classterm -pair CODE over https")
	}
	bin = o.Chromium
	if bin == "" {
		bin = DefaultChromium
	}
	if err := os.MkdirAll(filepath.Join(o.DataDir, "kiosk-profile"), 0o700); err != nil {
		return "", nil, fmt.Errorf("kiosk: %w", err)
	}
	target := KioskPageURL(o.EdgeURL, o.Token)
	page := "<!doctype html><meta charset=utf-8><title>CampusEdge</title><script>location.replace(" +
		strconv.Quote(target) + ")</script><p>Opening " + html.EscapeString(strings.TrimRight(o.EdgeURL, "/")) + "/classroom.html …</p>\n"
	start := filepath.Join(o.DataDir, KioskStartFile)
	if err := os.WriteFile(start, []byte(page), 0o600); err != nil {
		return "", nil, fmt.Errorf("kiosk: write start page: %w", err)
	}
	if err := os.Chmod(start, 0o600); err != nil {
		return "", nil, fmt.Errorf("kiosk: %w", err)
	}
	abs, err := filepath.Abs(start)
	if err != nil {
		return "", nil, fmt.Errorf("kiosk: %w", err)
	}
	return bin, KioskArgs(o, (&url.URL{Scheme: "file", Path: abs}).String()), nil
}

// Kiosk keeps the classroom page on screen: it starts Chromium, restarts it
// with backoff whenever it exits or crashes, and stops it when ctx ends.
type Kiosk struct {
	Options KioskOptions
	Log     *slog.Logger
	// OnStart, if set, sees each started browser's process id (tests).
	OnStart func(pid int)
}

// Restart backoff: a crash loop costs little CPU, and a browser that ran
// for a while comes back at once.
const (
	kioskBackoffMin = time.Second
	kioskBackoffMax = 30 * time.Second
	kioskStable     = time.Minute
	kioskStopGrace  = 5 * time.Second
)

// Run returns when ctx ends (nil) or when Chromium cannot be started at all.
func (k *Kiosk) Run(ctx context.Context) error {
	bin, args, err := KioskCommand(k.Options)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("kiosk: Chromium not found at %s (apt-get install chromium, or pass -chromium PATH): %w", bin, err)
	}
	k.Log.Info("kiosk: starting Chromium", "bin", bin, "args", strings.Join(args[:len(args)-1], " "), "page", strings.TrimRight(k.Options.EdgeURL, "/")+"/classroom.html")
	backoff := kioskBackoffMin
	for {
		started := time.Now()
		err := k.runOnce(ctx, bin, args)
		if ctx.Err() != nil {
			k.Log.Info("kiosk: Chromium stopped")
			return nil
		}
		if time.Since(started) > kioskStable {
			backoff = kioskBackoffMin
		}
		k.Log.Warn("kiosk: Chromium exited; restarting", "err", err, "ran", time.Since(started).Round(time.Millisecond), "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, kioskBackoffMax)
	}
}

// runOnce runs Chromium in its own process group, so that its helper
// processes (zygote, renderers, GPU) go with it.
func (k *Kiosk) runOnce(ctx context.Context, bin string, args []string) error {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = nil, nil // Chromium is chatty; its exit is logged here
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	pid := cmd.Process.Pid
	k.Log.Info("kiosk: Chromium running", "pid", pid)
	if k.OnStart != nil {
		k.OnStart(pid)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(kioskStopGrace):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			err = <-done
		}
	}
	// Leftover helpers of a crashed browser would hold the profile lock.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	if err == nil {
		err = errors.New("exited with status 0")
	}
	return err
}
