package termagent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/campusedge/campusedge/edge/certs"
	"github.com/campusedge/campusedge/edge/certs/certstest"
	"github.com/campusedge/campusedge/edge/ctlwire"
)

// controlEdge is the edge's control channel as far as a terminal's
// connection needs it: hello with the right token, welcome, then quiet.
func controlEdge(t *testing.T, token string) http.Handler {
	up := websocket.Upgrader{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/ws", func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		var h ctlwire.Hello
		if ws.ReadJSON(&h) != nil || h.Token != token {
			return
		}
		_ = ws.WriteJSON(ctlwire.Welcome{Header: ctlwire.New(ctlwire.TypeWelcome), Role: "terminal", EdgeID: "edge-ca-01", TerminalID: "t1", HeartbeatSeconds: 30})
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("GET /api/v1/edge", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"id": "edge-ca-01"})
	})
	return mux
}

func caPool(ca *certstest.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func wantRefused(t *testing.T, what string, err error, reason certs.UntrustedReason, says []string) {
	t.Helper()
	var ue *certs.UntrustedError
	if !errors.As(err, &ue) || ue.Reason != reason {
		t.Fatalf("%s: got %v, want the certificate refused as %s", what, err, reason)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: error %q does not say %q", what, err, s)
		}
	}
}

// With Roots (classterm -ca) the agent trusts the edge by chain and host
// name, not by the pinned key: a city-signed edge certificate (root →
// city CA → leaf) is accepted on the control WebSocket and the HTTP
// client even though its key is not the one pinned at pairing; an expired
// certificate, one for another host and one from an unknown CA are
// refused on both, each with an error that says what is wrong and what to
// do.
func TestAgentTrustsEdgeByCA(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root := certstest.NewCA(t, "Test city root")
	city := root.Intermediate(t, "Test city CA")
	good := city.Good(t, "edge.school.example", "127.0.0.1")
	srv := certstest.Serve(t, controlEdge(t, "tok"), good, nil)
	other := city.Good(t, "127.0.0.1") // another key: the pin learnt at pairing
	st := State{EdgeURL: srv.URL, EdgePin: certs.SPKIPin(other.Leaf), EdgeID: "edge-ca-01", TerminalID: "t1", Token: "tok"}

	welcomed := make(chan ctlwire.Welcome, 1)
	a := &Agent{State: st, DataDir: t.TempDir(), Name: "board-1", Version: "test", Log: quietLog(), Roots: caPool(root),
		OnConnected: func(w ctlwire.Welcome) {
			select {
			case welcomed <- w:
			default:
			}
		}}
	actx, acancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	select {
	case <-welcomed:
	case <-ctx.Done():
		t.Fatal("the agent never connected to a city-signed edge with -ca")
	}
	acancel()
	<-done
	res, err := a.HTTPClient().Get(srv.URL + "/api/v1/edge")
	if err != nil {
		t.Fatalf("HTTP client by CA: %v", err)
	}
	res.Body.Close()

	stranger := certstest.NewCA(t, "Some other CA")
	exp := city.Expired(t, "127.0.0.1")
	for _, c := range []struct {
		name   string
		cert   *tls.Certificate
		reason certs.UntrustedReason
		says   []string
	}{
		{"expired", exp, certs.Expired, []string{"the edge's certificate expired on " + exp.Leaf.NotAfter.UTC().Format("2006-01-02 15:04 UTC"), "this terminal's clock"}},
		{"another host", city.Good(t, "edge.other.example"), certs.WrongHost, []string{"the edge's certificate is for edge.other.example, not 127.0.0.1", "Check -edge"}},
		{"unknown CA", stranger.Good(t, "127.0.0.1"), certs.UnknownCA, []string{`issued by "Some other CA"`, "signed by an authority this terminal does not trust", "-ca", "without -ca"}},
	} {
		srv.Use(c.cert)
		_, err := a.session(ctx)
		wantRefused(t, "control connection, "+c.name, err, c.reason, c.says)
		res, err := a.HTTPClient().Get(srv.URL + "/api/v1/edge")
		if err == nil {
			res.Body.Close()
		}
		wantRefused(t, "HTTP client, "+c.name, err, c.reason, c.says)
	}

	// Only the -ca roots count: the edge's own CA is not trusted by them.
	srv.Use(good)
	a.Roots = caPool(stranger)
	_, err = a.session(ctx)
	wantRefused(t, "control connection, roots without the city's", err, certs.UnknownCA, []string{`issued by "Test city root"`})
}

// A TLS 1.1-only edge is refused, by CA and by pin alike.
func TestAgentRefusesTLSBelow12(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root := certstest.NewCA(t, "Test city root")
	cert := root.Good(t, "127.0.0.1")
	srv := certstest.Serve(t, controlEdge(t, "tok"), cert, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	st := State{EdgeURL: srv.URL, EdgePin: certs.SPKIPin(cert.Leaf), EdgeID: "edge-ca-01", Token: "tok"}
	for name, roots := range map[string]*x509.CertPool{"by CA": caPool(root), "by pin": nil} {
		a := &Agent{State: st, DataDir: t.TempDir(), Log: quietLog(), Roots: roots}
		if _, err := a.session(ctx); err == nil || !strings.Contains(err.Error(), "protocol version") {
			t.Errorf("%s: control connection to a TLS 1.1 edge: %v", name, err)
		}
		res, err := a.HTTPClient().Get(srv.URL + "/api/v1/edge")
		if err == nil {
			res.Body.Close()
			t.Errorf("%s: HTTP client accepted a TLS 1.1 edge", name)
		} else if !strings.Contains(err.Error(), "protocol version") {
			t.Errorf("%s: HTTP client error %q does not name the protocol version", name, err)
		}
	}
}
