package cache_test

import (
	"testing"

	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/config"
)

// startLANEdge starts an edge as startEdge does, on browsertest.LANAddr
// (the test runs in its own namespace: browsertest.OnLAN), and points
// e.url at its HTTPS side with e.client trusting the edge CA: from LANAddr
// to LANAddr is not loopback, so pages must be HTTPS to be secure contexts
// and token-bearing calls over plain HTTP are refused.
func startLANEdge(t *testing.T, data, cloud string) *edge {
	t.Helper()
	e := startEdge(t, data, cloud, func(c *config.Config) { c.Listen = browsertest.LANListen })
	if e.https == nil {
		t.Fatal("edged on a LAN address serves no HTTPS")
	}
	e.url = e.https.URL
	e.client = e.https.Client(t)
	return e
}
