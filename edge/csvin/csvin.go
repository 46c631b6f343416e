// Package csvin reads the CSV files a school office produces: UTF-8, UTF-8
// with a byte order mark (Excel's "CSV UTF-8"), and GBK or GB18030 (what
// Chinese Excel and WPS save as plain "CSV"), with CRLF or CR line ends, a
// trailing empty line and Chinese or English column names in any order. It
// says which encoding it read, and every problem names the row, the column
// and the fix, with a code and arguments so a page can show it in the
// person's language. Rosters, timetables and staff lists all read through
// it, so a file that imports in one place imports in all.
package csvin

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/width"
)

// Encodings Decode recognises, as an import reports them.
const (
	UTF8    = "UTF-8"
	UTF8BOM = "UTF-8 BOM"
	GBK     = "GBK"
	GB18030 = "GB18030"
)

// Limits of one file.
type Limits struct {
	MaxBytes int64 // larger files are refused
	MaxRows  int   // data rows, the header not counted
}

// MaxProblems caps the problems one import lists; the rest are the same
// mistakes repeated further down.
const MaxProblems = 50

// Problem codes: a page translates a problem by its code and arguments.
const (
	CodeTooLarge      = "file_too_large"
	CodeEmpty         = "file_empty"
	CodeWorkbook      = "file_is_workbook"
	CodeEncoding      = "encoding_unknown"
	CodeNotText       = "file_not_text"
	CodeSyntax        = "csv_syntax"
	CodeFieldCount    = "csv_field_count"
	CodeHeaderMissing = "header_missing_column"
	CodeHeaderUnknown = "header_unknown_column"
	CodeHeaderTwice   = "header_duplicate_column"
	CodeTooManyRows   = "too_many_rows"
)

// fixEncoding is the fix for a file in no encoding we read.
const fixEncoding = "save it as CSV UTF-8: in Excel, File › Save As › \"CSV UTF-8 (Comma delimited)\"; in WPS, 文件 › 另存为 › CSV, encoding UTF-8"

// Problem is one thing wrong with a file, at a 1-based line (the header is
// line 1; 0 for the file as a whole) and, when it is about one, a column
// as the file names it.
type Problem struct {
	Row    int               `json:"row"`
	Column string            `json:"column,omitempty"`
	Code   string            `json:"code"`
	Args   map[string]string `json:"args,omitempty"`
	Msg    string            `json:"message"`
}

func (p Problem) Error() string {
	switch {
	case p.Row == 0:
		return p.Msg
	case p.Column != "":
		return fmt.Sprintf("row %d, column %s: %s", p.Row, p.Column, p.Msg)
	}
	return fmt.Sprintf("row %d: %s", p.Row, p.Msg)
}

// Error lists every problem found (up to MaxProblems); nothing was imported.
type Error struct {
	Encoding string // the encoding the file was read in, "" if none
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d problem(s), nothing imported:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  " + p.Error())
	}
	return b.String()
}

// Problems collects an import's problems.
type Problems struct {
	Encoding string
	list     []Problem
}

// Add records a problem; args are the values a translation shows (the
// offending value, a limit, another row), msg the English text.
func (ps *Problems) Add(row int, col, code string, args map[string]string, format string, a ...any) {
	if len(ps.list) < MaxProblems {
		ps.list = append(ps.list, Problem{Row: row, Column: col, Code: code, Args: args, Msg: fmt.Sprintf(format, a...)})
	}
}

// Len is how many problems were added.
func (ps *Problems) Len() int { return len(ps.list) }

// Err is *Error listing the problems, nil when there are none.
func (ps *Problems) Err() error {
	if len(ps.list) == 0 {
		return nil
	}
	return &Error{Encoding: ps.Encoding, Problems: ps.list}
}

