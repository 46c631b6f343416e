package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/campusedge/campusedge/edge/appliance"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/identity"
	"github.com/campusedge/campusedge/edge/store"
	"github.com/campusedge/campusedge/sync/uplink"
)

// enrol enrols a stopped edged with the city hub using a one-time token
// (a running edged enrols with POST /api/v1/sync/enrol instead).
func enrol(args []string) int {
	fs := flag.NewFlagSet("edged enrol", flag.ContinueOnError)
	data := fs.String("data", config.Defaults().DataDir, "data `dir` of the stopped edged")
	cloud := fs.String("cloud", "", "city hub base `URL` (the same -cloud edged runs with)")
	token := fs.String("token", "", "one-time enrolment `token` from the city (cityhub enrol-token), SECRET~PIN: PIN is the hub's TLS key, checked before the secret is sent")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cloud == "" || *token == "" {
		fmt.Fprintln(os.Stderr, "edged enrol: -cloud URL and -token TOKEN are required")
		return 2
	}
	c := config.Defaults()
	c.DataDir, c.Cloud = *data, *cloud
	if err := c.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "edged enrol:", err)
		return 2
	}
	if err := os.MkdirAll(*data, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "edged enrol:", err)
		return 1
	}
	st, err := store.Open(*data, appliance.Migrations())
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged enrol:", err)
		return 1
	}
	defer st.Close()
	id, _, err := identity.LoadOrCreate(st.DB(), *data)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged enrol:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := uplink.Enrol(ctx, st.DB(), nil, *cloud, *token, id)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged enrol:", err)
		return 1
	}
	fmt.Printf("edge %s enrolled with %s for school %s (%s)\n", e.Edge, e.Hub, e.School, e.Name)
	if e.HubPin != "" {
		fmt.Printf("hub TLS key pinned: %s (every connection to the hub must present this key)\n", e.HubPin)
	}
	return 0
}
