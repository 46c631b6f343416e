package media

import (
	"mime"
	"net/http"
	"strings"
)

// uploadable are the media types a school or the city may put in the
// catalogue: lesson video and audio, pictures, PDFs and office documents.
// Anything a browser would run as a page (HTML, SVG, XML, JavaScript) is
// not here: /media is served on the console's origin, so such an item
// would run script with the console's rights.
var uploadable = map[string]bool{
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true, "video/x-matroska": true, "video/mp2t": true,
	"audio/mpeg": true, "audio/mp4": true, "audio/ogg": true, "audio/webm": true, "audio/wav": true, "audio/aac": true, "audio/flac": true,
	"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true,
	"application/pdf":    true,
	"application/msword": true, "application/vnd.ms-powerpoint": true, "application/vnd.ms-excel": true,
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   true,
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": true,
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         true,
	"application/zip": true, "application/octet-stream": true,
}

// Uploadable reports whether a declared media type may enter the catalogue.
func Uploadable(declared string) bool {
	mt, _, err := mime.ParseMediaType(declared)
	return err == nil && uploadable[mt]
}

// SetServeHeaders sets the headers under which an item's bytes are served
// to browsers. Audio, video and pictures play inline; everything else is a
// download named after the item's title (RFC 6266, UTF-8 names as RFC 5987
// filename*), sandboxed so that it can never run as a page of this origin;
// a type outside the allowlist is served as opaque bytes. nosniff stops a
// browser from guessing its way to text/html.
func SetServeHeaders(h http.Header, it Item) {
	mt, _, err := mime.ParseMediaType(it.MIME)
	if err != nil || !uploadable[mt] {
		mt = "application/octet-stream"
	}
	h.Set("Content-Type", mt)
	h.Set("X-Content-Type-Options", "nosniff")
	major, _, _ := strings.Cut(mt, "/")
	if major == "video" || major == "audio" || major == "image" {
		return
	}
	h.Set("Content-Security-Policy", "sandbox")
	name := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(`/\"`, r) {
			return '_'
		}
		return r
	}, it.Title)
	if name == "" {
		name = it.ID
	}
	if exts, _ := mime.ExtensionsByType(mt); len(exts) > 0 && !strings.HasSuffix(strings.ToLower(name), exts[0]) {
		name += exts[0]
	}
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
}
