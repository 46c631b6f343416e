package main

import (
	"log/slog"
	"net/http"

	"github.com/campusedge/campusedge/firmware/release"
)

// withFirmware mounts the firmware release channel (firmware/release) at
// /api/v1/firmware/ in front of the rest of the hub.
func withFirmware(data string, rest http.Handler, log *slog.Logger) (http.Handler, error) {
	st, err := release.Open(data)
	if err != nil {
		return nil, err
	}
	fw, err := release.Handler(st, log.With("component", "firmware"))
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/api/v1/firmware/", fw)
	mux.Handle("/", rest)
	return mux, nil
}
