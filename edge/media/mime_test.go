package media

import (
	"net/http"
	"strings"
	"testing"
)

func TestServeHeaders(t *testing.T) {
	for _, c := range []struct {
		mime, title, ctype, disp string
		sandbox                  bool
	}{
		{"video/mp4", "分数的认识", "video/mp4", "", false},
		{"video/webm; codecs=vp8", "rec", "video/webm", "", false},
		// The XSS chain: an item declaring text/html is served as opaque
		// bytes, as an attachment, sandboxed, never sniffed.
		{"text/html", "<script>x</script>", "application/octet-stream", "attachment", true},
		{"image/svg+xml", "logo", "application/octet-stream", "attachment", true},
		{"application/pdf", "初一(3)班 练习", "application/pdf", "attachment; filename*=utf-8''%E5%88%9D%E4%B8%80%283%29%E7%8F%AD%20%E7%BB%83%E4%B9%A0.pdf", true},
		{"application/pdf", `a"b/c`, "application/pdf", `attachment; filename=a_b_c.pdf`, true},
	} {
		h := http.Header{}
		SetServeHeaders(h, Item{ID: "x1", MIME: c.mime, Title: c.title})
		if h.Get("Content-Type") != c.ctype || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: type %q nosniff %q", c.mime, h.Get("Content-Type"), h.Get("X-Content-Type-Options"))
		}
		if d := h.Get("Content-Disposition"); !strings.HasPrefix(d, c.disp) || (c.disp == "" && d != "") {
			t.Errorf("%s %q: disposition %q, want prefix %q", c.mime, c.title, d, c.disp)
		}
		if (h.Get("Content-Security-Policy") == "sandbox") != c.sandbox {
			t.Errorf("%s: CSP %q", c.mime, h.Get("Content-Security-Policy"))
		}
	}
	if Uploadable("text/html") || Uploadable("image/svg+xml") || !Uploadable("video/mp4") || !Uploadable("application/pdf") {
		t.Error("Uploadable allowlist")
	}
}
