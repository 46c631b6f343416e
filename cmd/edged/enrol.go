package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/campusedge/campusedge/cmd/edged/appliance"
	"github.com/campusedge/campusedge/edge/certs"
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
	token := fs.String("token", "", "one-time enrolment `token` from the city (cityhub enrol-token), SECRET~PIN: PIN is the hub's TLS key, checked before the secret is sent; a SECRET alone enrols an https hub by CA (its chain and host name)")
	cloudCA := fs.String("cloud-ca", "", "PEM `file` of the city's root, trusted besides the system's roots when the token carries no pin (the same -cloud-ca edged runs with)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cloud == "" || *token == "" {
		fmt.Fprintln(os.Stderr, "edged enrol: -cloud URL and -token TOKEN are required")
		return 2
	}
	c := config.Defaults()
	c.DataDir, c.Cloud, c.CloudCA = *data, *cloud, *cloudCA
	if err := c.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "edged enrol:", err)
		return 2
	}
	var roots []byte
	if c.CloudCA != "" {
		var err error
		if roots, err = certs.ReadRootsFile(c.CloudCA); err != nil {
			fmt.Fprintln(os.Stderr, "edged enrol: -cloud-ca:", err)
			return 2
		}
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
	e, err := uplink.Enrol(ctx, st.DB(), nil, *cloud, *token, id, roots)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged enrol:", err)
		return 1
	}
	fmt.Printf("edge %s enrolled with %s for school %s (%s)\n", e.Edge, e.Hub, e.School, e.Name)
	switch e.HubTrust {
	case uplink.TrustPin:
		fmt.Printf("hub TLS key pinned: %s (every connection to the hub must present this key)\n", e.HubPin)
	case uplink.TrustCA:
		how := "the system's roots"
		if c.CloudCA != "" {
			how += " and " + c.CloudCA
		}
		fmt.Printf("hub trusted by CA: every connection must present a valid certificate for the -cloud host from %s (run edged with the same -cloud-ca)\n", how)
	}
	return 0
}
