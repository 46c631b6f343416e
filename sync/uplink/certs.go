package uplink

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/campusedge/campusedge/sync/wire"
)

// CertSigner is the edge's TLS certificate as the uplink needs it to get
// the city CA's signature: the uplink only carries the request to the hub
// and the answer back; making keys, choosing names, checking and serving
// the result belong to the implementation (edge/certs).
type CertSigner interface {
	CertificateRequest() ([]byte, error)          // DER CSR over the edge's TLS key with its current names
	UseCitySigned(chainPEM, rootPEM []byte) error // verifies and installs; the edge then serves it
	CityRenewalDue() bool                         // no city cert yet, under 1/3 of its life left, or names changed
}

// Bounds on asking the city CA: never more than once per certMinInterval,
// and after failures exponentially less often, up to certMaxBackoff, so a
// hub without a CA or a refused name costs one request an hour.
const (
	certMinInterval = time.Minute
	certMaxBackoff  = time.Hour
)

// certState is the uplink's memory of certificate requests.
type certState struct {
	next     time.Time     // not before this
	backoff  time.Duration // after the last failure
	failures int
}

// maybeCityCert asks for a city-signed certificate when one is due and the
// bounds allow; called from the run loop after a successful sync, so only
// when enrolled and online. Errors are logged, never fatal to sync.
func (u *Uplink) maybeCityCert(ctx context.Context) {
	if u.cfg.Certs == nil || time.Now().Before(u.certs.next) || !u.cfg.Certs.CityRenewalDue() {
		return
	}
	u.log.Info("asking the city CA to sign this edge's TLS certificate")
	notAfter, err := u.RequestCityCert(ctx)
	if err != nil {
		u.certs.failures++
		u.certs.backoff = min(max(2*u.certs.backoff, certMinInterval), certMaxBackoff)
		u.certs.next = time.Now().Add(u.certs.backoff)
		u.log.Warn("city-signed certificate not obtained; the edge keeps serving its current one", "err", err,
			"failures", u.certs.failures, "retry_in", u.certs.backoff)
		return
	}
	u.certs = certState{next: time.Now().Add(certMinInterval)}
	u.log.Info("city-signed TLS certificate installed", "not_after", notAfter)
}

// RequestCityCert sends the CSR from Config.Certs to the hub's city CA
// (POST /api/v1/sync/cert, signed with the edge identity like every sync
// request) and hands the answer to UseCitySigned. It returns the new
// certificate's end as the hub reported it.
func (u *Uplink) RequestCityCert(ctx context.Context) (string, error) {
	if u.cfg.Certs == nil {
		return "", errors.New("no certificate signer configured")
	}
	csr, err := u.cfg.Certs.CertificateRequest()
	if err != nil {
		return "", fmt.Errorf("make the certificate request: %w", err)
	}
	body, err := json.Marshal(wire.CertRequest{CSR: base64.StdEncoding.EncodeToString(csr)})
	if err != nil {
		return "", err
	}
	if len(body) > wire.MaxCertRequestBytes {
		return "", fmt.Errorf("certificate request of %d bytes exceeds the hub's limit %d (too many names?)", len(body), wire.MaxCertRequestBytes)
	}
	raw, err := u.doType(ctx, http.MethodPost, "/api/v1/sync/cert", "application/json", body)
	if err != nil {
		return "", err
	}
	var resp wire.CertResponse
	if err := json.Unmarshal(raw, &resp); err != nil || resp.ChainPEM == "" || resp.RootPEM == "" {
		return "", fmt.Errorf("the hub's certificate answer is not a chain and a root: %.200s", raw)
	}
	if err := u.cfg.Certs.UseCitySigned([]byte(resp.ChainPEM), []byte(resp.RootPEM)); err != nil {
		return "", fmt.Errorf("the city-signed certificate was not installed: %w", err)
	}
	return resp.NotAfter, nil
}
