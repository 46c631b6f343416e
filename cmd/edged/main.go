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

	"github.com/campusedge/campusedge/edge/appliance"
	"github.com/campusedge/campusedge/edge/config"
)

func main() {
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
