package bintest

import (
	"context"
	"fmt"
	"os/exec"
	"path"
	"path/filepath"
	"runtime/debug"
)

// Module is the import path of the project's module; the binaries are
// Module+"/cmd/edged" and so on.
const Module = "github.com/campusedge/campusedge"

// BuildOptions says how Build compiles.
type BuildOptions struct {
	// Src is the directory go build runs in: "" is the current directory,
	// which go test sets to the package's directory inside this module;
	// a bench may point it at another tree to measure that tree's edged.
	Src string
	// Race builds with -race, so that a data race in a child makes it exit
	// 66 and fails a test that checks its exit status.
	Race bool
}

// LikeThisTest is the options that build the binaries the way the running
// test binary was built: with -race when it was.
func LikeThisTest() BuildOptions { return BuildOptions{Race: RaceEnabled()} }

// RaceEnabled reports whether the running binary was built with -race.
func RaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// Build compiles the main packages pkgs (import paths, or paths relative
// to o.Src) into dir and returns the binaries' paths in the same order,
// each named after the last element of its package path. It runs the go
// command found on PATH.
func Build(ctx context.Context, dir string, o BuildOptions, pkgs ...string) ([]string, error) {
	var out []string
	for _, pkg := range pkgs {
		bin := filepath.Join(dir, path.Base(pkg))
		args := []string{"build"}
		if o.Race {
			args = append(args, "-race")
		}
		cmd := exec.CommandContext(ctx, "go", append(args, "-o", bin, pkg)...)
		cmd.Dir = o.Src
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
		}
		out = append(out, bin)
	}
	return out, nil
}

// Cmd is the import path of the binary name under cmd/ ("edged").
func Cmd(name string) string { return Module + "/cmd/" + name }
