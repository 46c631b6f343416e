package uplink_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/campusedge/campusedge/sync/wire"
)

// forger answers every batch with a fixed body and status 200, as a
// replayed or misrouted answer would look; nothing reaches the hub.
type forger struct{ body []byte }

func (f *forger) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(bytes.NewReader(f.body)), Request: r}, nil
}

// TestAckBoundToItsRequest is issue 14 finding 11's outbox part: Ack took
// any sequence from an answer nothing tied to the request, so a replayed
// (or forged) "acked" made the edge drop records the hub never got. Now an
// ack counts only when it names this edge and the nonce of the signed
// batch it answers.
func TestAckBoundToItsRequest(t *testing.T) {
	t.Parallel()
	th := startHub(t, openBoltHub(t, t.TempDir()))
	e := newEdge(t, nil)
	enr := enrol(t, th.Store, th.URL, "s1", e)
	ctx := context.Background()
	appendN(t, e, 10)
	// The real hub's answer: applied.
	var real bytes.Buffer
	client := &http.Client{Transport: &tee{next: http.DefaultTransport, batch: &real}}
	if n, err := e.uplink(th.URL, client).SendOnce(ctx, enr); err != nil || n != 10 {
		t.Fatalf("first batch: %d %v", n, err)
	}
	var first wire.Ack
	if err := json.Unmarshal(real.Bytes(), &first); err != nil || first.Acked != 10 || first.Nonce == "" || first.Edge != enr.Edge {
		t.Fatalf("the hub's ack %s: %v", real.String(), err)
	}
	appendN(t, e, 10)
	// That answer replayed with a higher ack, and one without a nonce.
	replayed := first
	replayed.Acked = 20
	rb, _ := json.Marshal(replayed)
	bare, _ := json.Marshal(wire.Ack{Acked: 20})
	for _, body := range [][]byte{rb, bare} {
		_, err := e.uplink(th.URL, &http.Client{Transport: &forger{body: body}}).SendOnce(ctx, enr)
		if err == nil || !strings.Contains(err.Error(), "does not answer this batch") {
			t.Fatalf("unbound ack %s: %v", body, err)
		}
		if st, _ := e.Ob.Stats(); st.AckedSeq != 10 || st.Backlog != 10 {
			t.Fatalf("after an unbound ack %s the outbox is %+v; records the hub never got were dropped", body, st)
		}
	}
	// The real hub still gets them and its ack applies.
	if n, err := e.uplink(th.URL, nil).SendOnce(ctx, enr); err != nil || n != 10 {
		t.Fatalf("second batch: %d %v", n, err)
	}
}

// tee copies the body of the batch answer into batch.
type tee struct {
	next  http.RoundTripper
	batch *bytes.Buffer
}

func (t *tee) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil || r.URL.Path != "/api/v1/sync/batch" {
		return resp, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.batch.Write(b)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}
