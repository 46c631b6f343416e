package benchtools

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat. It is
// 100 on every Linux architecture Go supports (the kernel ABI fixes it,
// whatever CONFIG_HZ is).
const clockTick = 10 * time.Millisecond

// ProcSample is one reading of a process's resource use from /proc.
type ProcSample struct {
	At      time.Time
	CPU     time.Duration // user + system time since the process started
	RSSKiB  int64         // VmRSS: resident memory now (RssAnon + RssFile + RssShmem)
	AnonKiB int64         // RssAnon: heap, stacks (what the Go runtime holds)
	FileKiB int64         // RssFile: mapped files resident (binary text, bbolt's mmap)
	HWMKiB  int64         // VmHWM: peak resident memory
	Threads int64
	FDs     int // open file descriptors
}

// ReadProc samples process pid. Linux only.
func ReadProc(pid int) (ProcSample, error) {
	s := ProcSample{At: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	if s.CPU, err = parseStatCPU(stat); err != nil {
		return s, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	f := parseStatus(status)
	s.RSSKiB, s.HWMKiB, s.Threads = f["VmRSS"], f["VmHWM"], f["Threads"]
	s.AnonKiB, s.FileKiB = f["RssAnon"], f["RssFile"]
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.FDs = len(fds)
	return s, nil
}

// parseStatCPU returns utime+stime from the contents of /proc/PID/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no ')' in %q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("only %d fields after the command name", len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("utime %q / stime %q are not numbers", f[11], f[12])
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// parseStatus returns the numeric fields of /proc/PID/status ("VmRSS:  1234 kB"
// gives VmRSS=1234).
func parseStatus(status []byte) map[string]int64 {
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}

// CPUPercent is the CPU used between a and b as a percentage of one core.
func CPUPercent(a, b ProcSample) float64 {
	wall := b.At.Sub(a.At)
	if wall <= 0 {
		return 0
	}
	return 100 * float64(b.CPU-a.CPU) / float64(wall)
}

// MiB formats KiB as MiB with one decimal.
func MiB(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// OpenFileLimit reads the soft "Max open files" of process pid from
// /proc/PID/limits (-1 for unlimited).
func OpenFileLimit(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "Max open files")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		if f[0] == "unlimited" {
			return -1, nil
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("/proc/%d/limits has no Max open files line", pid)
}
