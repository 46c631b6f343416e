package pairing

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
)

// MaxShares bounds how many shares the edge offers in one exchange: one per
// pairing code it holds (newest first), because the terminal does not say
// which classroom it is for. Each offered share is one guess an edge
// impersonator could test against a terminal's answer, so the terminal
// refuses more than this.
const MaxShares = 8

// MaxMessageBytes bounds every pairing message body.
const MaxMessageBytes = 4 << 10

// StartRequest is the body of POST /api/v1/pair/start (base64, standard
// alphabet with padding).
type StartRequest struct {
	SID   string `json:"sid"`
	Share string `json:"share"`
}

// StartResponse is the edge's answer: a session handle, one share per
// candidate code, and the edge's pin as it serves it (informational: it lets
// the terminal name an interception clearly; the proof is the confirmation).
type StartResponse struct {
	Session string   `json:"session"`
	Shares  []string `json:"shares"`
	Pin     string   `json:"pin"`
}

// FinishRequest is the body of POST /api/v1/pair/finish: the terminal's
// confirmation tag for each offered share, in order, plus what a plain
// pairing request carries.
type FinishRequest struct {
	Session string   `json:"session"`
	Confirm []string `json:"confirm"`
	Name    string   `json:"name"`
	Version string   `json:"version"`
}

// FinishResponse is the edge's answer to a good code: its own tag and the
// credential (a JSON Credential) sealed under the session key.
type FinishResponse struct {
	Confirm    string `json:"confirm"`
	Credential string `json:"credential"`
}

// Credential is what FinishResponse.Credential seals.
type Credential struct {
	TerminalID  string `json:"terminal_id"`
	Token       string `json:"token"`
	EdgeID      string `json:"edge_id"`
	ClassroomID string `json:"classroom_id"`
}

var sessionRE = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)

// ParseStart decodes and validates a StartRequest.
func ParseStart(data []byte) (sid, share []byte, err error) {
	var r StartRequest
	if err := strictJSON(data, &r); err != nil {
		return nil, nil, err
	}
	if sid, err = decodeFixed("sid", r.SID, SIDSize); err != nil {
		return nil, nil, err
	}
	if share, err = decodeFixed("share", r.Share, ShareSize); err != nil {
		return nil, nil, err
	}
	if _, err := DecodeShare(share); err != nil {
		return nil, nil, err
	}
	return sid, share, nil
}

// ParseStartResponse decodes and validates the edge's StartResponse.
func ParseStartResponse(data []byte) (session string, shares [][]byte, pin string, err error) {
	var r StartResponse
	if err := strictJSON(data, &r); err != nil {
		return "", nil, "", err
	}
	if !sessionRE.MatchString(r.Session) {
		return "", nil, "", errors.New("pairing: session handle is malformed")
	}
	if len(r.Shares) == 0 || len(r.Shares) > MaxShares {
		return "", nil, "", fmt.Errorf("pairing: the edge offered %d shares, want 1 to %d", len(r.Shares), MaxShares)
	}
	seen := map[string]bool{}
	for _, s := range r.Shares {
		b, err := decodeFixed("share", s, ShareSize)
		if err != nil {
			return "", nil, "", err
		}
		if _, err := DecodeShare(b); err != nil {
			return "", nil, "", err
		}
		if seen[string(b)] {
			return "", nil, "", errors.New("pairing: the edge offered the same share twice")
		}
		seen[string(b)] = true
		shares = append(shares, b)
	}
	if len(r.Pin) > 128 {
		return "", nil, "", errors.New("pairing: pin is too long")
	}
	return r.Session, shares, r.Pin, nil
}

// ParseFinish decodes and validates a FinishRequest, returning the tags.
func ParseFinish(data []byte) (FinishRequest, [][]byte, error) {
	var r FinishRequest
	if err := strictJSON(data, &r); err != nil {
		return r, nil, err
	}
	if !sessionRE.MatchString(r.Session) {
		return r, nil, errors.New("pairing: session handle is malformed")
	}
	if len(r.Confirm) == 0 || len(r.Confirm) > MaxShares {
		return r, nil, fmt.Errorf("pairing: %d confirmation tags, want 1 to %d", len(r.Confirm), MaxShares)
	}
	tags := make([][]byte, 0, len(r.Confirm))
	for _, c := range r.Confirm {
		b, err := decodeFixed("confirm", c, TagSize)
		if err != nil {
			return r, nil, err
		}
		tags = append(tags, b)
	}
	return r, tags, nil
}

// ParseFinishResponse decodes the edge's FinishResponse.
func ParseFinishResponse(data []byte) (tag, sealed []byte, err error) {
	var r FinishResponse
	if err := strictJSON(data, &r); err != nil {
		return nil, nil, err
	}
	if tag, err = decodeFixed("confirm", r.Confirm, TagSize); err != nil {
		return nil, nil, err
	}
	sealed, err = base64.StdEncoding.DecodeString(r.Credential)
	if err != nil || len(sealed) == 0 {
		return nil, nil, errors.New("pairing: credential is not base64")
	}
	return tag, sealed, nil
}

// Encode is base64 as the messages use it.
func Encode(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func decodeFixed(field, s string, n int) ([]byte, error) {
	if len(s) != base64.StdEncoding.EncodedLen(n) {
		return nil, fmt.Errorf("pairing: %s must be %d bytes in base64", field, n)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != n {
		return nil, fmt.Errorf("pairing: %s must be %d bytes in base64", field, n)
	}
	return b, nil
}

func strictJSON(data []byte, v any) error {
	if len(data) > MaxMessageBytes {
		return fmt.Errorf("pairing: message of %d bytes, at most %d", len(data), MaxMessageBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("pairing: malformed message: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("pairing: data after the message")
	}
	return nil
}
