// Package httpapi is the HTTP foundation every server in the project shares,
// the edge's and the hub's alike: JSON answers, the error shape DESIGN.md
// fixes ({"error":{"code","message"}}) with constants for the common codes,
// strict size-limited JSON bodies, and the bearer token.
package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Error codes shared by every server; a capability adds its own beside them.
const (
	CodeInvalidJSON  = "invalid_json"
	CodeBodyTooLarge = "body_too_large"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeInternal     = "internal"
	// CodeNotSaved: the edge could not store what was sent (disk full,
	// store busy); nothing is wrong with it: send it again after
	// Retry-After.
	CodeNotSaved = "not_saved"
)

// WriteJSON writes v with status, compact (as the docs show it, and
// embedded documents such as synced rosters keep their exact bytes).
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		WriteError(w, http.StatusInternalServerError, CodeInternal, "could not encode the response")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// ErrorBody is the DESIGN.md error shape.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// WriteError writes {"error":{"code":…,"message":…}}.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	var b ErrorBody
	b.Error.Code, b.Error.Message = code, msg
	WriteJSON(w, status, b)
}

// DecodeJSON reads a JSON body of at most limit bytes into v strictly and
// writes the error response itself when it fails (then returns false).
func DecodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			WriteError(w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("the body is larger than %d bytes", limit))
		case errors.Is(err, io.EOF):
			WriteError(w, http.StatusBadRequest, CodeInvalidJSON, "the body is empty; send a JSON object")
		default:
			WriteError(w, http.StatusBadRequest, CodeInvalidJSON, "the body is not valid JSON for this call: "+err.Error())
		}
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		WriteError(w, http.StatusBadRequest, CodeInvalidJSON, "the body has data after the JSON object")
		return false
	}
	return true
}

// BearerToken extracts the bearer token from the Authorization header.
func BearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	tok = strings.TrimSpace(tok)
	return tok, ok && tok != ""
}

// WriteNotSaved answers a write the store could not make durable: 507
// when the disk is full (noSpace), else 503, both with Retry-After, so a
// client keeps the data and sends it again instead of dropping it as bad.
func WriteNotSaved(w http.ResponseWriter, noSpace bool, retryAfter int, what string, err error) {
	w.Header().Set("Retry-After", fmt.Sprint(retryAfter))
	if noSpace {
		WriteError(w, http.StatusInsufficientStorage, CodeNotSaved, fmt.Sprintf("%s was not saved: the edge's data disk is full (%v); keep it and send it again in %d s, and free disk space (see GET /healthz)", what, err, retryAfter))
		return
	}
	WriteError(w, http.StatusServiceUnavailable, CodeNotSaved, fmt.Sprintf("%s was not saved (%v); keep it and send it again in %d s", what, err, retryAfter))
}
