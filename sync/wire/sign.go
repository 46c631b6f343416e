package wire

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Signed-request headers. Every edge→hub call after enrolment carries them;
// the signature covers method, path with query, time, nonce and the body's
// SHA-256, so nothing of the request can be changed or replayed unnoticed.
const (
	HeaderEdge      = "X-Campusedge-Edge"
	HeaderTime      = "X-Campusedge-Time" // Unix milliseconds, edge clock corrected by the hub's
	HeaderNonce     = "X-Campusedge-Nonce"
	HeaderSignature = "X-Campusedge-Signature"
	// HeaderHubTime is on every hub answer (Unix ms) so an edge whose clock
	// is hours wrong can still sign with an acceptable time.
	HeaderHubTime = "X-Campusedge-Hub-Time"
)

// MaxSkew is how far a signed request's time may be from the hub's clock.
// Nonces are remembered at least this long, which is what makes a replay
// detectable: a request is either too old or its nonce is known.
const MaxSkew = 5 * time.Minute

// Signer is what signing needs of the edge identity.
type Signer interface {
	EdgeID() string
	Sign(msg []byte) []byte
}

// SigningString is the exact byte string that is signed.
func SigningString(method, pathQuery string, ts int64, nonce string, body []byte) []byte {
	h := sha256.Sum256(body)
	return []byte("campusedge-sync-v1\n" + method + "\n" + pathQuery + "\n" + strconv.FormatInt(ts, 10) + "\n" + nonce + "\n" + hex.EncodeToString(h[:]))
}

// Sign adds the signature headers to req for body, with time now.
func Sign(req *http.Request, s Signer, now time.Time, body []byte) error {
	nb := make([]byte, 16)
	if _, err := rand.Read(nb); err != nil {
		return fmt.Errorf("nonce: %w", err)
	}
	nonce := base64.RawURLEncoding.EncodeToString(nb)
	ts := now.UnixMilli()
	sig := s.Sign(SigningString(req.Method, req.URL.RequestURI(), ts, nonce, body))
	req.Header.Set(HeaderEdge, s.EdgeID())
	req.Header.Set(HeaderTime, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderNonce, nonce)
	req.Header.Set(HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	return nil
}

// Signed is the parsed signature headers of a request.
type Signed struct {
	Edge  string
	Time  time.Time
	Nonce string
	Sig   []byte
	msg   []byte
	ts    int64
}

// ParseSigned reads and checks the shape of the signature headers.
func ParseSigned(r *http.Request, body []byte) (*Signed, error) {
	s, err := ParseSignedHeaders(r)
	if err != nil {
		return nil, err
	}
	s.SetBody(r, body)
	return s, nil
}

// ParseSignedHeaders reads the signature headers without the body, so a
// server can check the edge, its revocation and the time before it reads
// a byte of a large body; SetBody then binds the body before Verify.
func ParseSignedHeaders(r *http.Request) (*Signed, error) {
	edge := r.Header.Get(HeaderEdge)
	if edge == "" || len(edge) > MaxIDLen {
		return nil, errors.New("missing " + HeaderEdge)
	}
	ts, err := strconv.ParseInt(r.Header.Get(HeaderTime), 10, 64)
	if err != nil {
		return nil, errors.New("missing or bad " + HeaderTime)
	}
	nonce := r.Header.Get(HeaderNonce)
	if len(nonce) < 16 || len(nonce) > 64 {
		return nil, errors.New("missing or bad " + HeaderNonce)
	}
	sig, err := base64.StdEncoding.DecodeString(r.Header.Get(HeaderSignature))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, errors.New("missing or bad " + HeaderSignature)
	}
	return &Signed{Edge: edge, Time: time.UnixMilli(ts), Nonce: nonce, Sig: sig, ts: ts}, nil
}

// SetBody binds the request's body (nil for a streamed body, see
// StreamedBody) to what Verify checks.
func (s *Signed) SetBody(r *http.Request, body []byte) {
	s.msg = SigningString(r.Method, r.URL.RequestURI(), s.ts, s.Nonce, body)
}

// Verify checks the signature with the edge's enrolled key.
func (s *Signed) Verify(pub ed25519.PublicKey) bool {
	return s.msg != nil && len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, s.msg, s.Sig)
}

// StreamedBody reports whether a request's body is left out of its
// signature (signed as empty): a PATCH carries resumable upload bytes,
// too large to hold before sending, and what they must hash to is already
// in the signed path (PATCH /api/v1/uploads/{sha256}), so the hub checks
// them against that instead. Both ends use this one rule.
func StreamedBody(method string) bool { return method == http.MethodPatch }

// EnrolRequest is the body of POST /api/v1/sync/enrol: the one-time token,
// the edge's public key and a signature over both proving it holds the key.
type EnrolRequest struct {
	Token     string `json:"token"`
	EdgeID    string `json:"edge_id"`
	PublicKey string `json:"public_key"` // base64 std
	Proof     string `json:"proof"`      // base64 std signature over EnrolProofString
}

// EnrolResponse tells the edge which school it now belongs to.
type EnrolResponse struct {
	Edge   string `json:"edge"`
	School string `json:"school"`
	Name   string `json:"school_name"`
}

// EnrolProofString is what the enrolling edge signs.
func EnrolProofString(token, edgeID, pubB64 string) []byte {
	return []byte("campusedge-enrol-v1\n" + token + "\n" + edgeID + "\n" + pubB64)
}
