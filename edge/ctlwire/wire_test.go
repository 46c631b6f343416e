package ctlwire

import (
	"errors"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	cases := []struct {
		in   string
		ok   bool
		want string
	}{
		{`{"type":"hello","v":1,"token":"x"}`, true, "hello"},
		{`{"type":"hello","v":2}`, false, "version 2"},
		{`{"type":"Hello","v":1}`, false, "type"},
		{`{"v":1}`, false, "type"},
		{`[1,2]`, false, "cannot unmarshal"},
		{`{"type":"ping","v":1,"id":"` + strings.Repeat("a", 65) + `"}`, false, "id longer"},
		{`{"type":"ping","v":1,"pad":"` + strings.Repeat("a", MaxMessageBytes) + `"}`, false, "limit"},
	}
	for _, c := range cases {
		h, err := Decode([]byte(c.in))
		if c.ok {
			if err != nil || h.Type != c.want {
				t.Errorf("Decode(%.40q) = %+v, %v; want type %s", c.in, h, err, c.want)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Decode(%.40q) error = %v; want ErrMalformed mentioning %q", c.in, err, c.want)
		}
	}
}

func TestDecodeBodyStrict(t *testing.T) {
	var h Hello
	if err := DecodeBody([]byte(`{"type":"hello","v":1,"token":"a","tokne":"b"}`), &h); err == nil {
		t.Fatal("unknown field accepted")
	}
	if err := DecodeBody([]byte(`{"type":"hello","v":1,"token":"a"} {}`), &h); err == nil {
		t.Fatal("trailing data accepted")
	}
	if err := DecodeBody([]byte(`{"type":"hello","v":1,"token":"a"}`), &h); err != nil || h.Token != "a" {
		t.Fatalf("good hello: %+v %v", h, err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"type":"hello","v":1,"token":"abc"}`, `{"type":"ping","v":1}`, `{}`, `null`, `{"type":"x","v":1e99}`, "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not wrapped: %v", err)
			}
			return
		}
		if h.V != Version || !typeRE.MatchString(h.Type) {
			t.Fatalf("accepted bad header %+v", h)
		}
		var hello Hello
		_ = DecodeBody(data, &hello)
	})
}
