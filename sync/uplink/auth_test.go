package uplink_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/campusedge/campusedge/sync/wire"
)

// TestHubRefusesForgedAndReplayedRequests covers the scope rules with real
// signed requests: a replay, a tampered body, a batch signed by another
// school's edge, a record claiming another school, an unknown edge and a
// revoked edge. The hub's records must be unchanged by every one of them.
func TestHubRefusesForgedAndReplayedRequests(t *testing.T) {
	t.Parallel()
	th := startHub(t, openBoltHub(t, t.TempDir()))
	a := newEdge(t, nil) // school s1
	b := newEdge(t, nil) // school s2
	enA := enrol(t, th.Store, th.URL, "s1", a)
	enB := enrol(t, th.Store, th.URL, "s2", b)
	rec := &recorder{}
	ua := a.uplink(th.URL, &http.Client{Transport: rec})
	appendN(t, a, 5)
	ctx := context.Background()
	if _, err := ua.SendOnce(ctx, enA); err != nil {
		t.Fatal(err)
	}
	baseline := len(hubRecords(t, th.Store, "s1"))
	if baseline != 5 {
		t.Fatalf("hub holds %d, want 5", baseline)
	}

	expect := func(name string, code int, errCode string, status int, body string) {
		t.Helper()
		if status != code || !strings.Contains(body, `"`+errCode+`"`) {
			t.Errorf("%s: got %d %s, want %d %s", name, status, body, code, errCode)
		}
	}
	// 1. The same signed request again.
	st, body := replay(t, rec, nil)
	expect("replay", 401, "replayed", st, body)

	// 2. Same headers, body changed (a record dropped): signature fails.
	st, body = replay(t, rec, func(h http.Header, b []byte) []byte {
		bt, _ := wire.DecodeBatch(b)
		bt.Records = bt.Records[:1]
		nb, _ := wire.EncodeBatch(bt)
		return nb
	})
	expect("tampered", 401, "bad_signature", st, body)

	// 3. Edge B (school s2) signs a batch naming edge A and school s1.
	forged := &wire.Batch{Edge: a.Key.EdgeID(), School: "s1", Records: []wire.Record{{Seq: 6, ID: "forgedrecord0000000000001", Kind: "attendance.mark", At: time.Now().UnixMilli(), School: "s1", Payload: []byte(`{"student":"x"}`)}}}
	st, body = post(t, th.URL, b.Key, forged)
	expect("batch signed by another school's edge", 403, "wrong_edge", st, body)

	// 4. Edge B's own batch with a record claiming school s1.
	claim := &wire.Batch{Edge: b.Key.EdgeID(), School: enB.School, Records: []wire.Record{{Seq: 1, ID: "forgedrecord0000000000002", Kind: "attendance.mark", At: time.Now().UnixMilli(), School: "s1", Payload: []byte(`{"student":"x"}`)}}}
	st, body = post(t, th.URL, b.Key, claim)
	expect("record for another school", 403, "wrong_school", st, body)
	claim.School, claim.Records[0].School = "s1", ""
	st, body = post(t, th.URL, b.Key, claim)
	expect("batch header for another school", 403, "wrong_school", st, body)

	// 5. An edge the hub never enrolled.
	stranger := newEdge(t, nil)
	st, body = post(t, th.URL, stranger.Key, &wire.Batch{Edge: stranger.Key.EdgeID(), School: "s1", Records: claim.Records})
	expect("unknown edge", 401, "unknown_edge", st, body)

	// 6. Revoked edge A.
	if err := th.Store.RevokeEdge(ctx, a.Key.EdgeID()); err != nil {
		t.Fatal(err)
	}
	appendN(t, a, 1)
	_, err := ua.SendOnce(ctx, enA)
	if err == nil || !strings.Contains(err.Error(), "edge_revoked") {
		t.Errorf("revoked edge: %v", err)
	}

	// 7. A request signed with a time outside the window (a captured request
	// held back for an hour) is refused even with a fresh nonce.
	st, body = postAt(t, th.URL, b.Key, time.Now().Add(-time.Hour), &wire.Batch{Edge: b.Key.EdgeID(), School: "s2", Records: []wire.Record{{Seq: 1, ID: "r1", Kind: "k", At: 1, Payload: []byte(`1`)}}})
	expect("stale", 401, "clock_skew", st, body)

	if n := len(hubRecords(t, th.Store, "s1")); n != baseline {
		t.Fatalf("hub records of s1 changed from %d to %d", baseline, n)
	}
	if n := len(hubRecords(t, th.Store, "s2")); n != 0 {
		t.Fatalf("hub holds %d records for s2", n)
	}
}

