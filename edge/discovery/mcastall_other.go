//go:build !linux

package discovery

import "github.com/hashicorp/mdns"

// newServer is mdns.NewServer. Elsewhere (BSD-derived stacks) a socket
// receives multicast only for the groups and interfaces it joined, so the
// Linux fix in mcastall_linux.go is not needed.
func newServer(cfg *mdns.Config) (*mdns.Server, error) { return mdns.NewServer(cfg) }

func restrictToJoined(fd uintptr, v6 bool) {}