// Decode turns a file's bytes into text and names the encoding it was in:
// UTF-8 with or without a BOM, else GBK, else GB18030 (a byte sequence is
// taken as one only when it decodes and encodes back to the same bytes).
// A spreadsheet workbook, UTF-16 text, binary data or bytes valid in none
// of these are refused with a Problem telling the person how to save it.
func Decode(data []byte) (string, string, *Problem) {
	fail := func(code, format string, a ...any) (string, string, *Problem) {
		return "", "", &Problem{Code: code, Msg: fmt.Sprintf(format, a...)}
	}
	switch {
	case len(bytes.TrimSpace(data)) == 0:
		return fail(CodeEmpty, "the file is empty")
	case bytes.HasPrefix(data, []byte("PK\x03\x04")), bytes.HasPrefix(data, []byte("\xd0\xcf\x11\xe0")):
		return fail(CodeWorkbook, "this is a spreadsheet workbook (.xlsx or .xls), not CSV: %s", fixEncoding)
	case bytes.HasPrefix(data, []byte("\xff\xfe")), bytes.HasPrefix(data, []byte("\xfe\xff")):
		return fail(CodeEncoding, "the file is UTF-16 (\"Unicode text\"), which is not read here: %s", fixEncoding)
	}
	var text, enc string
	switch {
	case bytes.HasPrefix(data, []byte("\xef\xbb\xbf")):
		if !utf8.Valid(data[3:]) {
			return fail(CodeEncoding, "the file starts as UTF-8 but has bytes that are not UTF-8: %s", fixEncoding)
		}
		text, enc = string(data[3:]), UTF8BOM
	case utf8.Valid(data):
		text, enc = string(data), UTF8
	default:
		var ok bool
		if text, ok = roundTrip(simplifiedchinese.GBK, data); ok {
			enc = GBK
		} else if text, ok = roundTrip(simplifiedchinese.GB18030, data); ok {
			enc = GB18030
		} else {
			return fail(CodeEncoding, "the file's bytes are not UTF-8, GBK or GB18030 text: %s", fixEncoding)
		}
	}
	for _, c := range text {
		if c == utf8.RuneError || (unicode.IsControl(c) && c != '\t' && c != '\r' && c != '\n') {
			return fail(CodeNotText, "the file holds control characters or binary data, not text: %s", fixEncoding)
		}
	}
	return text, enc, nil
}

// roundTrip decodes data in e and reports whether encoding the text again
// gives the same bytes (decoders replace bad sequences rather than fail).
func roundTrip(e encoding.Encoding, data []byte) (string, bool) {
	dec, err := e.NewDecoder().Bytes(data)
	if err != nil {
		return "", false
	}
	back, err := e.NewEncoder().Bytes(dec)
	if err != nil || !bytes.Equal(back, data) {
		return "", false
	}
	return string(dec), true
}

// Column is one column a file may have: its name in the import format and
// the other names people give it (Chinese headers, say); names match
// ignoring case, surrounding spaces and full-width forms.
type Column struct {
	Name     string
	Aliases  []string
	Required bool
}

// Row is one data row: its line in the file and its values by column name
// (trimmed; "" for a column the file does not have).
type Row struct {
	Line   int
	values map[string]string
	cols   map[string]string
}

// Get is the row's value of column name.
func (r Row) Get(name string) string { return r.values[name] }

// Header is the name the file gives column name (for messages), or name.
func (r Row) Header(name string) string {
	if h := r.cols[name]; h != "" {
		return h
	}
	return name
}

// Table is a read file.
type Table struct {
	Encoding string
	Has      map[string]bool // columns present in the header
	Rows     []Row
}

// Read reads a whole CSV file whose header names columns of cols. Rows
// that are wholly empty (spreadsheets leave them) are skipped. Problems
// with the file or the header end reading; problems with rows are all
// listed. On any problem it returns *Error and no table.
func Read(r io.Reader, cols []Column, lim Limits) (*Table, error) {
	ps := &Problems{}
	t := read(r, cols, lim, ps)
	if err := ps.Err(); err != nil {
		return nil, err
	}
	return t, nil
}