func post(t *testing.T, url string, k *keyID, b *wire.Batch) (int, string) {
	return postAt(t, url, k, time.Now(), b)
}

func postAt(t *testing.T, url string, k *keyID, at time.Time, b *wire.Batch) (int, string) {
	t.Helper()
	body, err := wire.EncodeBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, url+"/api/v1/sync/batch", strings.NewReader(string(body)))
	if err := wire.Sign(req, k, at, body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	sb.Write(buf[:n])
	return resp.StatusCode, sb.String()
}

// TestEnrolmentTokenOnce: a token enrols once; a second edge with the same
// token, a bad proof and a mismatched id are refused.
func TestEnrolmentTokenOnce(t *testing.T) {
	t.Parallel()
	th := startHub(t, openBoltHub(t, t.TempDir()))
	a := newEdge(t, nil)
	en := enrol(t, th.Store, th.URL, "s1", a)
	if en.School != "s1" || en.Edge != a.Key.EdgeID() {
		t.Fatalf("enrolment %+v", en)
	}
	// Reuse: enrol() makes a fresh token; take a used one by enrolling, then retry.
	b := newEdge(t, nil)
	tokUsed := "used-token-for-test-000000000000000"
	ctx := context.Background()
	if err := th.Store.CreateEnrolToken(ctx, "s1", hashTok(tokUsed), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := enrolWith(ctx, b, th.URL, tokUsed); err != nil {
		t.Fatal(err)
	}
	c := newEdge(t, nil)
	if _, err := enrolWith(ctx, c, th.URL, tokUsed); err == nil || !strings.Contains(err.Error(), "invalid_token") {
		t.Fatalf("reused token: %v", err)
	}
	if _, err := enrolWith(ctx, c, th.URL, "never-issued"); err == nil || !strings.Contains(err.Error(), "invalid_token") {
		t.Fatalf("unknown token: %v", err)
	}
	exp := "expired-token-000000000000000000000"
	if err := th.Store.CreateEnrolToken(ctx, "s1", hashTok(exp), time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := enrolWith(ctx, c, th.URL, exp); err == nil || !strings.Contains(err.Error(), "invalid_token") {
		t.Fatalf("expired token: %v", err)
	}
}

// TestHubRefusesBadBodies: a signed request from an enrolled edge with a
// body over the limit or not a batch is refused with a clear code, and
// stores nothing.
func TestHubRefusesBadBodies(t *testing.T) {
	t.Parallel()
	th := startHub(t, openBoltHub(t, t.TempDir()))
	e := newEdge(t, nil)
	enrol(t, th.Store, th.URL, "s1", e)
	send := func(body []byte) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, th.URL+"/api/v1/sync/batch", strings.NewReader(string(body)))
		if err := wire.Sign(req, e.Key, time.Now(), body); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := send(make([]byte, wire.MaxBatchBytes+1)); st != http.StatusRequestEntityTooLarge || !strings.Contains(body, "too_large") {
		t.Errorf("oversized: %d %s", st, body)
	}
	if st, body := send([]byte(`{"edge":"x"}`)); st != http.StatusBadRequest || !strings.Contains(body, "invalid_batch") {
		t.Errorf("not gzip: %d %s", st, body)
	}
	if n := len(hubRecords(t, th.Store, "s1")); n != 0 {
		t.Fatalf("hub stored %d records", n)
	}
}
