package classroom_test

import (
	"context"
	"testing"

	"github.com/campusedge/campusedge/edge/browsertest"
	"github.com/campusedge/campusedge/edge/config"
	"github.com/campusedge/campusedge/edge/logtest"
)

// startLANEdge starts edged on browsertest.LANAddr (the test runs in its
// own namespace: browsertest.OnLAN) and points e.url at its HTTPS side,
// with e.client trusting the edge CA: from LANAddr to LANAddr is not
// loopback, so plain HTTP pages would not be secure contexts and
// token-bearing calls over plain HTTP are refused.
func startLANEdge(t *testing.T, ctx context.Context, tune ...func(*config.Config)) *edge {
	t.Helper()
	e := startEdgeAt(t, ctx, browsertest.LANListen, &logtest.Buffer{}, tune...)
	if e.tls == nil {
		t.Fatal("edged on a LAN address serves no HTTPS")
	}
	e.url = e.tls.URL
	e.client = e.tls.Client(t)
	return e
}
