package benchtools

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
)

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
