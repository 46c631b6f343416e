// Command edgefw is the CampusEdge release tool: it makes release keys,
// builds and signs firmware bundles, and verifies them.
//
//	edgefw keygen -out DIR
//	edgefw build -key PRIV -version V -target T [-min-version V] [-entry PATH] [-allow-rollback -rollback-edges IDS [-rollback-ttl D]] -o BUNDLE DIR
//	edgefw verify -pub PUB[,PUB...] [-target T] [-installed V] [-floor V] BUNDLE
//
// verify exits 0 only for a good bundle; otherwise it prints what is wrong
// and exits 1 (2 for a usage error).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/campusedge/campusedge/edge/buildinfo"
	"github.com/campusedge/campusedge/firmware/bundle"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `Usage:
  edgefw keygen -out DIR
  edgefw build -key PRIV -version V -target T [-min-version V] [-entry PATH] [-allow-rollback -rollback-edges IDS [-rollback-ttl D]] -o BUNDLE DIR
  edgefw verify -pub PUB[,PUB...] [-target T] [-installed V] [-floor V] BUNDLE
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "keygen":
		return keygen(args[1:], stdout, stderr)
	case "build":
		return build(args[1:], stdout, stderr)
	case "verify":
		return verify(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "edgefw: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

func parse(fs *flag.FlagSet, args []string, stderr io.Writer, nargs int) bool {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return false
	}
	if fs.NArg() != nargs {
		fmt.Fprintf(stderr, "edgefw %s: want %d argument(s) after the flags, got %q\n%s", fs.Name(), nargs, fs.Args(), usage)
		return false
	}
	return true
}

func keygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	out := fs.String("out", "", "`dir` for the new key pair (created; existing keys are never overwritten)")
	if !parse(fs, args, stderr, 0) {
		return 2
	}
	if *out == "" {
		fmt.Fprintln(stderr, "edgefw keygen: -out DIR is required")
		return 2
	}
	priv, pub, err := bundle.GenerateKey(*out, nil)
	if err != nil {
		fmt.Fprintln(stderr, "edgefw keygen:", err)
		return 1
	}
	fmt.Fprintf(stdout, "private key: %s (keep it offline; it signs releases)\npublic key:  %s (install it on edges with -fw-keys)\n", priv, pub)
	return 0
}

func build(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	key := fs.String("key", "", "release private key `file` (from edgefw keygen)")
	version := fs.String("version", "", "release `version` MAJOR.MINOR.PATCH")
	target := fs.String("target", "", "`target` the bundle is for, e.g. linux-amd64")
	minVersion := fs.String("min-version", "", "oldest installed `version` this bundle may replace (default: any)")
	entry := fs.String("entry", "edged", "`path` inside DIR of the executable the supervisor starts")
	product := fs.String("product", buildinfo.Product, "product `name`")
	allowRollback := fs.Bool("allow-rollback", false, "sign permission to install this bundle at or below a device's running version, its anti-rollback floor or a version that failed there; needs -rollback-edges")
	rollbackEdges := fs.String("rollback-edges", "", "with -allow-rollback: comma-separated `ids` of the edges the rollback is for (edged's id, GET /api/v1/edge)")
	rollbackTTL := fs.Duration("rollback-ttl", 7*24*time.Hour, "with -allow-rollback: how long the rollback permission holds (`duration`)")
	out := fs.String("o", "", "output bundle `file`")
	if !parse(fs, args, stderr, 1) {
		return 2
	}
	if *key == "" || *version == "" || *target == "" || *out == "" {
		fmt.Fprintln(stderr, "edgefw build: -key, -version, -target and -o are required")
		return 2
	}
	b := bundle.Build{Dir: fs.Arg(0), Product: *product, Target: *target, Version: *version,
		MinVersion: *minVersion, AllowRollback: *allowRollback, Entry: *entry}
	if *allowRollback {
		for _, e := range strings.Split(*rollbackEdges, ",") {
			if e = strings.TrimSpace(e); e != "" {
				b.RollbackEdges = append(b.RollbackEdges, e)
			}
		}
		if len(b.RollbackEdges) == 0 || *rollbackTTL <= 0 {
			fmt.Fprintln(stderr, "edgefw build: -allow-rollback needs -rollback-edges (the edges it is for) and a positive -rollback-ttl")
			return 2
		}
		b.RollbackExpires = time.Now().Add(*rollbackTTL)
	}
	priv, err := bundle.LoadPrivateKey(*key)
	if err != nil {
		fmt.Fprintln(stderr, "edgefw build:", err)
		return 1
	}
	m, err := bundle.Create(b, priv, *out)
	if err != nil {
		fmt.Fprintln(stderr, "edgefw build:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s %s for %s, %d files, %d bytes\n", *out, m.Product, m.Version, m.Target, len(m.Files), m.TotalSize())
	return 0
}

func verify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	pubs := fs.String("pub", "", "trusted release public key `files` or directories, comma-separated")
	target := fs.String("target", "", "refuse a bundle for another `target`")
	installed := fs.String("installed", "", "installed `version`: refuse a bundle whose min_version is newer")
	floor := fs.String("floor", "", "anti-rollback floor `version`: refuse an older bundle unless it allows rollback")
	if !parse(fs, args, stderr, 1) {
		return 2
	}
	if *pubs == "" {
		fmt.Fprintln(stderr, "edgefw verify: -pub is required")
		return 2
	}
	keys, err := bundle.LoadKeyring(strings.Split(*pubs, ",")...)
	if err != nil {
		fmt.Fprintln(stderr, "edgefw verify:", err)
		return 2
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "edgefw verify:", err)
		return 1
	}
	defer f.Close()
	r, err := bundle.Open(bufio.NewReaderSize(f, 1<<20), keys, bundle.Policy{Target: *target, Installed: *installed, Floor: *floor})
	if err == nil {
		err = r.Verify()
	}
	if err != nil {
		fmt.Fprintf(stderr, "edgefw verify: %s: BAD: %v\n", fs.Arg(0), err)
		return 1
	}
	m := r.Manifest()
	fmt.Fprintf(stdout, "%s: OK: %s %s for %s, %d files, %d bytes, signed by key %s\n", fs.Arg(0), m.Product, m.Version, m.Target, len(m.Files), m.TotalSize(), r.KeyID())
	return 0
}