func read(r io.Reader, cols []Column, lim Limits, ps *Problems) *Table {
	data, err := io.ReadAll(io.LimitReader(r, lim.MaxBytes+1))
	if err != nil {
		ps.Add(0, "", "read_failed", nil, "cannot read the file: %v", err)
		return nil
	}
	if int64(len(data)) > lim.MaxBytes {
		ps.Add(0, "", CodeTooLarge, map[string]string{"max": fmt.Sprint(lim.MaxBytes)}, "the file is larger than %d bytes: split it", lim.MaxBytes)
		return nil
	}
	text, enc, p := Decode(data)
	if p != nil {
		ps.list = append(ps.list, *p)
		return nil
	}
	ps.Encoding = enc
	if !strings.Contains(text, "\n") {
		text = strings.ReplaceAll(text, "\r", "\n") // classic Mac line ends
	}
	cr := csv.NewReader(strings.NewReader(text))
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err != nil {
		syntax(ps, err)
		return nil
	}
	t := &Table{Encoding: enc, Has: map[string]bool{}}
	index, names := matchHeader(header, cols, ps)
	if index == nil {
		return nil
	}
	for k := range names {
		t.Has[k] = true
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			syntax(ps, err)
			return t
		}
		line, _ := cr.FieldPos(0)
		if blank(rec) {
			continue
		}
		if len(rec) != len(header) {
			ps.Add(line, "", CodeFieldCount, map[string]string{"want": fmt.Sprint(len(header)), "got": fmt.Sprint(len(rec))},
				"has %d values where the header has %d columns: check for a comma inside a value (quote it) or a missing one", len(rec), len(header))
			continue
		}
		if len(t.Rows) >= lim.MaxRows {
			ps.Add(line, "", CodeTooManyRows, map[string]string{"max": fmt.Sprint(lim.MaxRows)}, "more than %d rows: split the file", lim.MaxRows)
			return t
		}
		row := Row{Line: line, values: map[string]string{}, cols: names}
		for i, v := range rec {
			if k := index[i]; k != "" {
				row.values[k] = strings.TrimSpace(v)
			}
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

func syntax(ps *Problems, err error) {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		ps.Add(pe.Line, "", CodeSyntax, nil, "%v: a value with a comma, quote or line break must be in double quotes, with a quote inside written twice", pe.Err)
		return
	}
	ps.Add(0, "", CodeSyntax, nil, "%v", err)
}

func blank(rec []string) bool {
	for _, v := range rec {
		if strings.TrimSpace(v) != "" {
			return false
		}
	}
	return true
}

// headerKey is how a header cell is compared: folded, trimmed, lower case.
func headerKey(s string) string {
	return strings.ToLower(strings.TrimSpace(width.Fold.String(s)))
}

// matchHeader maps each header cell to its column; nil on any problem.
// names maps column to the file's own header text.
func matchHeader(header []string, cols []Column, ps *Problems) ([]string, map[string]string) {
	byName := map[string]string{}
	var accepted []string
	for _, c := range cols {
		byName[headerKey(c.Name)] = c.Name
		for _, a := range c.Aliases {
			byName[headerKey(a)] = c.Name
		}
		accepted = append(accepted, c.Name)
	}
	before := ps.Len()
	index := make([]string, len(header))
	names := map[string]string{}
	for i, h := range header {
		k, ok := byName[headerKey(h)]
		switch {
		case !ok:
			ps.Add(1, h, CodeHeaderUnknown, map[string]string{"value": h, "accepted": strings.Join(accepted, ",")},
				"%q is not a column of this file: the columns are %s", h, strings.Join(accepted, ","))
		case names[k] != "":
			ps.Add(1, h, CodeHeaderTwice, map[string]string{"value": h}, "column %q appears twice: keep one", h)
		default:
			index[i], names[k] = k, strings.TrimSpace(h)
		}
	}
	for _, c := range cols {
		if c.Required && names[c.Name] == "" {
			ps.Add(1, c.Name, CodeHeaderMissing, map[string]string{"value": c.Name, "accepted": strings.Join(accepted, ",")},
				"the header has no column %s: the first line must name the columns, e.g. %s", c.Name, strings.Join(accepted, ","))
		}
	}
	if ps.Len() > before {
		return nil, nil
	}
	return index, names
}
