package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/campusedge/campusedge/edge/pairing"
	"github.com/campusedge/campusedge/edge/pairing/pairingtest"
	"github.com/campusedge/campusedge/edge/termagent"
)

func post(t *testing.T, c *http.Client, url string, body any) (int, []byte) {
	t.Helper()
	data, _ := json.Marshal(body)
	res, err := c.Post(url, "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, out
}

func startBody(t *testing.T, pin, code string) (pairing.StartRequest, *pairing.Party) {
	sid := make([]byte, pairing.SIDSize)
	_, _ = rand.Read(sid)
	p, err := pairing.NewParty(nil, true, code, pairing.ChannelID(pin), sid)
	if err != nil {
		t.Fatal(err)
	}
	return pairing.StartRequest{SID: pairing.Encode(sid), Share: pairing.Encode(p.Share())}, p
}

func TestPairStartNeedsHTTPS(t *testing.T) {
	e := pairingtest.Start(t, pairingtest.Options{})
	plain := httptest.NewServer(e.API)
	defer plain.Close()
	req, _ := startBody(t, e.Pin(), "123456")
	if code, body := post(t, plain.Client(), plain.URL+"/api/v1/pair/start", req); code != http.StatusBadRequest || !bytes.Contains(body, []byte("https_required")) {
		t.Fatalf("plain HTTP start: %d %s", code, body)
	}
}

func TestPairSessionIsOneTry(t *testing.T) {
	e := pairingtest.Start(t, pairingtest.Options{})
	c := termagent.PinnedClient(e.Pin())
	code := e.PairingCode(t)
	req, party := startBody(t, e.Pin(), code)
	st, body := post(t, c, e.URL+"/api/v1/pair/start", req)
	if st != http.StatusOK {
		t.Fatalf("start: %d %s", st, body)
	}
	session, shares, pin, err := pairing.ParseStartResponse(body)
	if err != nil || pin != e.Pin() || len(shares) != 1 {
		t.Fatalf("start answer %s: %v", body, err)
	}
	// A wrong tag count is refused and spends the exchange.
	if st, body := post(t, c, e.URL+"/api/v1/pair/finish", pairing.FinishRequest{Session: session, Confirm: []string{pairing.Encode(make([]byte, 64)), pairing.Encode(make([]byte, 64))}}); st != http.StatusBadRequest {
		t.Fatalf("two tags for one share: %d %s", st, body)
	}
	sess, err := party.Finish(shares[0])
	if err != nil {
		t.Fatal(err)
	}
	if st, body := post(t, c, e.URL+"/api/v1/pair/finish", pairing.FinishRequest{Session: session, Confirm: []string{pairing.Encode(sess.MyTag())}}); st != http.StatusNotFound {
		t.Fatalf("reused exchange: %d %s", st, body)
	}
	// Malformed and identity shares are refused up front.
	bad := req
	bad.Share = pairing.Encode(make([]byte, 32))
	if st, body := post(t, c, e.URL+"/api/v1/pair/start", bad); st != http.StatusBadRequest {
		t.Fatalf("identity share: %d %s", st, body)
	}
}

// With no code held the edge still answers (a decoy share): a prober
// cannot tell, and the proof is a counted wrong try.
func TestPairNoCodeHeldIsAWrongTry(t *testing.T) {
	e := pairingtest.Start(t, pairingtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := termagent.Pair(ctx, e.URL, "123456", "x", "test")
	var pe *termagent.PairError
	if err == nil || !asPairError(err, &pe) || pe.Code != "pairing_code_wrong" {
		t.Fatalf("pairing with no code held: %v", err)
	}
	if n, _ := e.Fleet.WrongPairingTries(); n != 1 {
		t.Fatalf("wrong tries = %d", n)
	}
}

func asPairError(err error, pe **termagent.PairError) bool {
	p, ok := err.(*termagent.PairError)
	*pe = p
	return ok
}
