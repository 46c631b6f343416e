package main

import (
	"log/slog"
	"net/http"

	"github.com/campusedge/campusedge/firmware/release"
)

// firmwareHandler is the firmware release channel (firmware/release) the
// hub serves at /api/v1/firmware/; hubHandler puts the edge routes behind
// the credential check.
func firmwareHandler(data string, log *slog.Logger) (http.Handler, error) {
	st, err := release.Open(data)
	if err != nil {
		return nil, err
	}
	return release.Handler(st, log.With("component", "firmware"))
}
