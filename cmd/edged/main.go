// Command edged is the CampusEdge school appliance. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // school time zones (Asia/Shanghai) without the host's zone database

	"github.com/campusedge/campusedge/cmd/edged/appliance"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/identity"
	"github.com/campusedge/campusedge/edge/store"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "reset-admin-token" {
		os.Exit(resetAdminToken(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "enrol" {
		os.Exit(enrol(os.Args[2:]))
	}
	cfg, err := config.Parse("edged", os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged:", err)
		os.Exit(2)
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := appliance.Run(ctx, cfg, log, appliance.Options{}); err != nil {
		log.Error("edged cannot run", "err", err)
		os.Exit(1)
	}
}

// resetAdminToken is the way back in for an operator who lost the token. It
// needs the store, so edged must be stopped (the store lock says so if not).
func resetAdminToken(args []string) int {
	fs := flag.NewFlagSet("edged reset-admin-token", flag.ContinueOnError)
	data := fs.String("data", config.Defaults().DataDir, "data `dir` of the stopped edged")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	st, err := store.Open(*data, appliance.Migrations())
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged reset-admin-token:", err)
		return 1
	}
	defer st.Close()
	path, err := identity.ResetAdminToken(st.DB(), *data)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged reset-admin-token:", err)
		return 1
	}
	fmt.Println("new admin token written to", path)
	return 0
}
