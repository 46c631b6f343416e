package uplink

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/sync/wire"
)

// maxSignedBody bounds a body the signing transport holds to hash: the
// hub's signed routes take far less (an upload's announcement, a firmware
// check); larger bodies are streamed (wire.StreamedBody) or refused.
const maxSignedBody = 1 << 20

// signingTransport signs every edge→hub request the way sync requests
// are signed (wire.Sign), so the hub serves its catalogue, content,
// uploads and firmware to this edge and to no stranger. A request already
// signed (the uplink's own) passes as it is. It keeps the hub's clock
// offset from each answer's wire.HeaderHubTime, so an edge whose clock is
// wrong signs with an acceptable time from its second request on.
type signingTransport struct {
	next   http.RoundTripper
	id     wire.Signer
	offset atomic.Int64 // hub clock minus edge clock, ms
}

func (t *signingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get(wire.HeaderSignature) != "" {
		return t.next.RoundTrip(r)
	}
	r = r.Clone(r.Context()) // a RoundTripper must not change the caller's request
	var body []byte
	if r.Body != nil && r.Body != http.NoBody && !wire.StreamedBody(r.Method) {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxSignedBody+1))
		_ = r.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("read the body to sign: %w", err)
		}
		if len(b) > maxSignedBody {
			return nil, fmt.Errorf("%s %s: a signed body may be at most %d bytes", r.Method, r.URL.Path, maxSignedBody)
		}
		body = b
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
	}
	now := time.Now().Add(time.Duration(t.offset.Load()) * time.Millisecond)
	if err := wire.Sign(r, t.id, now, body); err != nil {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, err
	}
	sent := time.Now()
	resp, err := t.next.RoundTrip(r)
	if err == nil {
		if ht, perr := strconv.ParseInt(resp.Header.Get(wire.HeaderHubTime), 10, 64); perr == nil {
			mid := sent.Add(time.Since(sent) / 2)
			t.offset.Store(ht - mid.UnixMilli())
		}
	}
	return resp, err
}

// CloseIdleConnections passes on to the trust transport (a new enrolment
// must not reuse a connection made under the old one's trust).
func (t *signingTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// SignedHubClient is HubClient whose requests are all signed by id, the
// edge's identity: what the cache (catalogue, content, recorder uploads),
// the firmware updater and terminal images use, since the hub serves them
// only to enrolled edges.
func SignedHubClient(db *bolt.DB, cloudCA []byte, id wire.Signer) *http.Client {
	c := HubClient(db, cloudCA)
	c.Transport = &signingTransport{next: c.Transport, id: id}
	return c
}
