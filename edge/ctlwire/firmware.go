package ctlwire

// Terminal image messages (firmware/termimage, firmware/termupdate).
const (
	// TypeFirmwareOffer: edge → terminal: install this image now (the
	// edge decides when: small waves, never a terminal in a class).
	TypeFirmwareOffer = "fw.offer"
	// TypeFirmwareStatus: terminal → edge: its model, version and update
	// state; sent after welcome and after each offer.
	TypeFirmwareStatus = "fw.status"
)

// FirmwareOffer tells a terminal which image to install from the edge.
type FirmwareOffer struct {
	Header
	Model   string `json:"model"`
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	// URL is the image's path on the edge.
	URL string `json:"url"`
}

// FirmwareStatus is a terminal's report.
type FirmwareStatus struct {
	Header
	Model   string `json:"model"`
	Version string `json:"version"`
	// State: idle, updating, installed (restart pending), failed.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}
