package csvin

import (
	"encoding/csv"
	"fmt"
	"strings"
	"testing"
)

// schoolRoster is a large school's roster (1,100 pupils, 40 homerooms)
// with Chinese names, as text.
func schoolRoster() string {
	var b strings.Builder
	b.WriteString("学号,姓名,班级\r\n")
	for i := range 1100 {
		fmt.Fprintf(&b, "2025%04d,阿依古丽·吐尔逊%d,初%d(%d)班\r\n", i, i, 1+i%3, 1+i%40)
	}
	return b.String()
}

// BenchmarkReadRoster reads the roster in each encoding through Read:
// detection, decoding, header matching and rows. BenchmarkStdlibCSV is
// the peer in the same run: encoding/csv alone on the UTF-8 text, the
// least any reader must do.
func BenchmarkReadRoster(b *testing.B) {
	text := schoolRoster()
	for _, enc := range []string{UTF8, UTF8BOM, GBK, GB18030} {
		data := encode(b, enc, text)
		b.Run(enc, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				t, err := Read(strings.NewReader(string(data)), cols, Limits{MaxBytes: 16 << 20, MaxRows: 50_000})
				if err != nil || len(t.Rows) != 1100 {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkStdlibCSV(b *testing.B) {
	text := schoolRoster()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		recs, err := csv.NewReader(strings.NewReader(text)).ReadAll()
		if err != nil || len(recs) != 1101 {
			b.Fatal(err)
		}
	}
}
