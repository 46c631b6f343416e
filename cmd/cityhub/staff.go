package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/campusedge/campusedge/edge/fsutil"
	"github.com/campusedge/campusedge/edge/token"
)

// staffToken is the city staff credential: made on first start into
// DATA/staff-token (0600), and only its hash kept in memory. It opens what
// enrolled edges may read (catalogue, content, uploads, firmware checks)
// to the city's own people and tools; city staff accounts will replace it.
func staffToken(data string) (check func(string) bool, file string, err error) {
	file = filepath.Join(data, "staff-token")
	b, err := os.ReadFile(file)
	tok := strings.TrimSpace(string(b))
	switch {
	case errors.Is(err, fs.ErrNotExist) || (err == nil && tok == ""):
		tok = token.New()
		if err := os.MkdirAll(data, 0o700); err != nil {
			return nil, "", err
		}
		if err := fsutil.WriteFileAtomic(file, []byte(tok+"\n"), 0o600); err != nil {
			return nil, "", fmt.Errorf("write the staff token: %w", err)
		}
	case err != nil:
		return nil, "", fmt.Errorf("read the staff token %s: %w", file, err)
	case len(tok) < 32:
		return nil, "", fmt.Errorf("the staff token in %s is shorter than 32 characters; delete the file to make a new one", file)
	}
	hash := token.Digest(tok)
	return func(t string) bool { return token.Matches(t, hash) }, file, nil
}
