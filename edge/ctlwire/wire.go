// Package ctlwire defines the typed, versioned JSON messages of the WebSocket
// control channel (/api/v1/ws) shared by edged, classterm and the web pages,
// and the strict decoder every inbound message goes through.
package ctlwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
)

// Version is the protocol version this build speaks.
const Version = 1

// MaxMessageBytes bounds every control message in either direction.
const MaxMessageBytes = 64 << 10

// Message types of the foundation; live classes add their own.
const (
	TypeHello    = "hello"    // client → edge: first message, authenticates
	TypeWelcome  = "welcome"  // edge → client: accepted
	TypeError    = "error"    // edge → client: a request was refused
	TypePing     = "ping"     // client → edge: application heartbeat (optional; WS pings are primary)
	TypePong     = "pong"     // edge → client
	TypeSnapshot = "snapshot" // edge → admin watcher: current classrooms and terminals
	TypeEvent    = "event"    // edge → admin watcher: one change
)

// ErrMalformed wraps every decoding failure.
var ErrMalformed = errors.New("malformed control message")

var typeRE = regexp.MustCompile(`^[a-z][a-z0-9_.]{0,31}$`)

// Header is the part every message has.
type Header struct {
	Type string `json:"type"`
	V    int    `json:"v"`
	// ID optionally correlates a request with the edge's reply.
	ID string `json:"id,omitempty"`
}

// Decode validates the envelope of data and returns its header. The caller
// then decodes the body into the type's struct with DecodeBody.
func Decode(data []byte) (Header, error) {
	var h Header
	if len(data) > MaxMessageBytes {
		return h, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrMalformed, len(data), MaxMessageBytes)
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return h, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case !typeRE.MatchString(h.Type):
		return h, fmt.Errorf("%w: type must be a short lower-case name", ErrMalformed)
	case h.V != Version:
		return h, fmt.Errorf("%w: protocol version %d is not supported (this edge speaks v%d)", ErrMalformed, h.V, Version)
	case len(h.ID) > 64:
		return h, fmt.Errorf("%w: id longer than 64 bytes", ErrMalformed)
	}
	return h, nil
}

// DecodeBody decodes data into v strictly: unknown fields are refused so
// that a typo in a client is an error, not a silently ignored setting.
func DecodeBody(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the message", ErrMalformed)
	}
	return nil
}

// Hello authenticates a control connection. Browsers cannot set headers on
// a WebSocket, so the token travels in this first message instead of the URL
// (URLs end up in logs).
type Hello struct {
	Header
	Token   string `json:"token"`
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
}

// Welcome answers an accepted hello.
type Welcome struct {
	Header
	Role       string `json:"role"` // "admin" or "terminal"
	EdgeID     string `json:"edge_id"`
	TerminalID string `json:"terminal_id,omitempty"`
	Classroom  string `json:"classroom_id,omitempty"`
	// HeartbeatSeconds tells the client how often the edge pings, so it can
	// decide when a silent connection is dead.
	HeartbeatSeconds int `json:"heartbeat_s"`
}

// Error reports a refused request; Code is snake_case like the HTTP API's.
type Error struct {
	Header
	Code    string `json:"code"`
	Message string `json:"message"`
}

// New returns a header of type t at the current version.
func New(t string) Header { return Header{Type: t, V: Version} }
