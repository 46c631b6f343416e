package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// A classroom page pairs with a code typed in full-width digits (a Chinese
// input method's ０-９): the edge reads it as the same code.
func TestPairFullWidthCode(t *testing.T) {
	s := newTestServer(t)
	c, err := s.cfg.Fleet.CreateClassroom("三年级二班", "r302")
	if err != nil {
		t.Fatal(err)
	}
	code, _, err := s.cfg.Fleet.NewPairingCode(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	var wide []rune
	for _, d := range code {
		wide = append(wide, d-'0'+'０')
	}
	body, _ := json.Marshal(map[string]string{"code": " " + string(wide) + "\u3000", "name": "屏幕", "version": "page"})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/pair", bytes.NewReader(body)))
	if rec.Code != http.StatusCreated || !bytes.Contains(rec.Body.Bytes(), []byte(`"token"`)) {
		t.Fatalf("full-width code %q: %d %s", string(wide), rec.Code, rec.Body)
	}
}
