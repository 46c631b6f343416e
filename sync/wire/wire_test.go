package wire

import (
	"bytes"
	"compress/gzip"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func gz(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	return b.Bytes()
}

func sample() *Batch {
	return &Batch{Edge: "abcdefghij", School: "s1", Records: []Record{
		{Seq: 7, ID: "id7", Kind: "attendance.mark", At: 1700000000000, School: "s1", Payload: []byte(`{"student":"s1","status":"present"}`)},
		{Seq: 8, ID: "id8", Kind: "quiz.answer", At: 1700000000001, Payload: []byte(`{"q":1}`)},
	}}
}

func TestBatchRoundTrip(t *testing.T) {
	enc, err := EncodeBatch(sample())
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBatch(enc)
	if err != nil || !reflect.DeepEqual(got, sample()) {
		t.Fatalf("%v\n%+v", err, got)
	}
}

func TestDecodeBatchRefuses(t *testing.T) {
	bomb := gz(`{"edge":"a","school":"s","records":[{"seq":1,"id":"x","kind":"k","at":1,"payload":"` + strings.Repeat("A", MaxBatchRawBytes) + `"}]}`)
	if _, err := DecodeBatch(bomb); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("decompression bomb (%d bytes compressed): %v", len(bomb), err)
	}
	if _, err := DecodeBatch(make([]byte, MaxBatchBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatal("oversized body accepted")
	}
	for name, in := range map[string]string{
		"gap in seq":    `{"edge":"e","school":"s","records":[{"seq":1,"id":"a","kind":"k","at":1,"payload":1},{"seq":3,"id":"b","kind":"k","at":1,"payload":1}]}`,
		"seq zero":      `{"edge":"e","school":"s","records":[{"seq":0,"id":"a","kind":"k","at":1,"payload":1}]}`,
		"dup id":        `{"edge":"e","school":"s","records":[{"seq":1,"id":"a","kind":"k","at":1,"payload":1},{"seq":2,"id":"a","kind":"k","at":1,"payload":1}]}`,
		"bad kind":      `{"edge":"e","school":"s","records":[{"seq":1,"id":"a","kind":"K K","at":1,"payload":1}]}`,
		"no payload":    `{"edge":"e","school":"s","records":[{"seq":1,"id":"a","kind":"k","at":1}]}`,
		"unknown field": `{"edge":"e","school":"s","x":1,"records":[{"seq":1,"id":"a","kind":"k","at":1,"payload":1}]}`,
		"empty":         `{"edge":"e","school":"s","records":[]}`,
		"bad school":    `{"edge":"e","school":"a b","records":[{"seq":1,"id":"a","kind":"k","at":1,"payload":1}]}`,
		"trailing data": `{"edge":"e","school":"s","records":[{"seq":1,"id":"a","kind":"k","at":1,"payload":1}]} {}`,
		"newline in id": `{"edge":"e","school":"s","records":[{"seq":1,"id":"a\n","kind":"k","at":1,"payload":1}]}`,
		"record school": `{"edge":"e","school":"s","records":[{"seq":1,"id":"a","kind":"k","at":1,"school":"x y","payload":1}]}`,
	} {
		if _, err := DecodeBatch(gz(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := DecodeBatch([]byte("not gzip")); err == nil {
		t.Error("plain bytes accepted")
	}
}

func FuzzDecodeBatch(f *testing.F) {
	enc, _ := EncodeBatch(sample())
	f.Add(enc)
	f.Add(gz(`{"edge":"e","school":"s","records":[{"seq":1,"id":"a","kind":"k","at":1,"payload":{}}]}`))
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBatch(data)
		if err != nil {
			return
		}
		// Whatever is accepted is valid and encodes back to an equal batch.
		if err := b.Validate(); err != nil {
			t.Fatalf("accepted an invalid batch: %v", err)
		}
		enc, err := EncodeBatch(b)
		if err != nil {
			t.Fatalf("accepted batch does not encode: %v", err)
		}
		b2, err := DecodeBatch(enc)
		if err != nil || len(b2.Records) != len(b.Records) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
