// Package campusedge_test holds the checks that span the whole module.
package campusedge_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/campusedge/campusedge/"

// rank orders the top-level folders as docs/ARCHITECTURE.md draws them:
// a package may import its own folder and folders of lower rank only, and
// folders of equal rank (sync, firmware) not each other.
var rank = map[string]int{"edge": 0, "sync": 1, "firmware": 1, "classroom": 2, "cmd": 3}

// TestImportsPointDown reads the import graph of every package (not its
// tests) with go list and fails on an import that goes up or sideways.
func TestImportsPointDown(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs, broken := 0, 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || !strings.HasPrefix(f[0], module) {
			continue
		}
		pkgs++
		from := top(f[0])
		if _, ok := rank[from]; !ok && from != "" {
			t.Errorf("%s is in top-level folder %q, which docs/ARCHITECTURE.md does not place", f[0], from)
			continue
		}
		for _, imp := range f[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			to := top(imp)
			if to == from || from == "" {
				continue
			}
			if rank[to] >= rank[from] {
				broken++
				t.Errorf("%s imports %s: %s/ may not import %s/ (imports point down: cmd → classroom → sync → edge, firmware → edge; docs/ARCHITECTURE.md)",
					strings.TrimPrefix(f[0], module), strings.TrimPrefix(imp, module), from, to)
			}
		}
	}
	if pkgs < 20 {
		t.Fatalf("go list returned only %d packages of the module: the check saw too little to mean anything", pkgs)
	}
	t.Logf("%d packages checked, %d imports break the rule", pkgs, broken)
}

// top is the top-level folder of a package path ("" for the module root).
func top(pkg string) string {
	rest := strings.TrimPrefix(pkg, module)
	if rest == strings.TrimSuffix(module, "/") {
		return ""
	}
	first, _, _ := strings.Cut(rest, "/")
	return first
}
