package cache

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type wrapper struct{ http.ResponseWriter }

func (w wrapper) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type readerFromRecorder struct {
	*httptest.ResponseRecorder
	used bool
}

func (r *readerFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.used = true
	return io.Copy(r.ResponseRecorder, src)
}

// TestZeroCopyReachesReaderFrom checks that a body written through a
// middleware wrapper that hides io.ReaderFrom still reaches the inner
// writer's ReadFrom (net/http's sendfile path), while the status goes
// through the wrapper.
func TestZeroCopyReachesReaderFrom(t *testing.T) {
	inner := &readerFromRecorder{ResponseRecorder: httptest.NewRecorder()}
	w := zeroCopy(wrapper{wrapper{inner}})
	rf, ok := w.(io.ReaderFrom)
	if !ok {
		t.Fatal("zeroCopy did not expose io.ReaderFrom")
	}
	w.WriteHeader(206)
	if _, err := rf.ReadFrom(strings.NewReader("bytes")); err != nil {
		t.Fatal(err)
	}
	if !inner.used || inner.Code != 206 || inner.Body.String() != "bytes" {
		t.Fatalf("used %v, code %d, body %q", inner.used, inner.Code, inner.Body.String())
	}
	plain := httptest.NewRecorder()
	if got := zeroCopy(wrapper{plain}); got.(wrapper).ResponseWriter != plain {
		t.Fatal("a writer without ReaderFrom should pass through unchanged")
	}
}
