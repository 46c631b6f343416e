package api

import (
	"os"
	"strings"
	"testing"
)

// TestPermissionTableDocumented: docs/API.md prints every row of the
// permission table, so the documented table cannot fall behind the code.
func TestPermissionTableDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/API.md")
	if err != nil {
		t.Fatal(err)
	}
	for p := range Permissions() {
		if !strings.Contains(string(doc), "| `"+p+"` |") {
			t.Errorf("docs/API.md's permission table has no row for %q", p)
		}
	}
}
