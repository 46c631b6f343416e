package csvin

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/text/encoding/simplifiedchinese"
)

var cols = []Column{
	{Name: "name", Aliases: []string{"姓名"}, Required: true},
	{Name: "homeroom", Aliases: []string{"班级"}, Required: true},
	{Name: "id", Aliases: []string{"学号"}},
}

// chinese is a file as a Chinese office writes it, before encoding.
const chinese = "姓名,班级,学号\r\n阿依古丽·吐尔逊,初一(3)班,20250301\r\n王芳,初一（３）班,\r\n,,\r\n\r\n"

func encode(t testing.TB, enc string, s string) []byte {
	t.Helper()
	switch enc {
	case UTF8:
		return []byte(s)
	case UTF8BOM:
		return append([]byte("\xef\xbb\xbf"), s...)
	case GBK:
		b, err := simplifiedchinese.GBK.NewEncoder().Bytes([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return b
	case GB18030:
		b, err := simplifiedchinese.GB18030.NewEncoder().Bytes([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Fatalf("no encoding %s", enc)
	return nil
}

func TestReadsEveryEncodingAnOfficeSaves(t *testing.T) {
	// 𠮷 (U+20BB7) is outside GBK: only GB18030 encodes it, so that file
	// must be read as GB18030 and not merely GBK.
	for _, c := range []struct{ enc, text, name string }{
		{UTF8, chinese, "阿依古丽·吐尔逊"},
		{UTF8BOM, chinese, "阿依古丽·吐尔逊"},
		{GBK, chinese, "阿依古丽·吐尔逊"},
		{GB18030, strings.Replace(chinese, "阿依古丽", "𠮷依古丽", 1), "𠮷依古丽·吐尔逊"},
	} {
		tb, err := Read(strings.NewReader(string(encode(t, c.enc, c.text))), cols, Limits{MaxBytes: 1 << 20, MaxRows: 10})
		if err != nil {
			t.Fatalf("%s: %v", c.enc, err)
		}
		if tb.Encoding != c.enc {
			t.Errorf("read as %s, want %s", tb.Encoding, c.enc)
		}
		if len(tb.Rows) != 2 || tb.Rows[0].Get("name") != c.name || tb.Rows[0].Get("homeroom") != "初一(3)班" ||
			tb.Rows[0].Get("id") != "20250301" || tb.Rows[1].Get("homeroom") != "初一（３）班" || tb.Rows[1].Line != 3 {
			t.Errorf("%s: rows %+v", c.enc, tb.Rows)
		}
	}
}

func TestRefusesWithTheFix(t *testing.T) {
	for name, data := range map[string]string{
		"not any encoding": "name,homeroom\n\x81\x20\xff,7A\n",
		"utf-16":           "\xff\xfen\x00a\x00",
		"xlsx":             "PK\x03\x04rest of a zip",
		"bom then latin-1": "\xef\xbb\xbfname,homeroom\n\xe9t\xe9,7A\n",
	} {
		_, err := Read(strings.NewReader(data), cols, Limits{MaxBytes: 1 << 20, MaxRows: 10})
		var e *Error
		if !errors.As(err, &e) || len(e.Problems) != 1 || !strings.Contains(e.Problems[0].Msg, "CSV UTF-8") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestHeaderProblems(t *testing.T) {
	_, err := Read(strings.NewReader("姓名,klass\n王芳,7A\n"), cols, Limits{MaxBytes: 1 << 20, MaxRows: 10})
	var e *Error
	if !errors.As(err, &e) || len(e.Problems) != 2 || e.Problems[0].Code != CodeHeaderUnknown || e.Problems[1].Code != CodeHeaderMissing || e.Problems[1].Column != "homeroom" {
		t.Fatalf("%v", err)
	}
	_, err = Read(strings.NewReader("name,homeroom\na,b\nc\n"), cols, Limits{MaxBytes: 1 << 20, MaxRows: 10})
	if !errors.As(err, &e) || e.Problems[0].Row != 3 || e.Problems[0].Code != CodeFieldCount {
		t.Fatalf("%v", err)
	}
	_, err = Read(strings.NewReader("name,homeroom\na,b\nc,d\n"), cols, Limits{MaxBytes: 1 << 20, MaxRows: 1})
	if !errors.As(err, &e) || e.Problems[0].Code != CodeTooManyRows {
		t.Fatalf("%v", err)
	}
}

// FuzzDecode: whatever bytes arrive, Decode answers without panicking;
// text it accepts is valid UTF-8 and, for the Chinese encodings, encodes
// back to the very bytes it came from.
func FuzzDecode(f *testing.F) {
	for _, enc := range []string{UTF8, UTF8BOM, GBK, GB18030} {
		f.Add(encode(f, enc, chinese))
	}
	f.Add([]byte("\x81\x30\x81\x30"))
	f.Add([]byte("PK\x03\x04"))
	f.Fuzz(func(t *testing.T, data []byte) {
		text, enc, p := Decode(data)
		if p != nil {
			if p.Code == "" || p.Msg == "" {
				t.Fatalf("problem without code or message: %+v", p)
			}
			return
		}
		if string(encode(t, enc, text)) != string(data) {
			t.Fatalf("%s text does not encode back to the file's bytes", enc)
		}
	})
}

// FuzzRead: any file gives rows or problems, never both and never a panic.
func FuzzRead(f *testing.F) {
	for _, enc := range []string{UTF8, UTF8BOM, GBK, GB18030} {
		f.Add(encode(f, enc, chinese))
	}
	f.Add([]byte("name,homeroom\n\"a,b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, err := Read(strings.NewReader(string(data)), cols, Limits{MaxBytes: 4096, MaxRows: 20})
		if (tb == nil) == (err == nil) {
			t.Fatalf("table %v and error %v", tb, err)
		}
		if tb != nil && len(tb.Rows) > 20 {
			t.Fatal("row limit passed")
		}
	})
}
