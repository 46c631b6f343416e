package certs_test

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/certs/certstest"
)

// The cases the uplink and termagent tests do not reach: a certificate
// not valid yet (a clock behind, or a leaf issued ahead) says to fix the
// clock, and an error that is no verification failure passes unchanged.
func TestExplainNotYetValid(t *testing.T) {
	root := certstest.NewCA(t, "Test root")
	early := root.Leaf(t, time.Now().Add(24*time.Hour), time.Now().Add(48*time.Hour), "127.0.0.1")
	srv := certstest.Serve(t, nil, early, nil)
	adv := certs.CAAdvice{Peer: "the hub", Self: "this edge"}
	_, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{RootCAs: certs.RootsWith(root.PEM()), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	err = adv.Explain(err, time.Now())
	var ue *certs.UntrustedError
	if !errors.As(err, &ue) || ue.Reason != certs.NotYetValid || !strings.Contains(err.Error(), "is not valid before") || !strings.Contains(err.Error(), "Correct the clock") {
		t.Fatalf("leaf valid from tomorrow: %v", err)
	}
	other := errors.New("connection refused")
	if got := adv.Explain(other, time.Now()); got != other {
		t.Fatalf("a network error was changed: %v", got)
	}
}

func TestReadRootsFile(t *testing.T) {
	if _, err := certs.ReadRootsFile("/dev/zero"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("/dev/zero: %v", err)
	}
}
